import { closeSync, openSync } from "node:fs";
import { copyFile, link, mkdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { ConfigError, HypervisorError, isCocoonError, messageOf } from "../../errors.js";
import { mountOf } from "../../host/mount.js";
import { isProcessAlive } from "../../host/proc.js";
import { terminatePid, type EscalationStep, type ManagedProcess } from "../../host/process.js";
import { silentLogger } from "../../log.js";
import { FirecrackerClient } from "../../vmm/firecracker/client.js";
import { Jail } from "../../vmm/firecracker/jail.js";
import { binaryVersion, jailLayout, type JailLayout } from "../../vmm/firecracker/jailer.js";
import { placeForFirecracker } from "./jail-visibility.js";
import { DEFAULT_KVM_DEVICE, instanceStartFailure, requireKvm } from "../../vmm/firecracker/kvm.js";
import { fileTail, launchFirecracker, waitForApi } from "../../vmm/firecracker/launch.js";
import { snapshotCreateBody } from "../../vmm/firecracker/snapshot.js";
import { vcpuThreads } from "../../vmm/firecracker/threads.js";
import { parseVersion, type FcVersion } from "../../vmm/firecracker/version.js";
import { verifyAsset } from "../assets.js";
import { assetPath, validateHypervisorConfig, type HypervisorConfig } from "../config.js";
import type { BlockDevice, Device, NetDevice, VsockDevice } from "../devices.js";
import type {
  AgentChannel,
  CreateVmOptions,
  Hypervisor,
  HypervisorState,
  ResizeMemoryResult,
  ResizeVcpusResult,
} from "../hypervisor.js";
import { requireNetns } from "../netns-launch.js";
import { kernelCmdline } from "../params.js";
import type { DriverContext } from "../registry.js";
import type { Capabilities, VcpuThreadIds } from "../types.js";
import { firecrackerKernelParams } from "./kernel-params.js";
import { firecrackerSettingsFromParams, type FirecrackerSettings } from "./settings.js";
import { parseDriverState, type DriverState, type HotplugSlot } from "./state.js";
import { balloonAmountFor, configureBalloon, setBalloon } from "./balloon.js";
import { waitForGuest, waitRunning } from "./boot-wait.js";
import { checkFcSnapshot, loadFcSnapshot, takeFcSnapshot, type FcSnapshotHost } from "./snapshot.js";

/** Placeholder drives attached before boot; block "hotplug" swaps their backing files. */
export const DRIVE_POOL_SIZE = 8;
/** The guest vsock port the agent listens on (Kata's). */
export const AGENT_VSOCK_PORT = 1024;
/** The guest CID when the sandbox gives no vsock device. */
export const DEFAULT_GUEST_CID = 3;
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const UNIX_PATH_MAX = 107;

const API_SOCKET = "/api.socket";
const VSOCK_SOCKET = "/v.sock";
const ROOTFS_DRIVE = "/rootfs";
const LOG_FILE = "/firecracker.log";
/** How long the VMM gets to bring its API up (the seed's fcTimeout). */
const VMM_API_TIMEOUT_MS = 10_000;

export interface FirecrackerDriverOptions {
  /** SIGTERM grace before SIGKILL (the seed: 15 s). */
  stopTimeoutMs?: number;
  /** Poll interval while waiting for the VMM to go away. */
  stopPollMs?: number;
  /** The KVM device checked before Firecracker is launched (default /dev/kvm). */
  kvmDevice?: string;
}

function driveId(i: number): string {
  return `drive_${i}`;
}

/** Firecracker ids (and jail directories) take letters, digits and '-' only. */
export function firecrackerId(id: string): string {
  return id.replace(/[^A-Za-z0-9-]/g, "-").slice(0, 64);
}

/** /dev/vda, ..., /dev/vdz, /dev/vdaa, ... */
export function virtioBlkName(index: number): string {
  let n = index;
  let name = "";
  do {
    name = String.fromCharCode(97 + (n % 26)) + name;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return `/dev/vd${name}`;
}

/**
 * The Firecracker driver (the seed's `firecracker` hypervisor): launches Firecracker through
 * the jailer when one is configured (directly with --api-sock otherwise), waits for its API,
 * configures machine, boot source, rootfs, a pool of placeholder drives, vsock and the queued
 * devices, and boots. Block hotplug swaps a placeholder's backing file with PATCH /drives.
 * State phases follow the seed: not-ready → api-ready → vm-ready.
 */
export class FirecrackerHypervisor implements Hypervisor {
  readonly type = "firecracker" as const;
  private config: HypervisorConfig | undefined;
  private settings: FirecrackerSettings | undefined;
  private st: DriverState | undefined;
  private jail: Jail | undefined;
  private logger: Logger;
  private guestReady: CreateVmOptions["guestReady"];
  private restoreFrom: CreateVmOptions["restoreFrom"];
  private netnsPath: string | undefined;
  private pending: Device[] = [];
  private proc: ManagedProcess | undefined;
  private pid = 0;
  private pidStart: number | undefined;
  private client: FirecrackerClient | undefined;
  /** Whether the running startVM spawned a Firecracker (whose sockets a failure then removes). */
  private launchedByThisStart = false;
  private readonly stopTimeoutMs: number;
  private readonly stopPollMs: number;
  private readonly kvmDevice: string;

  constructor(ctx?: Partial<DriverContext>, options: FirecrackerDriverOptions = {}) {
    this.logger = ctx?.logger ?? silentLogger();
    this.stopTimeoutMs = options.stopTimeoutMs ?? 15_000;
    this.stopPollMs = options.stopPollMs ?? 50;
    this.kvmDevice = options.kvmDevice ?? DEFAULT_KVM_DEVICE;
  }

  // -- creation ---------------------------------------------------------------------------

  async createVM(options: CreateVmOptions): Promise<void> {
    const config = validateHypervisorConfig(options.config);
    const settings = firecrackerSettingsFromParams(config.hypervisorParams);
    const fcPath = assetPath(config, "hypervisor");
    if (!fcPath)
      throw new ConfigError(
        "ERR_INVALID_CONFIG",
        "no Firecracker binary configured ([hypervisor.firecracker] path)",
      );
    const jailed = assetPath(config, "jailer") !== "";
    const fcId = firecrackerId(options.id);
    if (!fcId)
      throw new ConfigError("ERR_INVALID_CONFIG", `"${options.id}" cannot be turned into a Firecracker id`);
    // The seed's layout: <jail base>/<exec name>/<id>/root, with or without the jailer. The base
    // must allow exec (the jailer copies Firecracker there), unlike /run.
    const layout: JailLayout = jailLayout(options.paths.jailerBase, fcPath, fcId);
    const mount = await mountOf(options.paths.jailerBase).catch(() => undefined);
    if (jailed && mount?.options.includes("noexec")) {
      throw new ConfigError(
        "ERR_INVALID_CONFIG",
        `the jail base ${options.paths.jailerBase} is on a noexec mount (${mount.target}): the jailer copies Firecracker there and it must be executable`,
        { hint: "point lib_root (or --root) at a filesystem mounted with exec" },
      );
    }
    const socketPath = path.join(layout.root, API_SOCKET.slice(1));
    const vsockHost = path.join(layout.root, VSOCK_SOCKET.slice(1));
    // Guest-initiated vsock connections use "<uds>_<port>": keep room for the agent's port.
    for (const [what, p] of [
      ["Firecracker API socket", socketPath],
      ["vsock socket (with its _<port> suffix)", `${vsockHost}_${AGENT_VSOCK_PORT}`],
    ] as const) {
      const bytes = Buffer.byteLength(p);
      if (bytes > UNIX_PATH_MAX) {
        throw new ConfigError(
          "ERR_INVALID_CONFIG",
          `the ${what} path ${p} is ${bytes} bytes; unix sockets allow at most ${UNIX_PATH_MAX} (sun_path is 108 bytes with its NUL)`,
          { hint: "use a shorter lib_root (or --root) or a shorter sandbox id", details: { path: p, bytes } },
        );
      }
    }
    this.config = config;
    this.settings = settings;
    this.logger = (options.logger ?? this.logger).child({ hypervisor: "firecracker", sandbox: options.id });
    this.guestReady = options.guestReady;
    this.restoreFrom = options.restoreFrom;
    this.netnsPath = options.netnsPath;
    const rootFromImage = assetPath(config, "image") !== "";
    // Pool drives come after the rootfs drive (when there is one): /dev/vdb... or /dev/vda...
    const first = rootFromImage ? 1 : 0;
    this.st = {
      schema: 1,
      id: options.id,
      fcId,
      jailed,
      jailDir: layout.jailDir,
      root: layout.root,
      pidFile: layout.pidFile,
      execName: layout.execName,
      socketPath,
      vmDir: options.paths.vmDir,
      consolePath: path.join(options.paths.vmDir, "console.log"),
      logPath: path.join(layout.root, LOG_FILE.slice(1)),
      phase: "not-ready",
      paused: false,
      vsock: null,
      slots: [],
      poolGuestPaths: Array.from({ length: DRIVE_POOL_SIZE }, (_, i) => virtioBlkName(first + i)),
      resources: [],
      uid: settings.jailerUid,
      gid: settings.jailerGid,
      strategy: settings.jailResources,
    };
    this.jail = new Jail(layout, {
      jailed,
      uid: settings.jailerUid,
      gid: settings.jailerGid,
      strategy: settings.jailResources,
    });
    this.pending = [];
  }

  private requireState(): DriverState {
    if (!this.st || !this.jail)
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        "the Firecracker VM was not created (call createVM first)",
      );
    return this.st;
  }

  private requireConfig(): HypervisorConfig {
    this.requireState();
    if (!this.config)
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        "the Firecracker driver has no configuration (createVM, or load with a config)",
      );
    return this.config;
  }

  // -- devices before boot ----------------------------------------------------------------

  async addDevice(device: Device): Promise<void> {
    const st = this.requireState();
    if (!["block", "net", "vsock"].includes(device.type)) {
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `the Firecracker driver cannot cold-plug ${device.type} devices (block, net and vsock only)`,
      );
    }
    if (st.phase === "vm-ready") {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `cold-plug devices must be added before the VM boots; use hotplug for block devices`,
      );
    }
    if (st.phase === "not-ready") {
      // The seed queues devices until the API is up, then applies them in order.
      this.logger.debug({ device: device.type }, "Firecracker not ready, queueing device");
      this.pending.push(device);
      return;
    }
    await this.applyDevice(device);
  }

  /** Puts a file into the jail of the running Firecracker, checking that it sees the file (see jail-visibility.ts). */
  private place(source: string, jailPath: string, readOnly: boolean): Promise<string> {
    return placeForFirecracker(this.jail!, this.pid, source, jailPath, {
      readOnly,
      strategy: this.settings?.jailResources ?? "auto",
    });
  }

  private async applyDevice(device: Device): Promise<void> {
    const client = await this.api();
    const jail = this.jail!;
    const st = this.st!;
    if (device.type === "block") {
      const d = device as BlockDevice;
      const id = firecrackerDriveId(d.id);
      const fc = await this.place(d.path, `/blk/${id}`, d.readOnly ?? false);
      await client.putDrive({
        drive_id: id,
        path_on_host: fc,
        is_root_device: false,
        is_read_only: d.readOnly ?? false,
      });
    } else if (device.type === "net") {
      const n = device as NetDevice;
      if (n.model === "macvtap")
        throw new HypervisorError("ERR_NOT_SUPPORTED", "Firecracker takes tap devices only (no macvtap)");
      await client.putNetworkInterface({
        iface_id: firecrackerDriveId(n.id),
        host_dev_name: n.tapName,
        ...(n.mac ? { guest_mac: n.mac } : {}),
      });
    } else if (device.type === "vsock") {
      const v = device as VsockDevice;
      await client.putVsock({ guest_cid: v.guestCid, uds_path: jail.fcPath(VSOCK_SOCKET) });
      st.vsock = { guestCid: v.guestCid, jailPath: VSOCK_SOCKET, hostPath: jail.hostPath(VSOCK_SOCKET) };
    }
    st.resources = jail.resources();
  }

  // -- boot -------------------------------------------------------------------------------

  async startVM(timeoutMs: number): Promise<void> {
    const st = this.requireState();
    const config = this.requireConfig();
    if (this.pid > 0 && (await isProcessAlive(this.pid, this.pidStart))) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `the Firecracker VM ${st.id} is already running (pid ${this.pid})`,
      );
    }
    const deadline = Date.now() + timeoutMs;
    // Before the jail is built or anything runs: a missing namespace fails here, with its path.
    if (this.netnsPath !== undefined) await requireNetns(this.netnsPath, "Firecracker");
    // A snapshot this Firecracker cannot load is refused before anything is launched.
    const restore = this.restoreFrom;
    if (restore && this.pending.length > 0)
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `cannot add ${this.pending.map((d) => d.type).join(", ")} devices to a Firecracker VM restored from a snapshot: it has the devices it was snapshotted with`,
      );
    const manifest = restore
      ? await checkFcSnapshot(st, config, restore.dir, () =>
          binaryVersion(assetPath(config, "hypervisor"), "Firecracker"),
        )
      : undefined;
    await requireKvm(this.kvmDevice);
    this.launchedByThisStart = false;
    try {
      await this.fcInit(Math.min(VMM_API_TIMEOUT_MS, timeoutMs));
      if (restore && manifest) {
        await loadFcSnapshot(this.snapshotHost(), await this.api(), restore.dir, manifest);
        st.phase = "vm-ready";
        st.paused = false;
        this.logger.info({ version: st.firecrackerVersion, from: restore.dir }, "Firecracker VM restored");
        await this.awaitGuest(deadline);
      } else await this.configureAndBoot(config, deadline);
    } catch (err) {
      this.logger.warn({ err: messageOf(err) }, "Firecracker start failed, stopping it");
      await this.stopVM().catch(() => undefined);
      if (this.launchedByThisStart) await this.removeVmmSockets();
      if (isCocoonError(err)) throw err;
      throw new HypervisorError("ERR_VMM_START", `starting Firecracker failed: ${messageOf(err)}`, {
        cause: err,
      });
    }
  }

  /** Spawns Firecracker (jailed or not) and waits for its API: not-ready → api-ready. */
  private async fcInit(apiTimeoutMs: number): Promise<void> {
    const st = this.st!;
    const config = this.config!;
    const jail = this.jail!;
    for (const type of ["hypervisor", "jailer", "kernel", "image", "initrd"] as const) {
      const asset = config.customAssets[type];
      if (asset) await verifyAsset(asset);
    }
    await jail.prepare({ socketPath: st.socketPath });
    // A fresh Firecracker has none of a previous run's hotplugged drives or vsock.
    st.slots = [];
    st.vsock = null;
    delete st.snapshot;
    delete st.balloon;
    await mkdir(st.vmDir, { recursive: true, mode: 0o750 });
    // Firecracker 1.0–1.13 needs the log file to exist; it is read for error messages.
    await jail.create(LOG_FILE);
    const fcPath = assetPath(config, "hypervisor");
    const jailerPath = assetPath(config, "jailer");
    const firecrackerArgs = [
      "--api-sock",
      jail.fcPath(API_SOCKET),
      "--log-path",
      jail.fcPath(LOG_FILE),
      "--level",
      config.debug ? "Debug" : "Warning",
    ];
    const consoleFd = openSync(st.consolePath, "a", 0o640);
    try {
      const launched = await launchFirecracker({
        firecrackerPath: fcPath,
        firecrackerArgs,
        id: st.fcId,
        // Firecracker opens the sandbox's taps by name: it runs in their namespace, jailed or not.
        ...(this.netnsPath !== undefined ? { netnsPath: this.netnsPath } : {}),
        ...(st.jailed
          ? {
              jailer: {
                path: jailerPath,
                version: await binaryVersion(jailerPath, "Jailer"),
                options: {
                  uid: st.uid,
                  gid: st.gid,
                  chrootBaseDir: path.dirname(path.dirname(st.jailDir)),
                  cgroupVersion: this.settings?.jailerCgroupVersion ?? 2,
                },
              },
              pidFile: st.pidFile,
            }
          : {}),
        stdout: consoleFd,
        stderr: consoleFd,
        // The VM outlives this cocoon process: other commands drive it later.
        detached: true,
        timeoutMs: apiTimeoutMs,
      });
      this.proc = launched.spawned;
      this.launchedByThisStart = true;
      this.pid = launched.pid;
      this.pidStart = launched.startTime;
      this.logger.info({ pid: this.pid, argv: launched.argv }, "Firecracker launched");
    } finally {
      closeSync(consoleFd);
    }
    // The seed polls the instance info every 10 ms until the VMM answers.
    await waitForApi(st.socketPath, {
      timeoutMs: apiTimeoutMs,
      pollMs: 10,
      pid: this.pid,
      ...(this.pidStart !== undefined ? { startTime: this.pidStart } : {}),
      ...(this.proc ? { spawned: this.proc } : {}),
      describe: async () =>
        [await fileTail(st.logPath), await fileTail(st.consolePath)].filter(Boolean).join("\n"),
    });
    const client = await this.api();
    st.firecrackerVersion = client.version.raw;
    st.phase = "api-ready";
  }

  /** Machine, boot source, rootfs, drive pool, queued devices, vsock, InstanceStart: api-ready → vm-ready. */
  private async configureAndBoot(config: HypervisorConfig, deadline: number): Promise<void> {
    const st = this.st!;
    const jail = this.jail!;
    const client = await this.api();
    await client.putMachineConfig({
      vcpu_count: config.numVCPUs,
      mem_size_mib: config.memorySize,
      smt: false,
    });
    const image = assetPath(config, "image");
    const initrd = assetPath(config, "initrd");
    const params = firecrackerKernelParams(config.kernelParams, {
      rootFromImage: image !== "",
      debug: config.debug,
    });
    await client.putBootSource({
      kernel_image_path: await this.place(assetPath(config, "kernel"), "/vmlinux", true),
      boot_args: kernelCmdline(params),
      // The seed attached an initrd as a drive, which no kernel can boot from; it is the initrd here.
      ...(initrd ? { initrd_path: await this.place(initrd, "/initrd", true) } : {}),
    });
    if (image) {
      // Read-only and not flagged as root: the root= parameters pick the partition.
      await client.putDrive({
        drive_id: "rootfs",
        path_on_host: await this.place(image, ROOTFS_DRIVE, true),
        is_root_device: false,
        is_read_only: true,
      });
    }
    for (let i = 0; i < DRIVE_POOL_SIZE; i++) {
      await client.putDrive({
        drive_id: driveId(i),
        path_on_host: await jail.create(`/${driveId(i)}`),
        is_root_device: false,
        is_read_only: false,
      });
    }
    const queued = this.pending;
    this.pending = [];
    for (const device of queued) await this.applyDevice(device);
    if (!st.vsock) await this.applyDevice({ type: "vsock", guestCid: DEFAULT_GUEST_CID });
    if (this.settings?.balloon) {
      await configureBalloon(client);
      st.balloon = { amountMib: 0 };
    }
    st.resources = jail.resources();
    try {
      await client.instanceStart();
    } catch (err) {
      const exited = !(await isProcessAlive(this.pid, this.pidStart));
      throw instanceStartFailure(err, exited, await fileTail(st.logPath, 1500));
    }
    st.phase = "vm-ready";
    st.paused = false;
    this.logger.info({ version: st.firecrackerVersion }, "Firecracker VM started");
    await this.awaitGuest(deadline);
  }

  /** Waits for the booted or restored guest: the sandbox's check, or Firecracker's "Running". */
  private async awaitGuest(deadline: number): Promise<void> {
    const st = this.st!;
    await waitForGuest({
      deadline,
      ready: this.guestReady
        ? (signal) => this.guestReady!(this.agentChannel(), signal)
        : async (signal) => waitRunning(await this.api(), signal),
      pid: this.pid,
      ...(this.pidStart !== undefined ? { pidStart: this.pidStart } : {}),
      ...(this.proc ? { spawned: this.proc } : {}),
      logPath: st.logPath,
      consolePath: st.consolePath,
    });
  }

  /** The API client (re-connected after load or disconnect). */
  private async api(): Promise<FirecrackerClient> {
    const st = this.requireState();
    if (!this.client)
      this.client = await FirecrackerClient.connect({ socketPath: st.socketPath, logger: this.logger });
    return this.client;
  }

  // -- running VM -------------------------------------------------------------------------

  private requireRunning(): DriverState {
    const st = this.requireState();
    if (st.phase !== "vm-ready" || this.pid <= 0)
      throw new HypervisorError("ERR_INVALID_STATE", `the Firecracker VM ${st.id} is not running`);
    return st;
  }

  async pauseVM(): Promise<void> {
    const st = this.requireRunning();
    await (await this.api()).pause();
    st.paused = true;
  }

  async resumeVM(): Promise<void> {
    const st = this.requireRunning();
    await (await this.api()).resume();
    st.paused = false;
  }

  /**
   * A full snapshot of the paused VM (vmstate + memory) into the jail; with a template config
   * (devicesStatePath / memoryPath) the files are then linked (or copied) there.
   */
  async saveVM(): Promise<void> {
    const st = this.requireRunning();
    if (!st.paused)
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `the Firecracker VM ${st.id} must be paused before it is saved`,
      );
    const client = await this.api();
    const jail = this.jail!;
    await mkdir(jail.hostPath("/snapshot"), { recursive: true, mode: 0o700 });
    await client.createSnapshot(
      snapshotCreateBody(client.version, {
        type: "Full",
        snapshotPath: jail.fcPath("/snapshot/vmstate"),
        memFilePath: jail.fcPath("/snapshot/mem"),
      }),
    );
    const snapshot = { vmstate: jail.hostPath("/snapshot/vmstate"), mem: jail.hostPath("/snapshot/mem") };
    const config = this.requireConfig();
    for (const [from, to] of [
      [snapshot.vmstate, config.devicesStatePath],
      [snapshot.mem, config.memoryPath],
    ] as const) {
      if (!to) continue;
      await mkdir(path.dirname(to), { recursive: true });
      await rm(to, { force: true });
      await link(from, to).catch(() => copyFile(from, to));
    }
    st.snapshot = snapshot;
  }

  /** Snapshots of running sandboxes (snapshot.ts): pauses the VM and writes it into `dir`; it stays paused. */
  async snapshotVM(dir: string): Promise<void> {
    this.requireRunning();
    await takeFcSnapshot(this.snapshotHost(), await this.api(), dir);
  }

  private snapshotHost(): FcSnapshotHost {
    return {
      st: this.requireState(),
      jail: this.jail!,
      config: this.requireConfig(),
      place: (source, jailPath, readOnly) => this.place(source, jailPath, readOnly),
      layout: {
        rootfs: ROOTFS_DRIVE,
        pool: Array.from({ length: DRIVE_POOL_SIZE }, (_, i) => `/${driveId(i)}`),
        vsock: VSOCK_SOCKET,
      },
    };
  }

  async hotplugAddDevice(device: Device): Promise<Device> {
    // Refused whatever the VM's state: Firecracker has no device hotplug besides drive swaps
    // (capabilities().networkDeviceHotplug is false), so no state would make it work.
    if (device.type !== "block")
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `the Firecracker driver cannot hotplug ${device.type} devices (block only)`,
      );
    const st = this.requireRunning();
    if (st.slots.some((s) => s.deviceId === device.id))
      throw new HypervisorError("ERR_ALREADY_EXISTS", `block device ${device.id} is already attached`);
    const used = new Set(st.slots.map((s) => s.index));
    let index = device.index;
    if (index === undefined || index < 0 || index >= DRIVE_POOL_SIZE || used.has(index)) {
      index = [...Array(DRIVE_POOL_SIZE).keys()].find((i) => !used.has(i));
    }
    if (index === undefined) {
      throw new HypervisorError(
        "ERR_RESOURCE_EXHAUSTED",
        `all ${DRIVE_POOL_SIZE} Firecracker drive slots are in use`,
        { details: { device: device.id } },
      );
    }
    const jail = this.jail!;
    const jailPath = `/hotplug/${driveId(index)}`;
    const fc = await this.place(device.path, jailPath, device.readOnly ?? false);
    try {
      // Firecracker ≥ 1.0 has no rescan action: PATCH re-opens the drive with the new file.
      await (await this.api()).patchDrive({ drive_id: driveId(index), path_on_host: fc });
    } catch (err) {
      await jail.remove(jailPath).catch(() => undefined);
      throw err;
    }
    const slot: HotplugSlot = {
      index,
      deviceId: device.id,
      jailPath,
      hostPath: jail.hostPath(jailPath),
      readOnly: device.readOnly ?? false,
    };
    st.slots.push(slot);
    st.resources = jail.resources();
    return { ...device, index, guestPath: st.poolGuestPaths[index]! };
  }

  async hotplugRemoveDevice(device: Device): Promise<Device> {
    if (device.type !== "block")
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `the Firecracker driver cannot hot-unplug ${device.type} devices`,
      );
    const st = this.requireRunning();
    const slot =
      st.slots.find((s) => s.deviceId === device.id) ?? st.slots.find((s) => s.index === device.index);
    if (!slot)
      throw new HypervisorError(
        "ERR_NOT_FOUND",
        `block device ${device.id} is not attached to the Firecracker VM ${st.id}`,
      );
    const jail = this.jail!;
    // Back to the placeholder: the guest sees an empty disk again.
    await (
      await this.api()
    ).patchDrive({ drive_id: driveId(slot.index), path_on_host: jail.fcPath(`/${driveId(slot.index)}`) });
    await jail.remove(slot.jailPath);
    st.slots = st.slots.filter((s) => s !== slot);
    st.resources = jail.resources();
    return { ...device, index: slot.index };
  }

  /** Shrinks the guest (or gives memory back, up to the boot size) through the balloon. */
  async resizeMemory(memoryMB: number): Promise<ResizeMemoryResult> {
    const boot = this.requireConfig().memorySize;
    const amount = balloonAmountFor(boot, memoryMB, this.requireState().balloon !== undefined);
    const st = this.requireRunning();
    await setBalloon(await this.api(), amount);
    st.balloon = { amountMib: amount };
    return { memoryMB: boot - amount };
  }

  /** Firecracker has no vCPU hotplug: the count stays (the seed's no-op). */
  async resizeVCPUs(): Promise<ResizeVcpusResult> {
    const n = this.requireConfig().numVCPUs;
    return { oldVCPUs: n, newVCPUs: n };
  }

  async getVMConsole(): Promise<string> {
    return this.requireState().consolePath;
  }

  agentChannel(): AgentChannel {
    const st = this.requireState();
    const hostPath = st.vsock?.hostPath ?? path.join(st.root, VSOCK_SOCKET.slice(1));
    return { kind: "hvsock", path: hostPath, port: AGENT_VSOCK_PORT };
  }

  disconnect(): void {
    const c = this.client;
    this.client = undefined;
    void c?.close();
  }

  capabilities(): Capabilities {
    const base = {
      blockDeviceHotplug: true,
      fsSharing: false,
      networkDeviceHotplug: false,
      multiQueue: false,
    };
    const balloon = this.st ? this.st.balloon !== undefined : this.settings?.balloon === true;
    return balloon ? { ...base, memoryBalloon: true } : base;
  }

  hypervisorConfig(): HypervisorConfig {
    return this.requireConfig();
  }

  /** vCPU index → thread id, from the `fc_vcpu N` thread names. */
  async getThreadIDs(): Promise<VcpuThreadIds> {
    this.requireRunning();
    return { vcpus: await vcpuThreads(this.pid) };
  }

  getPids(): number[] {
    return this.pid > 0 ? [this.pid] : [];
  }

  async check(): Promise<void> {
    const st = this.requireState();
    if (this.pid <= 0 || !(await isProcessAlive(this.pid, this.pidStart))) {
      throw new HypervisorError("ERR_VMM_EXITED", `the Firecracker VM ${st.id} is not running`, {
        details: { pid: this.pid },
      });
    }
    const state = (await (await this.api()).describeInstance()).body.state;
    if (state !== "Running" && state !== "Paused")
      throw new HypervisorError("ERR_INVALID_STATE", `the Firecracker VM ${st.id} is "${state}"`);
  }

  // -- stopping and cleaning up -----------------------------------------------------------

  /**
   * SIGTERM, then up to 15 s for Firecracker to go, then SIGKILL (the seed). A child of this
   * process is always reaped; a Firecracker another process started is waited for by pid.
   * `waitOnly` waits for an exit without asking for one, and still kills it at the end.
   */
  async stopVM(options: { waitOnly?: boolean } = {}): Promise<void> {
    const st = this.st;
    this.disconnect();
    if (this.pid > 0) {
      const steps: EscalationStep[] = [
        options.waitOnly
          ? { timeoutMs: this.stopTimeoutMs, name: "wait" }
          : { signal: "SIGTERM", timeoutMs: this.stopTimeoutMs },
        { signal: "SIGKILL", timeoutMs: 5_000 },
      ];
      if (this.proc && this.proc.pid === this.pid) await this.proc.terminate(steps);
      else
        await terminatePid(this.pid, {
          ...(this.pidStart !== undefined ? { startTime: this.pidStart } : {}),
          steps,
          pollMs: this.stopPollMs,
        });
    }
    // The spawned jailer, when it is another process, has exited or exits now: reap it.
    if (this.proc && this.proc.pid !== this.pid && this.proc.running)
      await this.proc.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
    this.pid = 0;
    this.pidStart = undefined;
    this.proc = undefined;
    if (st) {
      st.phase = "not-ready";
      st.paused = false;
    }
  }

  /**
   * After a failed start: the sockets the stopped Firecracker leaves behind (it does not unlink
   * them), so no dead API or vsock socket looks like a VM. The jail, its log and the console
   * log stay for diagnosis until cleanup(). Only for a Firecracker this start launched: a jail
   * refused because another Firecracker runs in it keeps that one's sockets.
   */
  private async removeVmmSockets(): Promise<void> {
    const st = this.st!;
    for (const socket of [st.socketPath, path.join(st.root, VSOCK_SOCKET.slice(1))])
      await rm(socket, { force: true }).catch(() => undefined);
  }

  /** Stops the VMM if needed, unmounts what the jail holds, removes the jail and the VM directory. Idempotent. */
  async cleanup(): Promise<void> {
    const st = this.st;
    if (!st || !this.jail) return;
    if (this.pid > 0) await this.stopVM();
    await this.jail.cleanup();
    await rm(st.vmDir, { recursive: true, force: true });
    st.slots = [];
    st.resources = [];
    st.vsock = null;
  }

  // -- persisted state --------------------------------------------------------------------

  save(): HypervisorState {
    const st = this.requireState();
    st.resources = this.jail!.resources();
    return {
      type: "firecracker",
      pid: this.pid,
      ...(this.pidStart !== undefined ? { pidStartTime: this.pidStart } : {}),
      blockIndexMap: st.slots.map((s) => s.index).sort((a, b) => a - b),
      hotpluggedVCPUs: 0,
      // Negative: what the balloon holds is memory the guest gave back.
      hotpluggedMemoryMB: 0 - (st.balloon?.amountMib ?? 0),
      driver: structuredClone(st) as unknown as Record<string, unknown>,
    };
  }

  /**
   * Restores a VM another process started. The configuration is not part of the state: call
   * createVM with the same config first (as the sandbox layer does), or only use the calls
   * that need none (stop, pause/resume, hotplug, threads, cleanup).
   */
  load(state: HypervisorState): void {
    if (state.type !== "firecracker")
      throw new HypervisorError(
        "ERR_STATE_CORRUPT",
        `cannot load ${state.type} state into the Firecracker driver`,
      );
    const st = parseDriverState(state.driver);
    this.st = st;
    this.jail = new Jail(
      { jailDir: st.jailDir, root: st.root, pidFile: st.pidFile, execName: st.execName },
      { jailed: st.jailed, uid: st.uid, gid: st.gid, strategy: st.strategy },
    );
    this.jail.adopt(st.resources);
    this.pid = state.pid;
    this.pidStart = state.pidStartTime;
    this.proc = undefined;
    this.client = undefined;
    // A version string that does not parse is a corrupt state: refuse it now, not mid-call.
    if (st.firecrackerVersion) parseVersion(st.firecrackerVersion);
  }

  /** The running Firecracker's version (after start or load). */
  get firecrackerVersion(): FcVersion | undefined {
    return this.st?.firecrackerVersion ? parseVersion(this.st.firecrackerVersion) : undefined;
  }

  /** Paths for tests and diagnostics. */
  get paths(): { jailDir: string; root: string; socketPath: string; consolePath: string; logPath: string } {
    const st = this.requireState();
    return {
      jailDir: st.jailDir,
      root: st.root,
      socketPath: st.socketPath,
      consolePath: st.consolePath,
      logPath: st.logPath,
    };
  }
}

/** Firecracker drive and interface ids: letters, digits and '_' (cocoon ids may hold '-' or '.'). */
export function firecrackerDriveId(id: string): string {
  const out = id.replace(/[^A-Za-z0-9_]/g, "_");
  if (!out) throw new HypervisorError("ERR_INVALID_ARGUMENT", `"${id}" cannot be a Firecracker device id`);
  return out;
}
