/**
 * Devices a sandbox hands to its hypervisor, as a discriminated union on `type`. Drivers fill
 * in the guest-visible fields (e.g. `guestPath` of a block device) when they attach one.
 */

export const DEVICE_TYPES = [
  "image",
  "fs",
  "net",
  "block",
  "serial",
  "vsock",
  "vfio",
  "vhost-user",
  "cpu",
  "memory",
] as const;
export type DeviceType = (typeof DEVICE_TYPES)[number];

/** The guest rootfs image (read-only). */
export interface ImageDevice {
  type: "image";
  path: string;
}

/** A host directory shared into the guest. */
export interface FsDevice {
  type: "fs";
  /** Mount tag the guest uses. */
  tag: string;
  hostPath: string;
  fsType: "virtio-9p" | "virtio-fs";
  readOnly?: boolean;
}

/** A network interface backed by a tap (or macvtap) device. */
export interface NetDevice {
  type: "net";
  id: string;
  tapName: string;
  /** Guest MAC address, "aa:bb:cc:dd:ee:ff". */
  mac: string;
  model?: "tap" | "macvtap";
  /** Network namespace the tap lives in. */
  netnsPath?: string;
}

/** A file or block device presented to the guest as a disk. */
export interface BlockDevice {
  type: "block";
  id: string;
  path: string;
  readOnly?: boolean;
  format?: "raw" | "qcow2";
  /** Slot, drive index or SCSI LUN the driver assigned. */
  index?: number;
  /** Where the guest finds it (/dev/vdb, a SCSI address, a PCI path), filled by the driver. */
  guestPath?: string;
}

/** A serial port backed by a unix socket. */
export interface SerialDevice {
  type: "serial";
  id: string;
  name: string;
  socketPath: string;
}

/** A vsock device: a guest CID, and for hybrid vsock the host unix socket. */
export interface VsockDevice {
  type: "vsock";
  guestCid: number;
  udsPath?: string;
}

export interface VfioDevice {
  type: "vfio";
  id: string;
  /** PCI address, e.g. 0000:01:00.0. */
  bdf: string;
}

export interface VhostUserDevice {
  type: "vhost-user";
  id: string;
  kind: "blk" | "net" | "fs" | "scsi";
  socketPath: string;
  tag?: string;
}

export interface CpuDevice {
  type: "cpu";
  count: number;
}

export interface MemoryDevice {
  type: "memory";
  slot: number;
  sizeMB: number;
  addr?: number;
  probe?: boolean;
}

export type Device =
  | ImageDevice
  | FsDevice
  | NetDevice
  | BlockDevice
  | SerialDevice
  | VsockDevice
  | VfioDevice
  | VhostUserDevice
  | CpuDevice
  | MemoryDevice;

/** Narrows a device union by type. */
export type DeviceOf<T extends DeviceType> = Extract<Device, { type: T }>;
