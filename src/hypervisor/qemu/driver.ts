import { openSync, closeSync } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { z } from "zod";
import { ConfigError, HypervisorError, isCocoonError } from "../../errors.js";
import { chooseAccelerator, type AccelChoice } from "../../host/accel.js";
import { hostTscKhz, isProcessAlive } from "../../host/proc.js";
import {
  describeExit,
  ManagedProcess,
  pidStartTime,
  terminatePid,
  type WatchedProcess,
  type EscalationStep,
  type ExitStatus,
} from "../../host/process.js";
import { silentLogger } from "../../log.js";
import { withLock } from "../../store/lock.js";
import { startMonitor } from "../../monitor/client.js";
import { awaitMonitorGone } from "../../monitor/reap.js";
import { OWNER_ENV } from "../../monitor/spec.js";
import {
  buildQemuArgs,
  QEMU_MACHINE_TYPES,
  type QemuDrive,
  type QemuNic,
  type QemuMachineType,
  type QemuVmSpec,
} from "../../vmm/qemu/cmdline.js";
import { QmpClient } from "../../vmm/qemu/qmp.js";
import { verifyAsset } from "../assets.js";
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
import { kernelCmdline, mergeParams, type Param } from "../params.js";
import type { Capabilities, VcpuThreadIds } from "../types.js";
import { lastLines, readTail, watchForPanic } from "./console.js";
import {
  maxMemoryMiB,
  resizeMemory as resizeGuestMemory,
  resizeVcpus as resizeGuestVcpus,
} from "./resize.js";
import { checkNetDevice, coldNic, hotplugNic, hotunplugNic, nicSlotSchema, vhostUsable } from "./nics.js";
import { netnsLaunchPrefix } from "../../network/netns.js";
import { applyBootMode, bootModeFor, loadState, saveState, type QemuBootMode } from "./migration.js";

/** virtio-serial ports for the agent: each carries one host session at a time. */
export const AGENT_PORTS = 4;
const SCSI_CONTROLLER = "scsi0";
/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const UNIX_PATH_MAX = 107;
const MAX_SCSI_LUN = 255;

const blockSlotSchema = z.object({
  id: z.string(),
  lun: z.number(),
  path: z.string(),
  readOnly: z.boolean(),
});
const daemonSchema = z.object({ pid: z.number(), startTime: z.number().optional(), tag: z.string() });
const driverStateSchema = z.object({
  vmDir: z.string(),
  virtiofsd: z.array(daemonSchema).default([]),
  machine: z.enum(["microvm", "q35", "pc"]),
  accelerator: z.enum(["kvm", "tcg"]).optional(),
  block: z.array(blockSlotSchema),
  paused: z.boolean(),
  // Resource control: what live resize plugged in (resize.ts)
  cpus: z.array(z.string()).default([]),
  cpuUnplugged: z.boolean().default(false),
  memoryUnplugged: z.boolean().default(false),
  dimms: z.array(z.object({ id: z.string(), sizeMiB: z.number() })).default([]),
  sharedMemory: z.boolean().default(false),
  // Networking: NICs on taps (nics.ts)
  nics: z.array(nicSlotSchema).default([]),
});
type DriverState = z.infer<typeof driverStateSchema>;

/** Kernel parameters cocoon always gives a QEMU guest; configured ones override by key. */
async function fileExists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

function baseKernelParams(machine: QemuMachineType, debug: boolean): Param[] {
  const params: Param[] = [
    { key: "console", value: "ttyS0" },
    { key: "root", value: "/dev/vda" },
    { key: "rootfstype", value: "ext4" },
    { key: "ro", value: "" },
    { key: "panic", value: "1" },
    { key: "reboot", value: "k" },
    { key: "cgroup_no_v1", value: "all" },
  ];
  // microvm without PCIe has no PCI host bridge; stop the kernel from probing for one.
  if (machine === "microvm") params.push({ key: "pci", value: "off" });
  if (!debug) params.push({ key: "quiet", value: "" });
  else params.push({ key: "cocoon.debug", value: "1" });
  return params;
}

/**
 * The QEMU driver: builds the command line, runs QEMU detached (so the VM outlives the cocoon
 * process that started it), drives it over QMP and hands the sandbox an agent channel made
 * of virtio-serial ports. Every file it creates lives in the VM directory, which cleanup
 * removes.
 */
export class QemuHypervisor implements Hypervisor {
  readonly type = "qemu" as const;
  private config: HypervisorConfig | undefined;
  private id = "";
  private vmDir = "";
  private logger: Logger = silentLogger();
  private guestReady: CreateVmOptions["guestReady"];
  private placement: CreateVmOptions["placement"];
  /** QEMU, watched by its monitor (see src/monitor): it outlives us, its exit is recorded. */
  private process: WatchedProcess | undefined;
  private pid = 0;
  private pidStart: number | undefined;
  private accel: AccelChoice | undefined;
  private pending: Device[] = [];
  private state: DriverState | undefined;
  private qmp: QmpClient | undefined;
  /** virtiofsd processes this driver instance started. */
  private daemons: ManagedProcess[] = [];
  /** VM templates and snapshots: where the VM's state comes from (migration.ts). */
  private bootMode: QemuBootMode = { kind: "cold" };
  /** Networking: the namespace QEMU runs in (it opens its taps there by name). */
  private netnsPath: string | undefined;

  private get machine(): QemuMachineType {
    return (this.config?.hypervisorMachineType || "microvm") as QemuMachineType;
  }

  private file(name: string): string {
    return path.join(this.vmDir, name);
  }
  get qmpSocket(): string {
    return this.file("qmp.sock");
  }
  get consoleSocket(): string {
    return this.file("console.sock");
  }
  get consoleLog(): string {
    return this.file("console.log");
  }
  private agentSocket(i: number): string {
    return this.file(`agent.${i}.sock`);
  }
  private virtiofsSocket(tag: string): string {
    return this.file(`vfs-${tag}.sock`);
  }

  async createVM(options: CreateVmOptions): Promise<void> {
    const config = validateHypervisorConfig(options.config);
    const machine = (config.hypervisorMachineType || "microvm") as QemuMachineType;
    if (!QEMU_MACHINE_TYPES.includes(machine)) {
      throw new ConfigError(
        "ERR_INVALID_CONFIG",
        `unsupported QEMU machine type "${config.hypervisorMachineType}": use one of ${QEMU_MACHINE_TYPES.join(", ")}`,
      );
    }
    if (config.sharedFS === "virtio-fs" && machine === "pc") {
      throw new ConfigError("ERR_INVALID_CONFIG", "virtio-fs needs the microvm or q35 machine");
    }
    this.config = config;
    this.id = options.id;
    this.vmDir = options.paths.vmDir;
    this.logger = (options.logger ?? silentLogger()).child({ hypervisor: "qemu", sandbox: options.id });
    this.guestReady = options.guestReady;
    this.placement = options.placement;
    this.netnsPath = options.netnsPath;
    this.bootMode = bootModeFor(
      config,
      options.restoreFrom
        ? {
            statePath: path.join(options.restoreFrom.dir, "state"),
            namedRam: options.restoreFrom.namedRam ?? false,
          }
        : undefined,
    );
    const longest = [this.qmpSocket, this.consoleSocket, this.agentSocket(AGENT_PORTS - 1) + ".lock"].sort(
      (a, b) => b.length - a.length,
    )[0]!;
    if (Buffer.byteLength(longest) > UNIX_PATH_MAX) {
      throw new ConfigError(
        "ERR_INVALID_CONFIG",
        `the VM socket path ${longest} is ${Buffer.byteLength(longest)} bytes, over the ${UNIX_PATH_MAX}-byte unix socket limit`,
        { hint: "use a shorter state root (--root) or sandbox id" },
      );
    }
    this.state = {
      vmDir: this.vmDir,
      machine,
      block: [],
      paused: false,
      virtiofsd: [],
      cpus: [],
      cpuUnplugged: false,
      memoryUnplugged: false,
      dimms: [],
      sharedMemory: false,
      nics: [],
    };
  }

  private requireConfig(): HypervisorConfig {
    if (!this.config || !this.state)
      throw new HypervisorError("ERR_INVALID_STATE", "the QEMU VM was not created (call createVM first)");
    return this.config;
  }

  private isRunning(): boolean {
    return this.pid > 0;
  }

  async addDevice(device: Device): Promise<void> {
    this.requireConfig();
    if (this.isRunning()) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        "cold-plug devices must be added before the VM starts; use hotplug",
      );
    }
    if (device.type === "net") checkNetDevice(device);
    if (!["block", "fs", "serial", "vhost-user", "net"].includes(device.type)) {
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `the QEMU driver cannot cold-plug ${device.type} devices yet`,
      );
    }
    if (device.type === "fs" && !/^[A-Za-z0-9_.-]{1,31}$/.test(device.tag)) {
      throw new HypervisorError(
        "ERR_INVALID_ARGUMENT",
        `invalid mount tag "${device.tag}": 1-31 letters, digits, '_', '.' or '-'`,
      );
    }
    this.pending.push(device);
  }

  /** The structured VM description for QEMU. */
  async buildSpec(accel: "kvm" | "tcg", tscKhz?: number): Promise<QemuVmSpec> {
    const config = this.requireConfig();
    const machine = this.machine;
    const image = assetPath(config, "image");
    const initrd = assetPath(config, "initrd");
    const drives: QemuDrive[] = [];
    if (image) {
      drives.push({ id: "rootfs", file: image, format: "raw", readOnly: true, bus: "virtio-blk" });
    }
    for (const d of this.pending) {
      if (d.type === "block") {
        const lun = this.allocateLun(d.id, d.path, d.readOnly ?? false);
        drives.push({
          id: `drv-${d.id}`,
          file: d.path,
          format: d.format ?? "raw",
          readOnly: d.readOnly ?? false,
          bus: "scsi",
          lun,
          ...(config.blockDeviceCacheSet
            ? { cacheDirect: config.blockDeviceCacheDirect, cacheNoFlush: config.blockDeviceCacheNoflush }
            : {}),
        });
      }
    }
    const params = mergeParams(
      baseKernelParams(machine, config.debug),
      image ? [] : [{ key: "rdinit", value: "/sbin/init" }],
      // Under TCG the guest reads the host TSC; telling it the rate skips a calibration that
      // hangs the boot about one time in eight on a busy host (see hostTscKhz).
      accel === "tcg" && tscKhz ? [{ key: "tsc_early_khz", value: String(tscKhz) }] : [],
      config.kernelParams,
    );
    if (!image)
      params.splice(
        params.findIndex((p) => p.key === "root"),
        1,
      );
    return {
      name: `sandbox-${this.id}`,
      machine: {
        type: machine,
        accel,
        extraOptions: config.machineAccelerators ? config.machineAccelerators.split(",").filter(Boolean) : [],
      },
      cpu: { model: accel === "kvm" ? "host" : "max" },
      smp: { cpus: config.numVCPUs, maxCpus: config.defaultMaxVCPUs },
      memory: {
        sizeMiB: config.memorySize,
        slots: config.memSlots,
        maxMiB: machine === "microvm" ? config.memorySize : await maxMemoryMiB(config),
        // vhost-user devices (virtio-fs) map guest RAM: it must be a shared memfd.
        shared: this.pending.some(
          (d) => (d.type === "fs" && d.fsType === "virtio-fs") || d.type === "vhost-user",
        ),
        prealloc: config.memPrealloc,
        hugePages: config.hugePages,
      },
      kernel: {
        path: assetPath(config, "kernel"),
        ...(initrd ? { initrd } : {}),
        append: kernelCmdline(params),
      },
      drives,
      scsiController: { id: SCSI_CONTROLLER },
      // One port more than clients use: the monitor's own (it waits on the main process there).
      serialPorts: Array.from({ length: AGENT_PORTS + 1 }, (_, i) => ({
        id: `agent${i}`,
        name: `cocoon.agent.${i}`,
        socketPath: this.agentSocket(i),
      })),
      console: { socketPath: this.consoleSocket, logFile: this.consoleLog },
      qmpSocket: this.qmpSocket,
      pidFile: this.file("qemu.pid"),
      shares9p: this.pending.flatMap((d) =>
        d.type === "fs" && d.fsType === "virtio-9p"
          ? [{ id: `fs-${d.tag}`, path: d.hostPath, tag: d.tag, readOnly: d.readOnly ?? false }]
          : [],
      ),
      virtiofs: this.pending.flatMap((d) => {
        if (d.type === "vhost-user" && d.kind === "fs")
          return [{ id: `vfs-${d.id}`, socketPath: d.socketPath, tag: d.tag ?? d.id, queueSize: 1024 }];
        if (d.type === "fs" && d.fsType === "virtio-fs")
          return [
            { id: `vfs-${d.tag}`, socketPath: this.virtiofsSocket(d.tag), tag: d.tag, queueSize: 1024 },
          ];
        return [];
      }),
      ...(config.entropySource ? { rng: { source: config.entropySource } } : {}),
      nics: await this.coldNics(accel),
      pcieRootPorts: machine === "q35" ? Math.max(1, config.defaultBridges) : 0,
      extraArgs: config.hypervisorParams.flatMap((p) => (p.value ? [p.key, p.value] : [p.key])),
    };
  }

  private async coldNics(accel: "kvm" | "tcg"): Promise<QemuNic[]> {
    const vhost = await vhostUsable(accel);
    const nics = this.pending.flatMap((d) => (d.type === "net" ? [d] : []));
    this.state!.nics = nics.map((d) => ({ id: d.id, tap: d.tapName, mac: d.mac }));
    return nics.map((d) => coldNic(d, vhost));
  }

  private allocateLun(id: string, file: string, readOnly: boolean): number {
    const state = this.state!;
    if (state.block.some((b) => b.id === id)) {
      throw new HypervisorError("ERR_ALREADY_EXISTS", `a block device with id ${id} is already attached`);
    }
    const used = new Set(state.block.map((b) => b.lun));
    let lun = 0;
    while (used.has(lun)) lun++;
    if (lun > MAX_SCSI_LUN)
      throw new HypervisorError("ERR_RESOURCE_EXHAUSTED", `all ${MAX_SCSI_LUN + 1} SCSI LUNs are in use`);
    state.block.push({ id, lun, path: file, readOnly });
    return lun;
  }

  async startVM(timeoutMs: number): Promise<void> {
    const config = this.requireConfig();
    if (this.isRunning()) throw new HypervisorError("ERR_INVALID_STATE", "the QEMU VM is already running");
    const deadline = Date.now() + timeoutMs;
    // Assets first: a missing or altered file is a clear error before anything is spawned.
    await verifyAsset({ type: "hypervisor", path: config.hypervisorPath });
    for (const type of ["kernel", "image", "initrd"] as const) {
      const p = assetPath(config, type);
      if (p) await verifyAsset(config.customAssets[type] ?? { type, path: p });
    }
    this.accel = await chooseAccelerator(config.accelerator);
    const spec = await this.buildSpec(this.accel.accelerator, await hostTscKhz());
    this.state!.sharedMemory = spec.memory.shared ?? false;
    applyBootMode(spec, this.bootMode);
    this.state!.accelerator = this.accel.accelerator;
    await rm(this.vmDir, { recursive: true, force: true });
    await mkdir(this.vmDir, { recursive: true, mode: 0o700 });
    try {
      await this.startVirtiofsDaemons(Math.max(1, deadline - Date.now()));
    } catch (err) {
      await this.cleanup();
      throw err;
    }
    const args = buildQemuArgs(spec);
    this.logger.info({ args, accel: this.accel }, "starting QEMU");
    try {
      this.process = await startMonitor({
        vmDir: this.vmDir,
        // Networking: QEMU runs inside the sandbox's namespace, where its taps are.
        launch: this.netnsPath
          ? {
              file: "nsenter",
              args: [...netnsLaunchPrefix(this.netnsPath), config.hypervisorPath, ...args],
              logPath: this.file("qemu.log"),
            }
          : { file: config.hypervisorPath, args, logPath: this.file("qemu.log") },
        consoleLog: this.consoleLog,
        agent: { kind: "serial", paths: [this.agentSocket(AGENT_PORTS)] },
        // The guest blocks for ever on a dead virtiofsd: the monitor stops the VM if one dies.
        helpers: this.state!.virtiofsd.map((d) => ({
          name: "virtiofsd",
          pid: d.pid,
          ...(d.startTime !== undefined ? { startTime: d.startTime } : {}),
        })),
      });
    } catch (err) {
      await this.cleanup();
      throw err;
    }
    this.pid = this.process.pid;
    this.pidStart = await pidStartTime(this.pid);
    const watch = watchForPanic(this.consoleLog);
    const ac = new AbortController();
    try {
      await this.placement?.process(this.pid, "vmm");
      await this.raceBoot(this.bootSequence(deadline, ac.signal), watch.panic, deadline, ac);
      this.pending = [];
    } catch (err) {
      ac.abort();
      await this.abortStart();
      throw err;
    } finally {
      watch.stop();
    }
  }

  /**
   * One virtiofsd per shared directory, started before QEMU (QEMU connects to its socket at
   * startup). Each exits by itself when QEMU goes away; stop and cleanup make sure of it.
   */
  private async startVirtiofsDaemons(timeoutMs: number): Promise<void> {
    const config = this.requireConfig();
    const shares = this.pending.filter(
      (d): d is Extract<Device, { type: "fs" }> => d.type === "fs" && d.fsType === "virtio-fs",
    );
    if (shares.length === 0) return;
    await verifyAsset({ type: "hypervisor", path: config.virtioFSDaemon });
    for (const share of shares) {
      const socket = this.virtiofsSocket(share.tag);
      const args = [
        `--socket-path=${socket}`,
        "-o",
        `source=${share.hostPath}`,
        "-o",
        `cache=${config.virtioFSCache || "auto"}`,
        "-f",
      ];
      if (share.readOnly) args.push("-o", "modcaps=-sys_admin");
      const logFd = openSync(this.file(`virtiofsd-${share.tag}.log`), "a");
      let daemon: ManagedProcess;
      try {
        daemon = await ManagedProcess.spawn(config.virtioFSDaemon, args, {
          detached: true,
          // Tagged with its VM: a crash cleanup finds it even if nothing else recorded it.
          env: { ...process.env, [OWNER_ENV]: this.vmDir },
          stdout: logFd,
          stderr: logFd,
        });
      } finally {
        closeSync(logFd);
      }
      this.daemons.push(daemon);
      await this.placement?.process(daemon.pid, "helper");
      this.state!.virtiofsd.push({
        pid: daemon.pid,
        tag: share.tag,
        ...(await pidStartTime(daemon.pid).then((t) => (t === undefined ? {} : { startTime: t }))),
      });
      const deadline = Date.now() + Math.min(timeoutMs, 10_000);
      while (!(await fileExists(socket))) {
        if (!daemon.running || Date.now() >= deadline) {
          const log = lastLines(await readTail(this.file(`virtiofsd-${share.tag}.log`)), 4);
          throw new HypervisorError(
            "ERR_VMM_START",
            `virtiofsd for ${share.hostPath} ${daemon.running ? "did not create its socket in time" : describeExit(daemon.exitStatus!)}${log ? `: ${log}` : ""}`,
          );
        }
        await sleep(10);
      }
    }
  }

  /** QMP up, then (if the sandbox asked) the guest agent's answer. */
  private async bootSequence(deadline: number, signal: AbortSignal): Promise<void> {
    const qmp = await this.connectQmp(Math.max(1, deadline - Date.now()), signal);
    const status = (await qmp.execute("query-status")) as { status?: string };
    this.logger.debug({ status }, "QMP connected");
    if (this.placement) await this.placement.vcpuThreads(await this.vcpuThreadIds(qmp));
    // A clone or a restored snapshot: load the saved state before the guest runs.
    if (this.bootMode.kind === "clone" || this.bootMode.kind === "snapshot")
      await loadState(qmp, this.bootMode);
    // Keep QMP free for other cocoon processes: it takes one client at a time.
    this.disconnect();
    if (this.guestReady) await this.guestReady(this.agentChannel(), signal);
  }

  /** Whichever comes first: boot done, QEMU exit, kernel panic, timeout. */
  private async raceBoot(
    boot: Promise<void>,
    panic: Promise<string>,
    deadline: number,
    ac: AbortController,
  ): Promise<void> {
    const proc = this.process!;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      boot.then(
        () => ({ kind: "ok" as const }),
        (err: unknown) => ({ kind: "error" as const, err }),
      ),
      proc.exited.then((status) => ({ kind: "exited" as const, status })),
      panic.then((line) => ({ kind: "panic" as const, line })),
      new Promise<{ kind: "timeout" }>((resolve) => {
        timer = setTimeout(() => resolve({ kind: "timeout" }), Math.max(0, deadline - Date.now()));
      }),
    ]);
    clearTimeout(timer);
    if (outcome.kind === "ok") return;
    ac.abort();
    const consoleTail = lastLines(await readTail(this.consoleLog), 8);
    if (outcome.kind === "panic") {
      throw new HypervisorError("ERR_GUEST_PANIC", `the guest kernel panicked during boot: ${outcome.line}`, {
        details: { console: consoleTail },
      });
    }
    if (outcome.kind === "exited") {
      // A panic with panic=1 ends in a reboot, which -no-reboot turns into an exit.
      const panicLine = /Kernel panic - not syncing[^\n]*/.exec(await readTail(this.consoleLog, 64 * 1024));
      if (panicLine) {
        throw new HypervisorError(
          "ERR_GUEST_PANIC",
          `the guest kernel panicked during boot: ${panicLine[0].trim()}`,
          {
            details: { console: consoleTail },
          },
        );
      }
      throw await this.exitError(outcome.status, consoleTail);
    }
    if (outcome.kind === "timeout") {
      throw this.timeoutError(deadline, consoleTail);
    }
    // boot failed: QEMU may have died at the same time, which explains the failure better
    const exited = await proc.waitFor(200);
    if (exited) throw await this.exitError(exited, consoleTail, outcome.err);
    if (
      isCocoonError(outcome.err) &&
      (outcome.err.code === "ERR_AGENT_TIMEOUT" || outcome.err.code === "ERR_VMM_TIMEOUT")
    ) {
      throw this.timeoutError(deadline, consoleTail, outcome.err);
    }
    throw outcome.err;
  }

  /** QEMU exited before the guest was up: its stderr says why. */
  private async exitError(
    status: ExitStatus,
    consoleTail: string,
    cause?: unknown,
  ): Promise<HypervisorError> {
    const stderr = lastLines(await readTail(this.file("qemu.log")), 6);
    const hint = this.pvmHint();
    return new HypervisorError(
      "ERR_VMM_START",
      `QEMU ${describeExit(status)} during boot${stderr ? `: ${stderr}` : ""}`,
      {
        cause,
        details: { code: status.code, signal: status.signal, stderr, console: consoleTail },
        ...(hint ? { hint } : {}),
      },
    );
  }

  /** On a PVM host with KVM forced, a normal guest kernel cannot boot: say so and what to do. */
  private pvmHint(): string | undefined {
    const accel = this.accel;
    if (accel?.accelerator === "kvm" && accel.pvmHost) {
      return `${accel.warning ?? "this host's KVM is PVM"}; set accelerator = "tcg" (or "auto") in [hypervisor.qemu]`;
    }
    return undefined;
  }

  private timeoutError(deadline: number, consoleTail: string, cause?: unknown): HypervisorError {
    const accel = this.accel;
    let hint = this.pvmHint() ?? "look at the console log (cocoon logs) or raise the agent's dial_timeout";
    if (!this.pvmHint() && !consoleTail) {
      hint = "the guest printed nothing on its console: check the kernel and the accelerator";
    }
    return new HypervisorError(
      "ERR_VMM_TIMEOUT",
      `the VM did not come up in time: no answer from the guest agent (boot deadline passed ${new Date(deadline).toISOString()})`,
      {
        cause,
        hint,
        details: { accelerator: accel?.accelerator, console: consoleTail },
      },
    );
  }

  /** A failed start leaves nothing behind: kill QEMU, remove its directory. */
  private async abortStart(): Promise<void> {
    this.disconnect();
    if (this.process?.running) await this.process.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
    await this.cleanup();
  }

  private async connectQmp(timeoutMs = 10_000, signal?: AbortSignal): Promise<QmpClient> {
    if (this.qmp && !this.qmp.closed) return this.qmp;
    this.qmp = await QmpClient.connect(this.qmpSocket, { timeoutMs, ...(signal ? { signal } : {}) });
    this.qmp.once("close", () => (this.qmp = undefined));
    return this.qmp;
  }

  /** Runs `fn` with QMP, holding the QMP lock so cocoon processes take turns (QMP takes one client). */
  private async withQmp<T>(fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
    this.requireRunning();
    return withLock(
      `${this.qmpSocket}.lock`,
      async () => {
        const qmp = await this.connectQmp(5_000);
        try {
          return await fn(qmp);
        } finally {
          this.disconnect();
        }
      },
      { timeoutMs: 30_000, purpose: "QMP" },
    );
  }

  private requireRunning(): void {
    this.requireConfig();
    if (!this.isRunning()) throw new HypervisorError("ERR_INVALID_STATE", "the QEMU VM is not running");
  }

  async stopVM(options: { waitOnly?: boolean; graceful?: boolean } = {}): Promise<void> {
    this.requireConfig();
    if (!this.isRunning()) return;
    const pid = this.pid;
    if (options.waitOnly) {
      if (this.process) while (!(await this.process.waitFor(1_000)));
      else while (await isProcessAlive(pid, this.pidStart)) await sleep(50);
    } else {
      const steps: EscalationStep[] = [];
      const paused = this.state?.paused ?? false;
      if (!paused && options.graceful !== false) {
        steps.push({
          name: "powerdown",
          action: () => this.qmpFireAndForget("system_powerdown"),
          timeoutMs: 15_000,
        });
      }
      steps.push({ name: "quit", action: () => this.qmpFireAndForget("quit"), timeoutMs: 5_000 });
      steps.push({ name: "SIGTERM", signal: "SIGTERM", timeoutMs: 5_000 });
      steps.push({ name: "SIGKILL", signal: "SIGKILL", timeoutMs: 5_000 });
      if (this.process) await this.process.terminate(steps);
      else
        await terminatePid(pid, {
          ...(this.pidStart !== undefined ? { startTime: this.pidStart } : {}),
          steps,
        });
    }
    this.disconnect();
    this.pid = 0;
    this.process = undefined;
    await this.stopDaemons();
    await awaitMonitorGone(this.vmDir);
    if (this.state) this.state.paused = false;
  }

  /** Sends a QMP command whose effect is the VM going away: its answer may never come. */
  private async qmpFireAndForget(command: string): Promise<void> {
    const qmp = await this.connectQmp(2_000);
    await qmp.execute(command, undefined, 2_000).catch(() => undefined);
  }

  async pauseVM(): Promise<void> {
    await this.withQmp(async (qmp) => {
      await qmp.execute("stop");
    });
    this.state!.paused = true;
  }

  async resumeVM(): Promise<void> {
    await this.withQmp(async (qmp) => {
      await qmp.execute("cont");
    });
    this.state!.paused = false;
  }

  /** A template (bootToBeTemplate): pauses the VM and writes its device state (Kata's SaveVM). */
  async saveVM(): Promise<void> {
    const config = this.requireConfig();
    if (!config.bootToBeTemplate) {
      throw new HypervisorError("ERR_NOT_SUPPORTED", "only a VM booted to be a template can be saved");
    }
    await this.withQmp((qmp) => saveState(qmp, config.devicesStatePath, { ignoreShared: true }));
    this.state!.paused = true;
  }

  /** Snapshots: pauses the VM and writes device state and RAM to `<dir>/state`; it stays paused. */
  async snapshotVM(dir: string): Promise<void> {
    await this.withQmp((qmp) => saveState(qmp, path.join(dir, "state"), { ignoreShared: false }));
    this.state!.paused = true;
  }

  async hotplugAddDevice(device: Device): Promise<Device> {
    this.requireRunning();
    if (device.type === "net") {
      checkNetDevice(device);
      const state = this.state!;
      const rootPorts = this.machine === "q35" ? Math.max(1, this.requireConfig().defaultBridges) : 0;
      const vhost = await vhostUsable(state.accelerator ?? "tcg");
      const slot = await this.withQmp((qmp) =>
        hotplugNic(qmp, this.machine, device, state.nics, rootPorts, vhost),
      );
      state.nics.push(slot);
      return device;
    }
    if (device.type !== "block") {
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `hot-plugging ${device.type} devices into QEMU is not implemented yet`,
      );
    }
    return this.hotplugBlock(device);
  }

  private async hotplugBlock(device: BlockDevice): Promise<BlockDevice> {
    const config = this.requireConfig();
    const readOnly = device.readOnly ?? false;
    const lun = this.allocateLun(device.id, device.path, readOnly);
    const nodeName = `drv-${device.id}`;
    try {
      await this.withQmp(async (qmp) => {
        await qmp.execute("blockdev-add", {
          driver: device.format ?? "raw",
          "node-name": nodeName,
          "read-only": readOnly,
          file: {
            driver: "file",
            filename: device.path,
            ...(config.blockDeviceCacheSet
              ? {
                  cache: {
                    direct: config.blockDeviceCacheDirect,
                    "no-flush": config.blockDeviceCacheNoflush,
                  },
                }
              : {}),
          },
        });
        try {
          await qmp.execute("device_add", {
            driver: "scsi-hd",
            id: `dev-${device.id}`,
            drive: nodeName,
            bus: `${SCSI_CONTROLLER}.0`,
            channel: 0,
            "scsi-id": 0,
            lun,
          });
        } catch (err) {
          await qmp.execute("blockdev-del", { "node-name": nodeName }).catch(() => undefined);
          throw err;
        }
      });
    } catch (err) {
      this.state!.block = this.state!.block.filter((b) => b.id !== device.id);
      throw err;
    }
    return { ...device, index: lun, guestPath: `0:0:0:${lun}` };
  }

  async hotplugRemoveDevice(device: Device): Promise<Device> {
    this.requireRunning();
    if (device.type === "net") {
      const slot = this.state!.nics.find((n) => n.id === device.id);
      if (!slot) throw new HypervisorError("ERR_NOT_FOUND", `no NIC ${device.id}`);
      if (this.machine === "microvm")
        throw new HypervisorError(
          "ERR_NOT_SUPPORTED",
          "the microvm machine has no PCI hotplug: NICs cannot be removed live",
        );
      await this.withQmp((qmp) => hotunplugNic(qmp, slot));
      this.state!.nics = this.state!.nics.filter((n) => n !== slot);
      return device;
    }
    if (device.type !== "block") {
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `hot-unplugging ${device.type} devices from QEMU is not implemented yet`,
      );
    }
    const slot = this.state!.block.find((b) => b.id === device.id);
    if (!slot) throw new HypervisorError("ERR_NOT_FOUND", `no hot-plugged block device ${device.id}`);
    await this.withQmp(async (qmp) => {
      const deleted = qmp.waitForEvent("DEVICE_DELETED", (d) => d.device === `dev-${device.id}`, 30_000);
      deleted.catch(() => undefined);
      await qmp.execute("device_del", { id: `dev-${device.id}` });
      await deleted;
      await qmp.execute("blockdev-del", { "node-name": `drv-${device.id}` });
    });
    this.state!.block = this.state!.block.filter((b) => b.id !== device.id);
    return device;
  }

  // Resource control: live resize through ACPI hotplug (resize.ts); microvm has none.
  private requireHotplug(what: string): HypervisorConfig {
    const config = this.requireConfig();
    if (this.machine === "microvm") {
      throw new HypervisorError("ERR_NOT_SUPPORTED", `the microvm machine cannot hot-plug ${what}`, {
        hint: 'create the sandbox with machine_type = "q35" to resize it live',
      });
    }
    this.requireRunning();
    return config;
  }

  async resizeMemory(memoryMB: number, memoryBlockSizeMB: number): Promise<ResizeMemoryResult> {
    const config = this.requireHotplug("memory");
    const memory = await this.withQmp((qmp) =>
      resizeGuestMemory(qmp, this.state!, config, memoryMB, memoryBlockSizeMB),
    );
    return { memoryMB: memory };
  }

  async resizeVCPUs(vcpus: number): Promise<ResizeVcpusResult> {
    const config = this.requireHotplug("vCPUs");
    const oldVCPUs = config.numVCPUs + this.state!.cpus.length;
    const newVCPUs = await this.withQmp((qmp) =>
      resizeGuestVcpus(qmp, this.state!, config.numVCPUs, config.defaultMaxVCPUs, vcpus),
    );
    return { oldVCPUs, newVCPUs };
  }

  async getVMConsole(): Promise<string> {
    this.requireConfig();
    return this.consoleSocket;
  }

  agentChannel(): AgentChannel {
    return { kind: "serial", paths: Array.from({ length: AGENT_PORTS }, (_, i) => this.agentSocket(i)) };
  }

  disconnect(): void {
    this.qmp?.close();
    this.qmp = undefined;
  }

  capabilities(): Capabilities {
    return {
      blockDeviceHotplug: true,
      fsSharing: this.config?.sharedFS !== "none",
      networkDeviceHotplug: this.machine !== "microvm",
      multiQueue: false,
      vcpuHotplug: this.machine !== "microvm",
      memoryHotplug: this.machine !== "microvm",
    };
  }

  hypervisorConfig(): HypervisorConfig {
    return this.requireConfig();
  }

  async getThreadIDs(): Promise<VcpuThreadIds> {
    const cpus = (await this.withQmp((qmp) => qmp.execute("query-cpus-fast"))) as {
      "cpu-index": number;
      "thread-id": number;
    }[];
    return { vcpus: new Map(cpus.map((c) => [c["cpu-index"], c["thread-id"]])) };
  }

  private async vcpuThreadIds(qmp: QmpClient): Promise<number[]> {
    const cpus = (await qmp.execute("query-cpus-fast")) as { "thread-id": number }[];
    return cpus.map((c) => c["thread-id"]);
  }

  async cleanup(): Promise<void> {
    this.disconnect();
    if (this.process?.running) {
      // cleanup of a VM that still runs (an error path): it must not outlive its directory
      await this.process.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
    } else if (this.pid > 0 && (await isProcessAlive(this.pid, this.pidStart))) {
      await terminatePid(this.pid, {
        ...(this.pidStart !== undefined ? { startTime: this.pidStart } : {}),
        steps: [{ signal: "SIGKILL", timeoutMs: 5_000 }],
      });
    }
    this.pid = 0;
    this.process = undefined;
    await this.stopDaemons();
    // The monitor leaves once it has recorded QEMU's end: wait for it before its directory goes.
    if (this.vmDir) await awaitMonitorGone(this.vmDir);
    if (this.vmDir) await rm(this.vmDir, { recursive: true, force: true, maxRetries: 3 });
  }

  /** virtiofsd normally exits with QEMU; anything still there is terminated. */
  private async stopDaemons(): Promise<void> {
    for (const d of this.daemons.splice(0))
      if (d.running) await d.terminate([{ signal: "SIGTERM", timeoutMs: 2_000 }]);
    for (const d of this.state?.virtiofsd ?? []) {
      if (await isProcessAlive(d.pid, d.startTime)) {
        await terminatePid(d.pid, {
          ...(d.startTime !== undefined ? { startTime: d.startTime } : {}),
          steps: [{ signal: "SIGTERM", timeoutMs: 2_000 }],
        });
      }
    }
    if (this.state) this.state.virtiofsd = [];
  }

  getPids(): number[] {
    return this.pid > 0 ? [this.pid, ...(this.state?.virtiofsd ?? []).map((d) => d.pid)] : [];
  }

  /** The QEMU exit status, when this process started it and it has exited. */
  exitStatus(): ExitStatus | undefined {
    return this.process?.exitStatus;
  }

  async check(): Promise<void> {
    this.requireRunning();
    if (!(await isProcessAlive(this.pid, this.pidStart))) {
      throw new HypervisorError("ERR_VMM_EXITED", `QEMU (pid ${this.pid}) is not running`);
    }
    await this.withQmp((qmp) => qmp.execute("query-status"));
  }

  save(): HypervisorState {
    return {
      type: "qemu",
      pid: this.pid,
      ...(this.pidStart !== undefined ? { pidStartTime: this.pidStart } : {}),
      blockIndexMap: (this.state?.block ?? []).map((b) => b.lun),
      hotpluggedVCPUs: this.state?.cpus.length ?? 0,
      hotpluggedMemoryMB: (this.state?.dimms ?? []).reduce((n, d) => n + d.sizeMiB, 0),
      ...(this.state?.virtiofsd[0] ? { virtiofsDaemonPid: this.state.virtiofsd[0].pid } : {}),
      driver: { ...(this.state ?? {}) },
    };
  }

  load(saved: HypervisorState): void {
    this.requireConfig();
    const parsed = driverStateSchema.safeParse(saved.driver);
    if (!parsed.success)
      throw new HypervisorError(
        "ERR_STATE_CORRUPT",
        `persisted QEMU state is malformed: ${parsed.error.issues[0]?.message}`,
      );
    this.state = parsed.data;
    this.vmDir = parsed.data.vmDir;
    this.pid = saved.pid;
    this.pidStart = saved.pidStartTime;
  }
}
