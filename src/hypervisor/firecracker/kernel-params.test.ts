import { describe, expect, it } from "vitest";
import { kernelCmdline } from "../params.js";
import { firecrackerKernelParams } from "./kernel-params.js";

describe("Firecracker kernel parameters", () => {
  it("are the seed's, plus the virtio-blk root ones when booting from an image", () => {
    expect(kernelCmdline(firecrackerKernelParams([], { rootFromImage: true, debug: false }))).toBe(
      "root=/dev/vda1 rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4 pci=off reboot=k panic=1 iommu=off 8250.nr_uarts=0 net.ifnames=0 random.trust_cpu=on acpi=off",
    );
  });

  it("let configured parameters override by key and add their own", () => {
    const cmdline = kernelCmdline(
      firecrackerKernelParams(
        [
          { key: "panic", value: "0" },
          { key: "init", value: "/sbin/cocoon-init" },
        ],
        { rootFromImage: false, debug: false },
      ),
    );
    expect(cmdline).toBe(
      "pci=off reboot=k panic=0 iommu=off 8250.nr_uarts=0 net.ifnames=0 random.trust_cpu=on acpi=off init=/sbin/cocoon-init",
    );
  });

  it("turn the serial console on in debug mode", () => {
    const cmdline = kernelCmdline(firecrackerKernelParams([], { rootFromImage: false, debug: true }));
    expect(cmdline).toContain("console=ttyS0");
    expect(cmdline).not.toContain("8250.nr_uarts");
  });
});
