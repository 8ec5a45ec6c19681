import { lstat, mkdir, open, readFile, rm, rmdir, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { HypervisorError, errnoCode, messageOf } from "../../errors.js";
import { isProcessAlive } from "../../host/proc.js";
import {
  ManagedProcess,
  describeExit,
  pidStartTime,
  terminatePid,
  type EscalationStep,
  type ExitStatus,
} from "../../host/process.js";
import { which } from "../../host/which.js";
import { blkrescan } from "../../vmm/acrn/acrnctl.js";
import {
  ACRN_BLOCK_POOL_SIZE,
  ACRN_PLACEHOLDER_DISK,
  buildAcrnDmArgv,
  type AcrnDevice,
  type AcrnDmLaunch,
} from "../../vmm/acrn/argv.js";
import { acrnArchKernelParams, acrnKernelCmdline } from "../../vmm/acrn/kernel-params.js";
import { probePlatformInfo } from "../../vmm/acrn/platform-info.js";
import { ACRN_MAX_UUIDS, type AcrnUuid } from "../../vmm/acrn/uuids.js";
import { assetPath, validateHypervisorConfig, type HypervisorConfig } from "../config.js";
import type { BlockDevice, Device } from "../devices.js";
import type {
  AgentChannel,
  CreateVmOptions,
  Hypervisor,
  HypervisorState,
  ResizeMemoryResult,
  ResizeVcpusResult,
} from "../hypervisor.js";
import { launchInNetns, requireNetns, type LaunchCommand } from "../netns-launch.js";
import { kernelCmdline } from "../params.js";
import type { DriverContext } from "../registry.js";
import type { Capabilities, VcpuThreadIds } from "../types.js";
import { PlaceholderPool, guestDiskPath } from "./block-pool.js";
import { acrnSettingsFromParams, type AcrnSettings } from "./settings.js";
import { acrnDriverStateSchema, type AcrnDriverState } from "./state.js";
import { AcrnUuidPool } from "./uuid-pool.js";

/** Where acrn-dm and acrnctl live when the config names neither. */
export const ACRN_DM_DEFAULT_PATH = "/usr/bin/acrn-dm";
export const ACRNCTL_DEFAULT_PATH = "/usr/bin/acrnctl";
/** ACRN runs one vCPU per VM unless the config asks for more. */
export const ACRN_DEFAULT_MAX_VCPUS = 1;
/** The seed's stop sequence: SIGINT, up to 15 s for acrn-dm to power the VM off, then SIGKILL. */
export const ACRN_STOP_TIMEOUT_MS = 15_000;

/** Files the driver keeps in the VM directory. */
export const ACRN_CONSOLE_SOCKET = "console.sock";
/**
 * Agent ports. acrn-dm's socket backend accepts one client per port for the life of the VM
 * (it closes the listening socket after the first accept), so the VM gets several: each host
 * session uses up one. The agent channel is `serial`, whose dialer skips ports that refuse.
 */
export const ACRN_AGENT_PORTS = 4;
export const ACRN_LOG_FILE = "acrn-dm.log";
/** Port names the guest agent looks for in /sys/class/virtio-ports/<port>/name (its PORT_PREFIX). */
export const ACRN_AGENT_PORT_PREFIX = "cocoon.agent.";
/** The guest console's port name on acrn-dm's side. */
const CONSOLE_PORT_NAME = "console0";

export interface AcrnDriverOptions {
  /** Environment for acrn-dm, acrnctl and the platform helper (tests point these at fakes). */
  env?: NodeJS.ProcessEnv;
  /** SIGINT grace period before SIGKILL (default 15 s). */
  stopTimeoutMs?: number;
  /** How long to wait for the exit after SIGKILL (default 5 s). */
  killTimeoutMs?: number;
  /** Poll interval for sockets and for a VMM known only by pid. */
  pollMs?: number;
  /** The VHM device the platform probe opens (default /dev/acrn_vhm). */
  vhmDevice?: string;
}

type VmState = "new" | "created" | "running" | "stopped";

function notSupported(what: string, details: Record<string, unknown> = {}): HypervisorError {
  return new HypervisorError("ERR_NOT_SUPPORTED", `${what} is not supported by ACRN`, { details });
}

function invalidConfig(field: string, message: string): HypervisorError {
  return new HypervisorError("ERR_INVALID_CONFIG", message, { details: { field } });
}

async function isSocket(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isSocket();
  } catch {
    return false;
  }
}

/**
 * The ACRN driver. One object drives one VM: createVM takes a UUID from the host-wide pool
 * and checks the definition, startVM launches `acrn-dm` and waits for it, stopVM stops it
 * with SIGINT (then SIGKILL) and frees the UUID. Block devices are "hot-plugged" by giving
 * one of eight placeholder drives a backing file with `acrnctl blkrescan`.
 */
export class AcrnHypervisor implements Hypervisor {
  readonly type = "acrn" as const;

  private state: VmState = "new";
  /** Set by load(): createVM then adopts the saved VM instead of defining a new one. */
  private restored = false;
  private config: HypervisorConfig | undefined;
  private settings: AcrnSettings | undefined;
  private id = "";
  private vmName = "";
  private vmDir = "";
  private dmPath = "";
  private ctlPath = "";
  private uuid: AcrnUuid | undefined;
  private pid = 0;
  private pidStart: number | undefined;
  /** Our child when this process started acrn-dm; undefined when known only by pid. */
  private proc: ManagedProcess | undefined;
  private guestReady: CreateVmOptions["guestReady"];
  /** The sandbox's network namespace: acrn-dm runs there, where the taps it opens by name are. */
  private netnsPath: string | undefined;
  /** Devices given to addDevice before start, in order. */
  private coldPlugged: AcrnDevice[] = [];
  private serialSockets: string[] = [];
  private pool = new PlaceholderPool(ACRN_BLOCK_POOL_SIZE);
  private blockSlots = new Map<number, number>();
  private logger: Logger;
  private readonly uuids: AcrnUuidPool;
  private readonly stopTimeoutMs: number;
  private readonly killTimeoutMs: number;
  private readonly pollMs: number;

  constructor(
    private readonly ctx: DriverContext,
    private readonly options: AcrnDriverOptions = {},
  ) {
    this.logger = ctx.logger.child({ subsystem: "acrn" });
    this.uuids = new AcrnUuidPool(ctx.store);
    this.stopTimeoutMs = options.stopTimeoutMs ?? ACRN_STOP_TIMEOUT_MS;
    this.killTimeoutMs = options.killTimeoutMs ?? 5_000;
    this.pollMs = options.pollMs ?? 25;
  }

  // ---- paths -------------------------------------------------------------------------------

  private get consoleSocket(): string {
    return path.join(this.vmDir, ACRN_CONSOLE_SOCKET);
  }
  private get agentSockets(): string[] {
    return Array.from({ length: ACRN_AGENT_PORTS }, (_, i) => path.join(this.vmDir, `agent.${i}.sock`));
  }
  private get logFile(): string {
    return path.join(this.vmDir, ACRN_LOG_FILE);
  }

  private require(op: string, ...allowed: VmState[]): void {
    if (!allowed.includes(this.state)) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `cannot ${op}: the ACRN VM is ${this.state}, expected ${allowed.join(" or ")}`,
        {
          details: { state: this.state, vm: this.vmName },
        },
      );
    }
  }

  // ---- create ------------------------------------------------------------------------------

  /** The generic checks plus ACRN's own limits; returns the config with defaults filled in. */
  private validateConfig(input: HypervisorConfig): HypervisorConfig {
    if (input.blockDeviceDriver !== "" && input.blockDeviceDriver !== "virtio-blk") {
      throw invalidConfig(
        "blockDeviceDriver",
        `ACRN supports only the virtio-blk block driver, not ${input.blockDeviceDriver}`,
      );
    }
    if (input.sharedFS !== "" && input.sharedFS !== "none") {
      throw invalidConfig(
        "sharedFS",
        `shared filesystems (${input.sharedFS}) are not supported by ACRN: it uses block devices`,
      );
    }
    if (input.useVSock)
      throw invalidConfig("useVSock", "vsock is not supported by ACRN: the agent uses a virtio-console port");
    if (input.bootToBeTemplate || input.bootFromTemplate) {
      throw invalidConfig("bootToBeTemplate", "VM templating is not supported by ACRN");
    }
    const conf = validateHypervisorConfig({
      ...input,
      blockDeviceDriver: "virtio-blk",
      defaultMaxVCPUs: input.defaultMaxVCPUs === 0 ? ACRN_DEFAULT_MAX_VCPUS : input.defaultMaxVCPUs,
    });
    if (assetPath(conf, "image") === "") {
      throw invalidConfig(
        "imagePath",
        "ACRN boots from a disk image (virtio-blk); an initrd alone is not supported",
      );
    }
    if (conf.defaultBridges !== 1) {
      throw invalidConfig(
        "defaultBridges",
        `ACRN has a single PCI host bridge: default_bridges must be 1, got ${conf.defaultBridges}`,
      );
    }
    return conf;
  }

  private async resolveProgram(
    configured: string,
    fallback: string,
    what: string,
    key: string,
  ): Promise<string> {
    const p = configured === "" ? fallback : configured;
    if (!(await which(p))) {
      throw new HypervisorError("ERR_HOST_MISSING_TOOL", `${what} ${p} does not exist or is not executable`, {
        details: { path: p },
        hint: `install ACRN's ${what}, or set ${key} in [hypervisor.acrn]`,
      });
    }
    return p;
  }

  private async checkAsset(p: string, what: string): Promise<void> {
    try {
      if (!(await stat(p)).isFile()) throw new Error("not a regular file");
    } catch (err) {
      throw new HypervisorError(
        "ERR_ASSET_INVALID",
        `the guest ${what} ${p} is unusable: ${errnoCode(err) === "ENOENT" ? "no such file" : messageOf(err)}`,
        {
          cause: err,
          details: { path: p },
        },
      );
    }
  }

  /** How many VMs the platform allows: the configured max_vms, else what the hypervisor says. */
  private async vmLimit(settings: AcrnSettings): Promise<number> {
    if (settings.maxVms > 0) return Math.min(settings.maxVms, ACRN_MAX_UUIDS);
    const info = await probePlatformInfo({
      helperPath: settings.platformInfoHelper || undefined,
      device: this.options.vhmDevice,
      env: this.options.env,
    });
    this.logger.debug({ info }, "ACRN platform info");
    return Math.min(info.maxKataContainers, ACRN_MAX_UUIDS);
  }

  async createVM(options: CreateVmOptions): Promise<void> {
    if (!this.restored) this.require("create the VM", "new");
    const config = this.validateConfig(options.config);
    const settings = acrnSettingsFromParams(config.hypervisorParams);
    if (this.restored && (this.id !== options.id || this.vmDir !== options.paths.vmDir)) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `the saved ACRN VM is ${this.vmName} in ${this.vmDir}, not sandbox-${options.id} in ${options.paths.vmDir}`,
      );
    }
    this.id = options.id;
    this.vmName = `sandbox-${options.id}`;
    this.vmDir = options.paths.vmDir;
    this.logger = (options.logger ?? this.ctx.logger).child({ subsystem: "acrn", sandbox: options.id });
    this.guestReady = options.guestReady;
    this.netnsPath = options.netnsPath;
    this.dmPath = await this.resolveProgram(
      assetPath(config, "hypervisor"),
      ACRN_DM_DEFAULT_PATH,
      "device model (acrn-dm)",
      "path",
    );
    this.ctlPath = await this.resolveProgram(
      assetPath(config, "hypervisorCtl"),
      ACRNCTL_DEFAULT_PATH,
      "control tool (acrnctl)",
      "ctlpath",
    );
    this.config = config;
    this.settings = settings;
    if (this.restored) return; // the saved VM already has its UUID and, maybe, a running acrn-dm
    await this.checkAsset(assetPath(config, "kernel"), "kernel");
    await this.checkAsset(assetPath(config, "image"), "image");
    const uuid = await this.uuids.allocate(this.id, await this.vmLimit(settings));
    this.uuid = uuid;
    try {
      this.launchPlan(); // validates the whole definition (paths, lengths, slots) before anything runs
    } catch (err) {
      await this.releaseUuid();
      throw err;
    }
    this.state = "created";
    this.logger.info({ uuid, vm: this.vmName }, "ACRN VM created");
  }

  /** The kernel command line: arch defaults, panic=1, maxcpus=, configured parameters last. */
  private cmdline(config: HypervisorConfig): string {
    return acrnKernelCmdline({
      debug: config.debug,
      fromImage: true,
      maxVCPUs: config.defaultMaxVCPUs,
      configured: config.kernelParams,
    });
  }

  /** The device list in PCI order: bridge, LPC, console, image, placeholders, agent ports, cold plugs. */
  private devices(config: HypervisorConfig): AcrnDevice[] {
    const placeholders: AcrnDevice[] = this.pool
      .indexes()
      .map((index) => ({ kind: "virtio-blk", index, file: ACRN_PLACEHOLDER_DISK }));
    return [
      { kind: "hostbridge" },
      { kind: "lpc" },
      { kind: "console-port", name: CONSOLE_PORT_NAME, socketPath: this.consoleSocket, console: true },
      { kind: "virtio-blk", index: 0, file: assetPath(config, "image"), readOnly: true },
      ...placeholders,
      ...this.agentSockets.map((socketPath, i): AcrnDevice => ({
        kind: "console-port",
        name: `${ACRN_AGENT_PORT_PREFIX}${i}`,
        socketPath,
        console: false,
      })),
      ...this.coldPlugged,
    ];
  }

  private launchPlan(): AcrnDmLaunch {
    const config = this.hypervisorConfig();
    if (!this.uuid) throw new HypervisorError("ERR_INTERNAL", "ACRN VM has no UUID");
    return buildAcrnDmArgv({
      name: this.vmName,
      uuid: this.uuid,
      acpi: true,
      memoryMB: config.memorySize,
      vcpus: config.numVCPUs,
      devices: this.devices(config),
      kernel: { path: assetPath(config, "kernel"), cmdline: this.cmdline(config) },
    });
  }

  /** The acrn-dm argv this VM starts with (for logs and `config show`-style inspection). */
  commandLine(): string[] {
    return [this.dmPath, ...this.launchPlan().argv];
  }

  /** What startVM spawns: acrn-dm, inside the sandbox's network namespace when it has one. */
  launchCommand(): LaunchCommand {
    return launchInNetns({ file: this.dmPath, args: this.launchPlan().argv }, this.netnsPath);
  }

  // ---- start -------------------------------------------------------------------------------

  async startVM(timeoutMs: number): Promise<void> {
    this.require("start the VM", "created");
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new HypervisorError("ERR_INVALID_ARGUMENT", `invalid start timeout ${timeoutMs} ms`, {
        details: { timeoutMs },
      });
    }
    const deadline = Date.now() + timeoutMs;
    const plan = this.launchPlan();
    // Before anything is made or spawned: a missing namespace fails here, with its path.
    if (this.netnsPath !== undefined) await requireNetns(this.netnsPath, "acrn-dm");
    const launch = launchInNetns({ file: this.dmPath, args: plan.argv }, this.netnsPath);
    const config = this.hypervisorConfig();
    if (config.debug) {
      this.logger.debug(
        { "default-kernel-parameters": kernelCmdline(acrnArchKernelParams(true, true)) },
        "ACRN kernel defaults",
      );
    }
    await mkdir(this.vmDir, { recursive: true, mode: 0o700 });
    // acrn-dm replaces its sockets itself, but a stale one would make the wait below succeed early.
    await this.removeSockets();
    const log = await open(this.logFile, "a", 0o600);
    try {
      this.logger.info({ argv: [launch.file, ...launch.args] }, "launching acrn-dm");
      // A new session: a Ctrl-C on cocoon's terminal must not reach acrn-dm, which stops on SIGINT.
      // Through nsenter, the pid is still acrn-dm's own (nsenter execs it in place).
      this.proc = await ManagedProcess.spawn(launch.file, launch.args, {
        env: this.options.env,
        stdin: "ignore",
        stdout: log.fd,
        stderr: log.fd,
        detached: true,
      });
    } finally {
      await log.close();
    }
    this.pid = this.proc.pid;
    this.pidStart = await pidStartTime(this.pid);
    this.blockSlots = plan.blockSlots;
    this.state = "running";
    try {
      await this.raceVmm(
        (signal) => this.waitForSockets(signal),
        deadline,
        () => `acrn-dm did not create its console socket ${this.consoleSocket} within ${timeoutMs} ms`,
      );
      const ready = this.guestReady;
      if (ready) {
        await this.raceVmm(
          (signal) => ready(this.agentChannel(), signal),
          deadline,
          () => `the guest did not become ready within ${timeoutMs} ms (acrn-dm is running)`,
        );
      }
    } catch (err) {
      await this.abortStart();
      throw err;
    }
    this.logger.info({ pid: this.pid }, "ACRN VM started");
  }

  private async waitForSockets(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const sockets = [this.consoleSocket, ...this.agentSockets];
      if ((await Promise.all(sockets.map(isSocket))).every(Boolean)) return;
      await sleep(this.pollMs, undefined, { signal }).catch(() => undefined);
    }
  }

  /** Resolves when the VMM is gone; never resolves after `signal` aborts. */
  private async vmmExit(signal: AbortSignal): Promise<ExitStatus | undefined> {
    if (this.proc) return this.proc.exited;
    while (!signal.aborted) {
      if (!(await isProcessAlive(this.pid, this.pidStart))) return undefined;
      await sleep(this.pollMs, undefined, { signal }).catch(() => undefined);
    }
    return new Promise<never>(() => undefined);
  }

  /** Runs `work` against the VMM exiting and the deadline; aborts `work` when it loses. */
  private async raceVmm<T>(
    work: (signal: AbortSignal) => Promise<T>,
    deadline: number,
    timeoutMessage: () => string,
  ): Promise<T> {
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<{ kind: "timeout" }>((resolve) => {
      timer = setTimeout(() => resolve({ kind: "timeout" }), Math.max(0, deadline - Date.now()));
    });
    try {
      const outcome = await Promise.race([
        work(ac.signal).then((value) => ({ kind: "done" as const, value })),
        this.vmmExit(ac.signal).then((status) => ({ kind: "exited" as const, status })),
        timedOut,
      ]);
      if (outcome.kind === "done") return outcome.value;
      if (outcome.kind === "exited") {
        const how = outcome.status ? describeExit(outcome.status) : "exited";
        throw new HypervisorError("ERR_VMM_START", `acrn-dm ${how} during boot${await this.logTail()}`, {
          details: { vm: this.vmName, log: this.logFile, ...outcome.status },
        });
      }
      throw new HypervisorError("ERR_VMM_TIMEOUT", timeoutMessage(), {
        details: { vm: this.vmName, log: this.logFile },
        hint: `see acrn-dm's output in ${this.logFile}`,
      });
    } finally {
      clearTimeout(timer);
      ac.abort();
    }
  }

  /** The last lines acrn-dm wrote, for error messages. */
  private async logTail(): Promise<string> {
    try {
      const text = (await readFile(this.logFile, "utf8")).trim();
      if (text === "") return "";
      return `: ${text.split("\n").slice(-3).join("; ").slice(-500)}`;
    } catch {
      return "";
    }
  }

  /** A failed start: kill acrn-dm without the long grace period and forget it. */
  private async abortStart(): Promise<void> {
    try {
      await this.terminate([
        { signal: "SIGINT", timeoutMs: Math.min(1_000, this.stopTimeoutMs) },
        { signal: "SIGKILL", timeoutMs: this.killTimeoutMs },
      ]);
    } catch (err) {
      this.logger.error(
        { err: messageOf(err), pid: this.pid },
        "could not kill acrn-dm after a failed start",
      );
      return; // keep pid and state: stopVM/cleanup will try again
    }
    await this.removeSockets();
    this.state = "created";
  }

  // ---- stop --------------------------------------------------------------------------------

  private async terminate(steps: EscalationStep[]): Promise<void> {
    if (this.pid > 0) {
      if (this.proc) await this.proc.terminate(steps);
      else await terminatePid(this.pid, { startTime: this.pidStart, steps, pollMs: this.pollMs });
    }
    this.pid = 0;
    this.pidStart = undefined;
    this.proc = undefined;
  }

  async stopVM(options: { waitOnly?: boolean } = {}): Promise<void> {
    if (this.state === "new") return;
    this.logger.info({ pid: this.pid, waitOnly: options.waitOnly ?? false }, "stopping ACRN VM");
    if (this.pid > 0) {
      if (options.waitOnly) {
        const gone = this.proc
          ? (await this.proc.waitFor(this.stopTimeoutMs)) !== undefined
          : await this.waitGone(this.stopTimeoutMs);
        if (!gone) {
          throw new HypervisorError(
            "ERR_VMM_TIMEOUT",
            `acrn-dm (pid ${this.pid}) did not exit within ${this.stopTimeoutMs} ms`,
            {
              details: { pid: this.pid },
            },
          );
        }
      }
      // acrn-dm powers the guest off on SIGINT; an already-gone process counts as stopped.
      await this.terminate([
        { signal: "SIGINT", timeoutMs: this.stopTimeoutMs, name: "SIGINT (power off)" },
        { signal: "SIGKILL", timeoutMs: this.killTimeoutMs },
      ]);
    }
    // Only now: a UUID freed while acrn-dm still held it could be handed to a new VM that
    // ACRN would then refuse.
    await this.releaseUuid();
    this.state = "stopped";
    this.logger.info("ACRN VM stopped");
  }

  private async waitGone(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!(await isProcessAlive(this.pid, this.pidStart))) return true;
      if (Date.now() >= deadline) return false;
      await sleep(this.pollMs);
    }
  }

  private async releaseUuid(): Promise<void> {
    if (!this.uuid) return;
    const freed = await this.uuids.release(this.uuid, this.id);
    if (!freed) this.logger.warn({ uuid: this.uuid }, "ACRN UUID was not held by this VM any more");
    this.uuid = undefined;
  }

  // ---- unsupported lifecycle operations ---------------------------------------------------

  async pauseVM(): Promise<void> {
    throw notSupported("pausing a VM", { operation: "pauseVM" });
  }

  async resumeVM(): Promise<void> {
    throw notSupported("resuming a VM", { operation: "resumeVM" });
  }

  async saveVM(): Promise<void> {
    throw notSupported("saving a VM (templating, snapshots)", { operation: "saveVM" });
  }

  // ---- devices -----------------------------------------------------------------------------

  async addDevice(device: Device): Promise<void> {
    this.require(`add a ${device.type} device`, "created");
    let added: AcrnDevice | undefined;
    switch (device.type) {
      case "net":
        added = { kind: "virtio-net", ifName: device.tapName, mac: device.mac, model: device.model ?? "tap" };
        break;
      case "serial":
        added = { kind: "console-port", name: device.name, socketPath: device.socketPath, console: false };
        break;
      case "block":
        // Cold-plugged disks follow the placeholders, so the guest names stay predictable.
        added = {
          kind: "virtio-blk",
          index: ACRN_BLOCK_POOL_SIZE + 1 + this.coldPlugged.filter((d) => d.kind === "virtio-blk").length,
          file: device.path,
          readOnly: device.readOnly,
        };
        break;
      case "image":
        if (device.path !== assetPath(this.hypervisorConfig(), "image")) {
          throw new HypervisorError(
            "ERR_INVALID_ARGUMENT",
            `the ACRN VM image is set by the config (${assetPath(this.hypervisorConfig(), "image")}), not ${device.path}`,
          );
        }
        return; // already the first disk
      case "fs":
        throw notSupported("sharing a host directory (virtio-fs, 9p)", { device: device.type });
      case "vsock":
        throw notSupported("vsock", { device: device.type });
      default:
        throw notSupported(`a ${device.type} device`, { device: device.type });
    }
    this.coldPlugged.push(added);
    try {
      this.launchPlan(); // refuse a device acrn-dm would reject now, not at start
    } catch (err) {
      this.coldPlugged.pop();
      throw err;
    }
    if (added.kind === "console-port") this.serialSockets.push(added.socketPath);
  }

  async hotplugAddDevice(device: Device): Promise<Device> {
    // Refused whatever the VM's state: only blkrescan exists, so no state would make it work.
    if (device.type !== "block")
      throw notSupported(`hot-plugging a ${device.type} device`, { device: device.type });
    this.require(`hot-plug a ${device.type} device`, "running");
    return this.attachBlock(device);
  }

  private async attachBlock(device: BlockDevice): Promise<BlockDevice> {
    if (device.path === "") {
      throw new HypervisorError("ERR_INVALID_ARGUMENT", `block device ${device.id} has an empty path`, {
        details: { id: device.id },
      });
    }
    const index = this.pool.take(device.index);
    try {
      try {
        const st = await stat(device.path);
        if (!st.isFile() && !st.isBlockDevice()) throw new Error("not a file or block device");
      } catch (err) {
        throw new HypervisorError(
          "ERR_INVALID_ARGUMENT",
          `block device ${device.id}: ${device.path} is unusable: ${errnoCode(err) === "ENOENT" ? "no such file" : messageOf(err)}`,
          {
            details: { id: device.id, path: device.path },
          },
        );
      }
      const slot = this.blockSlots.get(index);
      if (slot === undefined)
        throw new HypervisorError("ERR_INTERNAL", `no PCI slot recorded for placeholder drive ${index}`);
      await blkrescan(
        this.ctlPath,
        { vmName: this.vmName, slot, file: device.path, readOnly: device.readOnly },
        { env: this.options.env },
      );
    } catch (err) {
      this.pool.putBack(index);
      throw err;
    }
    const guestPath = guestDiskPath(index);
    this.logger.info({ id: device.id, index, guestPath }, "block device attached by blkrescan");
    return { ...device, index, guestPath };
  }

  /**
   * ACRN cannot detach a drive: the placeholder keeps its backing file until the VM stops.
   * Removing a hot-plugged block device therefore succeeds without doing anything (the
   * sandbox removes containers this way and must not fail), and its index is not reused.
   */
  async hotplugRemoveDevice(device: Device): Promise<Device> {
    if (device.type !== "block")
      throw notSupported(`hot-unplugging a ${device.type} device`, { device: device.type });
    this.require(`hot-unplug a ${device.type} device`, "running");
    if (device.index === undefined || !this.pool.has(device.index)) {
      throw new HypervisorError(
        "ERR_NOT_FOUND",
        `block device ${device.id} was not hot-plugged into this ACRN VM`,
        {
          details: { id: device.id, index: device.index },
        },
      );
    }
    this.logger.info(
      { id: device.id, index: device.index },
      "ACRN cannot detach a drive; it stays attached until the VM stops",
    );
    return device;
  }

  /**
   * The VM keeps its boot-time memory. The sandbox layer resizes on every container
   * create/update; answering with the unchanged size lets it carry on, as Kata did.
   */
  async resizeMemory(memoryMB: number, _blockSizeMB?: number, _probe?: boolean): Promise<ResizeMemoryResult> {
    if (!Number.isInteger(memoryMB) || memoryMB < 0) {
      throw new HypervisorError("ERR_INVALID_ARGUMENT", `invalid memory size ${memoryMB} MiB`, {
        details: { memoryMB },
      });
    }
    const current = this.hypervisorConfig().memorySize;
    if (memoryMB !== current)
      this.logger.debug({ requested: memoryMB, current }, "ACRN cannot resize memory; keeping it");
    return { memoryMB: current };
  }

  /** Likewise for vCPUs: the answer says nothing changed. */
  async resizeVCPUs(vcpus: number): Promise<ResizeVcpusResult> {
    if (!Number.isInteger(vcpus) || vcpus < 0) {
      throw new HypervisorError("ERR_INVALID_ARGUMENT", `invalid vCPU count ${vcpus}`, {
        details: { vcpus },
      });
    }
    const current = this.hypervisorConfig().numVCPUs;
    if (vcpus !== current)
      this.logger.debug({ requested: vcpus, current }, "ACRN cannot resize vCPUs; keeping them");
    return { oldVCPUs: current, newVCPUs: current };
  }

  // ---- queries -----------------------------------------------------------------------------

  /** The console's unix socket. acrn-dm serves it to one client for the life of the VM. */
  async getVMConsole(): Promise<string> {
    this.require("get the console", "created", "running", "stopped");
    return this.consoleSocket;
  }

  agentChannel(): AgentChannel {
    this.require("get the agent channel", "created", "running", "stopped");
    return { kind: "serial", paths: this.agentSockets };
  }

  /** acrn-dm has no control connection cocoon keeps open. */
  disconnect(): void {}

  capabilities(): Capabilities {
    return { blockDeviceHotplug: true, fsSharing: false, networkDeviceHotplug: false, multiQueue: false };
  }

  hypervisorConfig(): HypervisorConfig {
    if (!this.config) throw new HypervisorError("ERR_INVALID_STATE", "the ACRN VM was not created");
    return this.config;
  }

  /** ACRN runs vCPUs inside the hypervisor on dedicated physical CPUs: no host threads to report. */
  async getThreadIDs(): Promise<VcpuThreadIds> {
    return { vcpus: new Map() };
  }

  getPids(): number[] {
    return this.pid > 0 ? [this.pid] : [];
  }

  async check(): Promise<void> {
    if (this.pid <= 0) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `the ACRN VM ${this.vmName || "(not created)"} is not running`,
        {
          details: { state: this.state },
        },
      );
    }
    if (!(await isProcessAlive(this.pid, this.pidStart))) {
      throw new HypervisorError(
        "ERR_VMM_EXITED",
        `acrn-dm (pid ${this.pid}) of ${this.vmName} is not running`,
        {
          details: { pid: this.pid, vm: this.vmName },
        },
      );
    }
  }

  // ---- cleanup -----------------------------------------------------------------------------

  private async removeSockets(): Promise<void> {
    for (const p of [this.consoleSocket, ...this.agentSockets, ...this.serialSockets])
      await rm(p, { force: true });
  }

  /**
   * Stops acrn-dm if it still runs, frees the UUID, and removes the sockets, the log and the
   * VM directory (when nothing else is left in it). Safe to call any number of times.
   */
  async cleanup(): Promise<void> {
    if (this.state === "new" && !this.restored) return;
    if (this.pid > 0) await this.stopVM();
    await this.releaseUuid();
    if (this.vmDir === "") return;
    await this.removeSockets();
    await rm(this.logFile, { force: true });
    try {
      await rmdir(this.vmDir);
    } catch (err) {
      const code = errnoCode(err);
      if (code !== "ENOENT" && code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      if (code === "ENOTEMPTY")
        this.logger.debug({ vmDir: this.vmDir }, "VM directory holds other files; left in place");
    }
    if (this.state !== "new") this.state = "stopped";
  }

  // ---- persistence -------------------------------------------------------------------------

  save(): HypervisorState {
    const driver: AcrnDriverState = {
      version: 1,
      vmState: this.state === "new" ? "created" : this.state,
      uuid: this.uuid,
      vmName: this.vmName,
      vmDir: this.vmDir,
      blockSlots: [...this.blockSlots.entries()],
      serialSockets: [...this.serialSockets],
    };
    if (driver.uuid === undefined) delete driver.uuid;
    return {
      type: "acrn",
      pid: this.pid,
      ...(this.pidStart !== undefined ? { pidStartTime: this.pidStart } : {}),
      blockIndexMap: this.pool.used(),
      hotpluggedVCPUs: 0,
      hotpluggedMemoryMB: 0,
      driver: { ...driver },
    };
  }

  /**
   * Adopts a VM saved by another cocoon process. Call it before createVM (as Kata does), which
   * then reuses the saved UUID instead of taking a new one.
   */
  load(state: HypervisorState): void {
    if (state.type !== "acrn") {
      throw new HypervisorError(
        "ERR_STATE_CORRUPT",
        `cannot load a ${state.type} hypervisor state into the ACRN driver`,
      );
    }
    const parsed = acrnDriverStateSchema.safeParse(state.driver);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new HypervisorError(
        "ERR_STATE_CORRUPT",
        `invalid ACRN driver state at ${issue?.path.join(".") || "<root>"}: ${issue?.message ?? "?"}`,
      );
    }
    const d = parsed.data;
    if (this.uuid !== undefined && this.uuid !== d.uuid) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `this driver already holds ACRN UUID ${this.uuid}; load() must come before createVM()`,
      );
    }
    if (!Number.isInteger(state.pid) || state.pid < 0)
      throw new HypervisorError("ERR_STATE_CORRUPT", `invalid acrn-dm pid ${state.pid}`);
    this.pool = new PlaceholderPool(ACRN_BLOCK_POOL_SIZE, state.blockIndexMap);
    this.blockSlots = new Map(d.blockSlots);
    this.uuid = d.uuid;
    this.vmName = d.vmName;
    this.id = d.vmName.replace(/^sandbox-/, "");
    this.vmDir = d.vmDir;
    this.serialSockets = [...d.serialSockets];
    this.pid = state.pid;
    this.pidStart = state.pidStartTime;
    this.proc = undefined;
    this.state = d.vmState;
    this.restored = true;
  }
}
