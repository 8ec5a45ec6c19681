import { describe, expect, it } from "vitest";
import { acrnKernelCmdline, acrnKernelParams } from "./kernel-params.js";

describe("ACRN kernel parameters", () => {
  it("puts arch defaults first, then panic=1 and maxcpus, then the configured ones", () => {
    expect(
      acrnKernelCmdline({
        debug: false,
        fromImage: true,
        maxVCPUs: 1,
        configured: [{ key: "agent.log", value: "debug" }],
      }),
    ).toBe(
      "tsc=reliable no_timer_check nohpet console=ttyS0 console=hvc0 consoleblank=0 log_buf_len=16M iommu=off " +
        "root=/dev/vda ro rootwait quiet panic=1 maxcpus=1 agent.log=debug",
    );
  });

  it("lets a configured parameter win by coming last, keeping the default before it", () => {
    const params = acrnKernelParams({
      debug: false,
      fromImage: true,
      maxVCPUs: 4,
      configured: [{ key: "panic", value: "0" }],
    });
    const panics = params.filter((p) => p.key === "panic").map((p) => p.value);
    expect(panics).toEqual(["1", "0"]);
    expect(params.at(-1)).toEqual({ key: "panic", value: "0" });
    expect(params.find((p) => p.key === "maxcpus")).toEqual({ key: "maxcpus", value: "4" });
  });

  it("uses debug instead of quiet in debug mode, and no root= without an image", () => {
    const line = acrnKernelCmdline({ debug: true, fromImage: false, maxVCPUs: 1, configured: [] });
    expect(line).toContain(" debug ");
    expect(line).not.toContain("quiet");
    expect(line).not.toContain("root=");
  });

  it("refuses a configured parameter with an empty key", () => {
    expect(() =>
      acrnKernelParams({ debug: false, fromImage: true, maxVCPUs: 1, configured: [{ key: "", value: "x" }] }),
    ).toThrow(expect.objectContaining({ code: "ERR_INVALID_KERNEL_PARAM" }));
  });
});
