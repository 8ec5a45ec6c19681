import { HypervisorError } from "../errors.js";
import type { HypervisorConfig } from "./config.js";
import { validateHypervisorConfig } from "./config.js";
import type { Device } from "./devices.js";
import type {
  AgentChannel,
  CreateVmOptions,
  Hypervisor,
  HypervisorState,
  ResizeMemoryResult,
  ResizeVcpusResult,
} from "./hypervisor.js";
import type { Capabilities, VcpuThreadIds } from "./types.js";
import path from "node:path";

type MockState = "new" | "created" | "running" | "paused" | "stopped";

/**
 * An in-memory hypervisor: it keeps the VM's state machine and devices and records every
 * call, so the sandbox layer can be tested without a VMM. It refuses what a real driver
 * refuses (starting twice, pausing a stopped VM, hotplug before start).
 */
export class MockHypervisor implements Hypervisor {
  readonly type = "mock" as const;
  readonly calls: string[] = [];
  state: MockState = "new";
  devices: Device[] = [];
  /** Devices added before start, applied at start in order. */
  pending: Device[] = [];
  private config: HypervisorConfig | undefined;
  private id = "";
  private vmDir = "";
  private vcpus = 0;
  private memoryMB = 0;
  /** Set to make the next startVM fail (tests of error paths). */
  failNextStart: Error | undefined;

  private require(...allowed: MockState[]): void {
    if (!allowed.includes(this.state)) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `mock VM is ${this.state}, expected ${allowed.join(" or ")}`,
        {
          details: { state: this.state },
        },
      );
    }
  }

  async createVM(options: CreateVmOptions): Promise<void> {
    this.calls.push("createVM");
    this.config = validateHypervisorConfig(options.config);
    this.id = options.id;
    this.vmDir = options.paths.vmDir;
    this.vcpus = this.config.numVCPUs;
    this.memoryMB = this.config.memorySize;
    this.state = "created";
  }

  async startVM(timeoutMs: number): Promise<void> {
    this.calls.push(`startVM(${timeoutMs})`);
    this.require("created", "stopped");
    if (this.failNextStart) {
      const err = this.failNextStart;
      this.failNextStart = undefined;
      throw err;
    }
    this.devices.push(...this.pending);
    this.pending = [];
    this.state = "running";
  }

  async stopVM(): Promise<void> {
    this.calls.push("stopVM");
    this.state = "stopped";
  }

  async pauseVM(): Promise<void> {
    this.calls.push("pauseVM");
    this.require("running");
    this.state = "paused";
  }

  async resumeVM(): Promise<void> {
    this.calls.push("resumeVM");
    this.require("paused");
    this.state = "running";
  }

  async saveVM(): Promise<void> {
    this.calls.push("saveVM");
    this.require("paused");
  }

  async addDevice(device: Device): Promise<void> {
    this.calls.push(`addDevice(${device.type})`);
    this.require("created");
    this.pending.push(device);
  }

  async hotplugAddDevice(device: Device): Promise<Device> {
    this.calls.push(`hotplugAddDevice(${device.type})`);
    this.require("running");
    if (device.type === "block") {
      const index = this.devices.filter((d) => d.type === "block").length + 1;
      const attached = { ...device, index, guestPath: `/dev/vd${String.fromCharCode(97 + index)}` };
      this.devices.push(attached);
      return attached;
    }
    this.devices.push(device);
    return device;
  }

  async hotplugRemoveDevice(device: Device): Promise<Device> {
    this.calls.push(`hotplugRemoveDevice(${device.type})`);
    this.require("running");
    const at = this.devices.findIndex(
      (d) =>
        JSON.stringify(d) === JSON.stringify(device) || ("id" in d && "id" in device && d.id === device.id),
    );
    if (at === -1) throw new HypervisorError("ERR_NOT_FOUND", `mock VM has no such ${device.type} device`);
    this.devices.splice(at, 1);
    return device;
  }

  async resizeMemory(memoryMB: number): Promise<ResizeMemoryResult> {
    this.calls.push(`resizeMemory(${memoryMB})`);
    this.require("running");
    this.memoryMB = memoryMB;
    return { memoryMB };
  }

  async resizeVCPUs(vcpus: number): Promise<ResizeVcpusResult> {
    this.calls.push(`resizeVCPUs(${vcpus})`);
    this.require("running");
    const old = this.vcpus;
    this.vcpus = Math.min(vcpus, this.config?.defaultMaxVCPUs ?? vcpus);
    return { oldVCPUs: old, newVCPUs: this.vcpus };
  }

  async getVMConsole(): Promise<string> {
    return path.join(this.vmDir, "console.log");
  }

  agentChannel(): AgentChannel {
    return { kind: "unix", path: path.join(this.vmDir, "agent.sock") };
  }

  disconnect(): void {
    this.calls.push("disconnect");
  }

  capabilities(): Capabilities {
    return { blockDeviceHotplug: true, fsSharing: true, networkDeviceHotplug: true, multiQueue: false };
  }

  hypervisorConfig(): HypervisorConfig {
    if (!this.config) throw new HypervisorError("ERR_INVALID_STATE", "mock VM was not created");
    return this.config;
  }

  async getThreadIDs(): Promise<VcpuThreadIds> {
    const vcpus = new Map<number, number>();
    for (let i = 0; i < this.vcpus; i++) vcpus.set(i, 1000 + i);
    return { vcpus };
  }

  async cleanup(): Promise<void> {
    this.calls.push("cleanup");
  }

  getPids(): number[] {
    return this.state === "running" || this.state === "paused" ? [process.pid] : [];
  }

  async check(): Promise<void> {
    this.require("running", "paused");
  }

  save(): HypervisorState {
    return {
      type: "mock",
      pid: 0,
      blockIndexMap: [],
      hotpluggedVCPUs: 0,
      hotpluggedMemoryMB: 0,
      driver: { id: this.id, state: this.state },
    };
  }

  load(state: HypervisorState): void {
    const s = state.driver.state;
    if (s === "created" || s === "running" || s === "paused" || s === "stopped") this.state = s;
  }
}
