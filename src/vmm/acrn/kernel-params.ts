import { checkKernelParam, kernelCmdline, type Param } from "../../hypervisor/params.js";

/**
 * The guest kernel command line for an ACRN VM. Lists are concatenated, never merged: the
 * kernel honours the last value of a repeated key, so the configured parameters, which come
 * last, override the defaults, and keys that legitimately repeat (console=) all survive.
 */

/** What every ACRN guest needs on this platform (x86_64, acrn-dm's device set). */
const ACRN_ARCH_PARAMS: readonly Param[] = [
  // ACRN guests get an invariant TSC and no HPET from acrn-dm.
  { key: "tsc", value: "reliable" },
  { key: "no_timer_check", value: "" },
  { key: "nohpet", value: "" },
  // Early output goes to the LPC UART (acrn-dm's stdout, i.e. its log); the last console,
  // the virtio console, becomes /dev/console once its driver is up.
  { key: "console", value: "ttyS0" },
  { key: "console", value: "hvc0" },
  { key: "consoleblank", value: "0" },
  { key: "log_buf_len", value: "16M" },
  // acrn-dm emulates no IOMMU for post-launched VMs.
  { key: "iommu", value: "off" },
];

/** The root filesystem when booting from the VM image (the first virtio-blk disk, unpartitioned). */
const ACRN_IMAGE_ROOT_PARAMS: readonly Param[] = [
  { key: "root", value: "/dev/vda" },
  { key: "ro", value: "" },
  { key: "rootwait", value: "" },
];

const ACRN_QUIET_PARAMS: readonly Param[] = [{ key: "quiet", value: "" }];
const ACRN_DEBUG_PARAMS: readonly Param[] = [{ key: "debug", value: "" }];

export interface AcrnKernelParamsInput {
  debug: boolean;
  /** Booting from the disk image (adds root=); false for an initrd. */
  fromImage: boolean;
  /** Upper bound on vCPUs the guest may bring up. */
  maxVCPUs: number;
  /** The configured parameters; they come last so they win. */
  configured: readonly Param[];
}

/** The architecture defaults alone (logged in debug mode to tell them from the rest). */
export function acrnArchKernelParams(debug: boolean, fromImage: boolean): Param[] {
  return [
    ...ACRN_ARCH_PARAMS,
    ...(fromImage ? ACRN_IMAGE_ROOT_PARAMS : []),
    ...(debug ? ACRN_DEBUG_PARAMS : ACRN_QUIET_PARAMS),
  ].map((p) => ({ ...p }));
}

/** Arch defaults, then `panic=1` and `maxcpus=`, then the configured parameters. */
export function acrnKernelParams(input: AcrnKernelParamsInput): Param[] {
  return [
    ...acrnArchKernelParams(input.debug, input.fromImage),
    // Never sit wedged on a panic: reboot after one second (Kata's default on every VMM).
    { key: "panic", value: "1" },
    { key: "maxcpus", value: String(input.maxVCPUs) },
    ...input.configured.map((p) => ({ ...checkKernelParam(p) })),
  ];
}

export function acrnKernelCmdline(input: AcrnKernelParamsInput): string {
  return kernelCmdline(acrnKernelParams(input));
}
