import { describe, expect, it } from "vitest";
import { HYPERVISOR_TYPES, parseHypervisorType } from "./types.js";

describe("hypervisor types", () => {
  it("accepts every known type", () => {
    for (const t of HYPERVISOR_TYPES) expect(parseHypervisorType(t)).toBe(t);
  });

  it("refuses an unknown type and names the valid ones", () => {
    expect(() => parseHypervisorType("xen")).toThrow(
      expect.objectContaining({
        code: "ERR_UNKNOWN_HYPERVISOR",
        message: 'unknown hypervisor type "xen": valid types are qemu, firecracker, acrn, mock',
      }),
    );
    expect(() => parseHypervisorType("")).toThrow(/unknown hypervisor type ""/);
    expect(() => parseHypervisorType("QEMU")).toThrow(/unknown hypervisor type/);
  });
});
