import { describe, expect, it } from "vitest";
import {
  ACRN_PLATFORM_INFO_SIZE,
  parsePlatformInfo,
  parsePlatformInfoHex,
  probePlatformInfo,
} from "./platform-info.js";

/** A struct platform_info as the VHM driver fills it, built byte by byte. */
function rawInfo(): Buffer {
  const b = Buffer.alloc(ACRN_PLATFORM_INFO_SIZE, 0);
  b[0] = 0x04; // cpu_num = 4
  b[2] = 0x00; // version = 0x0100
  b[3] = 0x01;
  b[128] = 0x08; // max_vcpus_per_vm = 8
  b[130] = 0x03; // max_kata_containers = 3
  b[138] = 0x10; // max_vms = 16
  b[140] = 0x00; // vm_config_entry_size = 0x1200
  b[141] = 0x12;
  // Noise in the reserved areas must not leak into the fields.
  b.fill(0xee, 4, 128);
  b.fill(0xee, 131, 138);
  b.fill(0xee, 152, 256);
  return b;
}

describe("ACRN platform info", () => {
  it("decodes the VHM structure's fields at their offsets", () => {
    expect(parsePlatformInfo(rawInfo())).toEqual({
      cpuNum: 4,
      version: 0x100,
      maxVcpusPerVm: 8,
      maxKataContainers: 3,
      maxVms: 16,
      vmConfigEntrySize: 0x1200,
    });
  });

  it("decodes the helper's hex line", () => {
    expect(parsePlatformInfoHex(rawInfo().toString("hex") + "\n").maxKataContainers).toBe(3);
  });

  it.each([
    ["empty output", ""],
    ["a short structure", "00".repeat(255)],
    ["a long structure", "00".repeat(257)],
    ["not hex", "zz".repeat(256)],
  ])("refuses %s", (_what, text) => {
    expect(() => parsePlatformInfoHex(text)).toThrow(expect.objectContaining({ code: "ERR_HOST_PROBE" }));
  });

  it("refuses a buffer of the wrong size", () => {
    expect(() => parsePlatformInfo(Buffer.alloc(128))).toThrow(/128 bytes, expected 256/);
  });

  it("says what to do when the helper is not built", async () => {
    await expect(
      probePlatformInfo({ helperPath: "/nonexistent/cocoon-acrn-platform-info" }),
    ).rejects.toMatchObject({
      code: "ERR_HOST_MISSING_TOOL",
      hint: expect.stringContaining("max_vms"),
    });
  });
});
