import type { Logger } from "pino";
import type { HypervisorConfig } from "./config.js";
import type { Device, MemoryDevice } from "./devices.js";
import type { Capabilities, HypervisorType, VcpuThreadIds } from "./types.js";

/**
 * How the host reaches the guest agent:
 * - `serial`: virtio-serial ports, each a unix socket that takes one client at a time (QEMU
 *   chardev sockets); a client locks a free port for the length of its session.
 * - `hvsock`: Firecracker's hybrid vsock, a unix socket plus a `CONNECT <port>` handshake, any
 *   number of connections.
 * - `unix`: a plain unix socket taking any number of connections (tests, in-process agents).
 */
export type AgentChannel =
  | { kind: "serial"; paths: string[] }
  | { kind: "hvsock"; path: string; port: number }
  | { kind: "unix"; path: string };

/** Where a VM keeps its runtime files. The sandbox layer decides; drivers only use them. */
export interface VmPaths {
  /** `<state>/vm/<id>/`: sockets, pid files, console log. */
  vmDir: string;
  /** `<lib>/firecracker/` style base for jails (must allow exec). */
  jailerBase: string;
}

export interface CreateVmOptions {
  id: string;
  config: HypervisorConfig;
  paths: VmPaths;
  /** Network namespace the VMM runs in, if any. */
  netnsPath?: string;
  logger?: Logger;
  /**
   * Called by startVM once the VMM runs, to wait until the guest is usable: the sandbox layer
   * passes an agent health check here (the hypervisor layer knows nothing of the agent). The
   * driver races it against the VMM exiting and the boot timeout, and aborts `signal` when it
   * gives up. Without it, startVM returns once the VMM has booted the guest.
   */
  guestReady?: (channel: AgentChannel, signal: AbortSignal) => Promise<void>;
  /**
   * Snapshots: start from the state a `snapshotVM` wrote into `dir` instead of booting.
   * `namedRam`: the source VM's RAM was a named memory backend (it was a template clone).
   */
  restoreFrom?: { dir: string; namedRam?: boolean };
  /** Resource control: where the driver puts each process it starts and the vCPU threads. */
  placement?: VmmPlacement;
}

/**
 * Resource control (host cgroups): the sandbox layer says where processes go; drivers call it
 * as soon as a process exists (before it can run up a bill) and once the vCPU threads are
 * known. A failure aborts the start like any other.
 */
export interface VmmPlacement {
  process(pid: number, role: "vmm" | "helper"): Promise<void>;
  vcpuThreads(tids: number[]): Promise<void>;
}

/**
 * What a driver persists so that another cocoon process can find and drive the same VM.
 * `driver` holds driver-specific fields (sockets, UUIDs, jail paths) and is validated by the
 * driver's own `load`.
 */
export interface HypervisorState {
  type: HypervisorType;
  /** The VMM's pid (0 when not running) and its start time, to guard against pid reuse. */
  pid: number;
  pidStartTime?: number;
  blockIndexMap: number[];
  hotpluggedVCPUs: number;
  hotpluggedMemoryMB: number;
  virtiofsDaemonPid?: number;
  driver: Record<string, unknown>;
}

export interface ResizeMemoryResult {
  memoryMB: number;
  device?: MemoryDevice;
}

export interface ResizeVcpusResult {
  oldVCPUs: number;
  newVCPUs: number;
}

/**
 * The hypervisor layer. One object drives one VM; drivers exist for QEMU, Firecracker, ACRN
 * and an in-memory mock. The shape follows Kata's hypervisor interface.
 */
export interface Hypervisor {
  readonly type: HypervisorType;

  /** Builds the VM definition from the config. Nothing runs yet. */
  createVM(options: CreateVmOptions): Promise<void>;
  /** Launches the VMM and boots the guest; fails if not up within `timeoutMs`. */
  startVM(timeoutMs: number): Promise<void>;
  /**
   * Stops the VM, escalating to SIGKILL; `waitOnly` waits for an exit without asking for one.
   * `graceful: false` skips asking the guest to power off (its agent already tore everything
   * down, so there is nothing left to shut down cleanly).
   */
  stopVM(options?: { waitOnly?: boolean; graceful?: boolean }): Promise<void>;
  pauseVM(): Promise<void>;
  resumeVM(): Promise<void>;
  /** Saves the VM (snapshot/device state) for templating or migration. */
  saveVM(): Promise<void>;
  /** Snapshots of running sandboxes: pauses the VM and writes its full state into `dir`. */
  snapshotVM?(dir: string): Promise<void>;

  /** Cold plug: devices given before start are queued until the VMM can take them. */
  addDevice(device: Device): Promise<void>;
  /** Hot plug into a running VM; returns the device with its guest-visible fields set. */
  hotplugAddDevice(device: Device): Promise<Device>;
  hotplugRemoveDevice(device: Device): Promise<Device>;
  resizeMemory(memoryMB: number, memoryBlockSizeMB: number, probe: boolean): Promise<ResizeMemoryResult>;
  resizeVCPUs(vcpus: number): Promise<ResizeVcpusResult>;

  /** The console: a unix socket path or a log file path the caller can read. */
  getVMConsole(): Promise<string>;
  /** How to reach the guest agent. */
  agentChannel(): AgentChannel;
  /** Closes control connections (QMP, HTTP) without stopping the VM. */
  disconnect(): void;
  capabilities(): Capabilities;
  hypervisorConfig(): HypervisorConfig;
  getThreadIDs(): Promise<VcpuThreadIds>;
  /** Removes every file, socket and mount the driver created. Idempotent. */
  cleanup(): Promise<void>;
  /** The VMM pid first, then helper processes (virtiofsd...). */
  getPids(): number[];
  /** Throws if the VMM is not alive and answering. */
  check(): Promise<void>;
  save(): HypervisorState;
  load(state: HypervisorState): void;
}
