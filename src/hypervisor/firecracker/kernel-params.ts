import { mergeParams, type Param } from "../params.js";

/**
 * The kernel parameters a Firecracker guest always gets (the seed's list): no PCI (virtio-mmio
 * only), reboot by keyboard controller so a guest reboot ends the VMM, panic → reboot after 1 s,
 * no IOMMU, no 8250 UARTs (the serial console costs boot time), classic interface names, trust
 * the CPU's RNG for early entropy, and no ACPI (Firecracker has none; avoids "ACPI BIOS Error").
 */
export const FIRECRACKER_KERNEL_PARAMS: readonly Param[] = [
  { key: "pci", value: "off" },
  { key: "reboot", value: "k" },
  { key: "panic", value: "1" },
  { key: "iommu", value: "off" },
  { key: "8250.nr_uarts", value: "0" },
  { key: "net.ifnames", value: "0" },
  { key: "random.trust_cpu", value: "on" },
  { key: "acpi", value: "off" },
];

/** Booting from a virtio-blk image: the root is the first partition of the first drive. */
export const VIRTIO_BLK_ROOT_PARAMS: readonly Param[] = [
  { key: "root", value: "/dev/vda1" },
  { key: "rootflags", value: "data=ordered,errors=remount-ro ro" },
  { key: "rootfstype", value: "ext4" },
];

/**
 * The command line parameters: the virtio-blk root ones (only when booting from an image: an
 * initrd has its own root), Firecracker's, then the configured ones, which override by key.
 * With `debug`, the serial console is turned on (console=ttyS0 instead of 8250.nr_uarts=0), so
 * the guest's boot log reaches the console file.
 */
export function firecrackerKernelParams(
  configured: readonly Param[],
  o: { rootFromImage: boolean; debug: boolean },
): Param[] {
  const base = o.debug
    ? [
        ...FIRECRACKER_KERNEL_PARAMS.filter((p) => p.key !== "8250.nr_uarts"),
        { key: "console", value: "ttyS0" },
      ]
    : [...FIRECRACKER_KERNEL_PARAMS];
  return mergeParams(o.rootFromImage ? VIRTIO_BLK_ROOT_PARAMS : [], base, configured);
}
