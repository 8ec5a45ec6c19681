import { ConfigError } from "../errors.js";

/** The VMMs cocoon can drive. `mock` is an in-memory hypervisor for tests. */
export const HYPERVISOR_TYPES = ["qemu", "firecracker", "acrn", "mock"] as const;
export type HypervisorType = (typeof HYPERVISOR_TYPES)[number];

export function isHypervisorType(value: string): value is HypervisorType {
  return (HYPERVISOR_TYPES as readonly string[]).includes(value);
}

/** Parses a hypervisor type, refusing anything else with the list of valid names. */
export function parseHypervisorType(value: string): HypervisorType {
  if (isHypervisorType(value)) return value;
  throw new ConfigError(
    "ERR_UNKNOWN_HYPERVISOR",
    `unknown hypervisor type "${value}": valid types are ${HYPERVISOR_TYPES.join(", ")}`,
    { details: { value, valid: [...HYPERVISOR_TYPES] } },
  );
}

/** Which accelerator QEMU uses. `auto` picks KVM where a normal guest kernel can run, else TCG. */
export const ACCELERATORS = ["auto", "kvm", "tcg"] as const;
export type Accelerator = (typeof ACCELERATORS)[number];

export const BLOCK_DEVICE_DRIVERS = ["virtio-scsi", "virtio-blk", "virtio-mmio", "nvdimm"] as const;
export type BlockDeviceDriver = (typeof BLOCK_DEVICE_DRIVERS)[number];

export const SHARED_FS_TYPES = ["virtio-9p", "virtio-fs", "none"] as const;
export type SharedFsType = (typeof SHARED_FS_TYPES)[number];

/** Capabilities tell the sandbox which flow to take for devices and file sharing. */
export interface Capabilities {
  blockDeviceHotplug: boolean;
  fsSharing: boolean;
  networkDeviceHotplug: boolean;
  multiQueue: boolean;
  /** Resource control: live vCPU / memory resize (QEMU q35; absent = no). */
  vcpuHotplug?: boolean;
  memoryHotplug?: boolean;
  /** Memory can be taken back and returned up to the boot size (a balloon), but not grown past it. */
  memoryBalloon?: boolean;
}

/** vCPU index → host thread id. */
export interface VcpuThreadIds {
  vcpus: Map<number, number>;
}
