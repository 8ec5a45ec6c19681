import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import type net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { HypervisorError, messageOf } from "../../errors.js";
import { isProcessAlive } from "../../host/proc.js";
import { terminatePid, type ManagedProcess } from "../../host/process.js";
import { createTap, deleteTap, macFromIp, netnsPath } from "../../network/tap.js";
import type { BalloonStats, Drive, InstanceInfo, RateLimiter } from "../../gen/firecracker/index.js";
import { FirecrackerClient } from "./client.js";
import { Jail, type JailStrategy } from "./jail.js";
import {
  DEFAULT_CHROOT_BASE,
  binaryVersion,
  jailLayout,
  writesPidFile,
  type JailerOptions,
} from "./jailer.js";
import { fileTail, launchFirecracker, waitForApi, type Launched } from "./launch.js";
import { checkJailerCgroups, removeJailerCgroups, type JailerCgroupSpec } from "./jailer-cgroups.js";
import { instanceStartFailure, requireKvm } from "./kvm.js";
import { mmdsDataFromFile } from "./mmds.js";
import {
  snapshotCreateBody,
  snapshotLoadBody,
  type MemoryBackendType,
  type Snapshot,
  type SnapshotType,
} from "./snapshot.js";
import { LineReader, makeFifo, parseMetricsLine, type MetricsLine } from "./telemetry.js";
import { apiThread, setAffinity, vcpuThreads, vmmThread } from "./threads.js";
import { atLeast, type FcVersion } from "./version.js";
import {
  connectHybridVsock,
  listenGuestPort,
  type HybridVsockConnectOptions,
  type HybridVsockConnection,
} from "./vsock.js";

/**
 * One Firecracker microVM for tests and tools: the TypeScript counterpart of the Firecracker
 * test framework's `Microvm` (firecracker-test-framework.md §2). It owns a resource directory
 * (`<resourceDir>/<id>/{kernel,fsfiles}`), the jail, the process, the API client, the log and
 * metrics FIFOs, taps and vsock listeners, and cleans all of it up.
 */

export interface MicroVMOptions {
  /** Letters, digits and '-' (the jailer's rule). Default: a random one. */
  id?: string;
  firecrackerPath: string;
  /** Run through this jailer (the default when given; spawn({ jailed: false }) skips it). */
  jailerPath?: string;
  /** Per-VM resource directories go below it. */
  resourceDir: string;
  /** Jailer chroot base (default /srv/jailer). */
  chrootBaseDir?: string;
  jailer?: {
    uid?: number;
    gid?: number;
    /** Default true, as in the test framework. */
    daemonize?: boolean;
    newPidNs?: boolean;
    cgroups?: string[];
    cgroupVersion?: 1 | 2;
    parentCgroup?: string;
    resourceLimits?: JailerOptions["resourceLimits"];
  };
  /** The network namespace (name under /var/run/netns) the VM and its taps live in. */
  netns?: string;
  /** How resources enter the jail (default auto: hard link, else bind mount). */
  jailStrategy?: JailStrategy;
  logger?: Logger;
  /** The KVM device checked before InstanceStart (default /dev/kvm). */
  kvmDevice?: string;
}

export interface SpawnOptions {
  /** Run through the jailer (default: whether a jailer path was given). */
  jailed?: boolean;
  /** Create a log FIFO and pass --log-path (default true). */
  log?: boolean;
  logLevel?: "Error" | "Warning" | "Info" | "Debug" | "Trace";
  showLevel?: boolean;
  showLogOrigin?: boolean;
  /** Create a metrics FIFO: --metrics-path since 1.2, PUT /metrics before (default true). */
  metrics?: boolean;
  /** Pre-populate MMDS from this JSON file (--metadata). */
  metadataFile?: string;
  bootTimer?: boolean;
  /** More Firecracker flags. */
  extraArgs?: string[];
  /** How long to wait for the API socket (default 10 s). */
  timeoutMs?: number;
  /** Environment for the spawned process (tests pass FAKE_* variables to the fakes). */
  env?: NodeJS.ProcessEnv;
}

export interface BasicConfig {
  vcpuCount?: number;
  smt?: boolean;
  memSizeMib?: number;
  trackDirtyPages?: boolean;
  hugePages?: "None" | "2M";
  bootArgs?: string;
  useInitrd?: boolean;
  addRootDevice?: boolean;
  rootfsReadOnly?: boolean;
  rootfsIoEngine?: "Sync" | "Async";
}

export interface DriveOptions {
  readOnly?: boolean;
  rootDevice?: boolean;
  partuuid?: string;
  cacheType?: "Unsafe" | "Writeback";
  ioEngine?: "Sync" | "Async";
  rateLimiter?: RateLimiter;
}

export interface NetIfaceOptions {
  /** n: tap `tap<n>`, iface `eth<n>`, host 192.168.n.1/30, guest 192.168.n.2 (the test framework's scheme). */
  index?: number;
  ifaceId?: string;
  tapName?: string;
  hostIp?: string;
  guestIp?: string;
  netmaskLen?: number;
  /** Create the tap in the VM's netns (default true). */
  createTap?: boolean;
  rxRateLimiter?: RateLimiter;
  txRateLimiter?: RateLimiter;
  mtu?: number;
}

export interface NetIface {
  ifaceId: string;
  tapName: string;
  hostIp: string;
  guestIp: string;
  guestMac: string;
}

/** Ids must suit the jailer: letters, digits, '-'. */
function randomId(): string {
  return `vm-${randomBytes(6).toString("hex")}`;
}

export class MicroVM {
  readonly id: string;
  /** `<resourceDir>/<id>`. */
  readonly path: string;
  kernelFile = "";
  initrdFile = "";
  rootfsFile = "";
  private jail: Jail | undefined;
  private launched: Launched | undefined;
  private apiClient: FirecrackerClient | undefined;
  private fcVersion: FcVersion | undefined;
  private jailerVersion: FcVersion | undefined;
  private logReader: LineReader | undefined;
  private metricsReader: LineReader | undefined;
  private consolePath: string | undefined;
  private readonly taps: { name: string; netns?: string }[] = [];
  private readonly listeners: net.Server[] = [];
  private readonly drives = new Map<string, { jailPath: string; hostPath: string }>();
  private readonly ifaces: NetIface[] = [];
  private vsockUds: { jailPath: string; hostPath: string } | undefined;
  private apiSocketHost = "";
  private isJailed = false;
  private killed = false;
  private cleaned = false;
  /** The cgroups the jailer makes (and never removes), when it was given --cgroup settings. */
  private jailerCgroups: JailerCgroupSpec | undefined;

  constructor(private readonly o: MicroVMOptions) {
    this.id = o.id ?? randomId();
    this.path = path.join(o.resourceDir, this.id);
  }

  /** Creates the resource directory layout (kernel/, fsfiles/). */
  static async create(o: MicroVMOptions): Promise<MicroVM> {
    const vm = new MicroVM(o);
    await mkdir(path.join(vm.path, "kernel"), { recursive: true });
    await mkdir(path.join(vm.path, "fsfiles"), { recursive: true });
    return vm;
  }

  get client(): FirecrackerClient {
    if (!this.apiClient) throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} is not spawned`);
    return this.apiClient;
  }

  get version(): FcVersion {
    if (!this.fcVersion) throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} is not spawned`);
    return this.fcVersion;
  }

  get jailed(): boolean {
    return this.isJailed;
  }

  /** The chroot (`<base>/<exec>/<id>/root`), or the directory holding an unjailed VM's files. */
  get chroot(): string {
    return this.requireJail().root;
  }

  get apiSocketPath(): string {
    return this.apiSocketHost;
  }

  /** Firecracker's pid: from the jailer's pid file when it writes one. */
  get firecrackerPid(): number | undefined {
    return this.launched?.pid;
  }

  /** The process cocoon spawned (the jailer, or Firecracker). */
  get spawnedProcess(): ManagedProcess | undefined {
    return this.launched?.spawned;
  }

  get pidFile(): string | undefined {
    return this.jail && this.isJailed ? this.jail.layout.pidFile : undefined;
  }

  get fsfiles(): string {
    return path.join(this.path, "fsfiles");
  }

  private requireJail(): Jail {
    if (!this.jail) throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} is not spawned`);
    return this.jail;
  }

  /** Puts a host file where Firecracker can open it and returns the path to give Firecracker. */
  async jailResource(
    hostFile: string,
    jailPath = `/${path.basename(hostFile)}`,
    options: { readOnly?: boolean } = {},
  ): Promise<string> {
    return this.requireJail().put(hostFile, jailPath, options);
  }

  // -- spawning ---------------------------------------------------------------------------

  async spawn(s: SpawnOptions = {}): Promise<void> {
    if (this.launched)
      throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} was already spawned`);
    const jailed = s.jailed ?? this.o.jailerPath !== undefined;
    if (jailed && !this.o.jailerPath)
      throw new HypervisorError("ERR_INVALID_ARGUMENT", "a jailed spawn needs jailerPath");
    this.isJailed = jailed;
    this.fcVersion = await binaryVersion(this.o.firecrackerPath, "Firecracker");
    const j = this.o.jailer ?? {};
    const uid = j.uid ?? 0;
    const gid = j.gid ?? 0;
    const base = this.o.chrootBaseDir ?? DEFAULT_CHROOT_BASE;
    // Unjailed, the same layout lives in the resource directory (short paths: sockets allow 107 bytes).
    const layout = jailed
      ? jailLayout(base, this.o.firecrackerPath, this.id)
      : {
          jailDir: path.join(this.path, "jail"),
          root: path.join(this.path, "jail", "root"),
          pidFile: "",
          execName: path.basename(this.o.firecrackerPath),
        };
    if (jailed && j.cgroups?.length) {
      this.jailerCgroups = {
        settings: j.cgroups,
        version: j.cgroupVersion ?? 1,
        parent: j.parentCgroup ?? layout.execName,
        id: this.id,
      };
      await checkJailerCgroups(this.jailerCgroups); // before anything is built
    }
    this.jail = new Jail(layout, { jailed, uid, gid, strategy: this.o.jailStrategy ?? "auto" });
    const apiSockJail = jailed ? "/run/firecracker.socket" : "/api.socket";
    this.apiSocketHost = this.jail.hostPath(apiSockJail);
    await this.jail.prepare({ socketPath: this.apiSocketHost });
    if (jailed) this.jailerVersion = await binaryVersion(this.o.jailerPath!, "Jailer");
    await mkdir(path.dirname(this.apiSocketHost), { recursive: true });

    const fcArgs = ["--api-sock", this.jail.fcPath(apiSockJail)];
    if (s.log ?? true) {
      const fifo = path.join(this.path, "log_fifo");
      await rm(fifo, { force: true });
      await makeFifo(fifo);
      this.logReader = await LineReader.open(fifo);
      fcArgs.push(
        "--log-path",
        await this.jail.put(fifo, "/log_fifo", { chown: true }),
        "--level",
        s.logLevel ?? "Debug",
      );
      if (s.showLevel ?? true) fcArgs.push("--show-level");
      if (s.showLogOrigin) fcArgs.push("--show-log-origin");
    }
    let metricsViaApi: string | undefined;
    if (s.metrics ?? true) {
      const fifo = path.join(this.path, "metrics_fifo");
      await rm(fifo, { force: true });
      await makeFifo(fifo);
      this.metricsReader = await LineReader.open(fifo);
      const inJail = await this.jail.put(fifo, "/metrics_fifo", { chown: true });
      if (atLeast(this.fcVersion, "1.2.0")) fcArgs.push("--metrics-path", inJail);
      else metricsViaApi = inJail;
    }
    if (s.metadataFile) {
      await mmdsDataFromFile(s.metadataFile); // refuse a bad file before Firecracker does
      fcArgs.push("--metadata", await this.jail.put(s.metadataFile, "/metadata.json"));
    }
    if (s.bootTimer) fcArgs.push("--boot-timer");
    fcArgs.push(...(s.extraArgs ?? []));

    const daemonize = j.daemonize ?? true;
    // The console (guest serial on Firecracker's stdout) is captured unless the jailer detaches stdio.
    this.consolePath = path.join(this.path, "console.log");
    const consoleFd = openSync(this.consolePath, "a", 0o600);
    try {
      this.launched = await launchFirecracker({
        firecrackerPath: this.o.firecrackerPath,
        firecrackerArgs: fcArgs,
        id: this.id,
        ...(this.o.netns ? { netnsPath: netnsPath(this.o.netns) } : {}),
        ...(jailed
          ? {
              jailer: {
                path: this.o.jailerPath!,
                version: this.jailerVersion!,
                options: {
                  uid,
                  gid,
                  chrootBaseDir: base,
                  daemonize,
                  newPidNs: j.newPidNs ?? false,
                  ...(j.cgroups ? { cgroups: j.cgroups } : {}),
                  ...(j.cgroupVersion ? { cgroupVersion: j.cgroupVersion } : {}),
                  ...(j.parentCgroup ? { parentCgroup: j.parentCgroup } : {}),
                  ...(j.resourceLimits ? { resourceLimits: j.resourceLimits } : {}),
                },
              },
              pidFile: layout.pidFile,
            }
          : {}),
        stdout: consoleFd,
        stderr: consoleFd,
        ...(s.env ? { env: s.env } : {}),
      });
    } finally {
      closeSync(consoleFd);
    }
    await waitForApi(this.apiSocketHost, {
      timeoutMs: s.timeoutMs ?? 10_000,
      pid: this.launched.pid,
      ...(this.launched.startTime !== undefined ? { startTime: this.launched.startTime } : {}),
      spawned: this.launched.spawned,
      describe: () => fileTail(this.consolePath!),
    });
    this.apiClient = await FirecrackerClient.connect({
      socketPath: this.apiSocketHost,
      ...(this.o.logger ? { logger: this.o.logger } : {}),
    });
    if (metricsViaApi) await this.apiClient.putMetrics({ metrics_path: metricsViaApi });
  }

  /** Whether the jailer of this VM writes a pid file (v1.7+, or --new-pid-ns). */
  get expectsPidFile(): boolean {
    return (
      this.isJailed &&
      this.jailerVersion !== undefined &&
      writesPidFile(this.jailerVersion, { newPidNs: this.o.jailer?.newPidNs ?? false })
    );
  }

  // -- configuration ----------------------------------------------------------------------

  /** Machine config, boot source (jailed kernel, optional initrd) and the root drive. */
  async basicConfig(c: BasicConfig = {}): Promise<void> {
    await this.client.putMachineConfig({
      vcpu_count: c.vcpuCount ?? 2,
      mem_size_mib: c.memSizeMib ?? 256,
      ...(c.smt !== undefined ? { smt: c.smt } : {}),
      ...(c.trackDirtyPages !== undefined ? { track_dirty_pages: c.trackDirtyPages } : {}),
      ...(c.hugePages !== undefined ? { huge_pages: c.hugePages } : {}),
    });
    if (!this.kernelFile) throw new HypervisorError("ERR_INVALID_ARGUMENT", "basicConfig needs kernelFile");
    await this.client.putBootSource({
      kernel_image_path: await this.jailResource(this.kernelFile, `/${path.basename(this.kernelFile)}`, {
        readOnly: true,
      }),
      ...(c.bootArgs !== undefined ? { boot_args: c.bootArgs } : {}),
      ...(c.useInitrd && this.initrdFile
        ? {
            initrd_path: await this.jailResource(this.initrdFile, `/${path.basename(this.initrdFile)}`, {
              readOnly: true,
            }),
          }
        : {}),
    });
    if ((c.addRootDevice ?? true) && this.rootfsFile) {
      await this.addDrive("rootfs", this.rootfsFile, {
        rootDevice: true,
        readOnly: c.rootfsReadOnly ?? false,
        ...(c.rootfsIoEngine ? { ioEngine: c.rootfsIoEngine } : {}),
      });
    }
  }

  async addDrive(driveId: string, file: string, o: DriveOptions = {}): Promise<void> {
    const jailPath = this.drivePath(driveId, file);
    const fc = await this.jailResource(file, jailPath, { readOnly: o.readOnly ?? false });
    const body: Drive = {
      drive_id: driveId,
      path_on_host: fc,
      is_root_device: o.rootDevice ?? false,
      is_read_only: o.readOnly ?? false,
      ...(o.partuuid !== undefined ? { partuuid: o.partuuid } : {}),
      ...(o.cacheType !== undefined ? { cache_type: o.cacheType } : {}),
      ...(o.ioEngine !== undefined ? { io_engine: o.ioEngine } : {}),
      ...(o.rateLimiter !== undefined ? { rate_limiter: o.rateLimiter } : {}),
    };
    await this.client.putDrive(body);
    this.drives.set(driveId, { jailPath, hostPath: file });
  }

  /** A unique jail path per backing file, so a patch never replaces a file Firecracker still has open. */
  private drivePath(driveId: string, file: string): string {
    return `/drives/${driveId}-${randomBytes(3).toString("hex")}-${path.basename(file)}`;
  }

  /** Swaps a drive's backing file (post-boot) and/or its rate limiter. */
  async patchDrive(driveId: string, file?: string, rateLimiter?: RateLimiter): Promise<void> {
    let jailPath: string | undefined;
    let fc: string | undefined;
    if (file !== undefined) {
      jailPath = this.drivePath(driveId, file);
      fc = await this.jailResource(file, jailPath);
    }
    await this.client.patchDrive({
      drive_id: driveId,
      ...(fc !== undefined ? { path_on_host: fc } : {}),
      ...(rateLimiter ? { rate_limiter: rateLimiter } : {}),
    });
    if (file !== undefined && jailPath !== undefined) {
      const old = this.drives.get(driveId);
      this.drives.set(driveId, { jailPath, hostPath: file });
      if (old)
        await this.requireJail()
          .remove(old.jailPath)
          .catch(() => undefined);
    }
  }

  /** A network interface backed by a tap in the VM's netns; the guest MAC encodes the guest IP. */
  async addNetIface(n: NetIfaceOptions = {}): Promise<NetIface> {
    const index = n.index ?? this.ifaces.length;
    const iface: NetIface = {
      ifaceId: n.ifaceId ?? `eth${index}`,
      tapName: n.tapName ?? `tap${index}`,
      hostIp: n.hostIp ?? `192.168.${index}.1`,
      guestIp: n.guestIp ?? `192.168.${index}.2`,
      guestMac: "",
    };
    iface.guestMac = macFromIp(iface.guestIp);
    if (n.createTap ?? true) {
      await createTap(iface.tapName, {
        ...(this.o.netns ? { netns: this.o.netns } : {}),
        address: `${iface.hostIp}/${n.netmaskLen ?? 30}`,
      });
      this.taps.push({ name: iface.tapName, ...(this.o.netns ? { netns: this.o.netns } : {}) });
    }
    await this.client.putNetworkInterface({
      iface_id: iface.ifaceId,
      host_dev_name: iface.tapName,
      guest_mac: iface.guestMac,
      ...(n.rxRateLimiter ? { rx_rate_limiter: n.rxRateLimiter } : {}),
      ...(n.txRateLimiter ? { tx_rate_limiter: n.txRateLimiter } : {}),
      ...(n.mtu !== undefined ? { mtu: n.mtu } : {}),
    });
    this.ifaces.push(iface);
    return iface;
  }

  /** The vsock device; returns the host path of its unix socket. */
  async addVsock(guestCid = 3, udsName = "v.sock"): Promise<string> {
    const jailPath = `/${udsName}`;
    const jail = this.requireJail();
    await this.client.putVsock({ guest_cid: guestCid, uds_path: jail.fcPath(jailPath) });
    this.vsockUds = { jailPath, hostPath: jail.hostPath(jailPath) };
    return this.vsockUds.hostPath;
  }

  private requireVsock(): { jailPath: string; hostPath: string } {
    if (!this.vsockUds)
      throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} has no vsock device`);
    return this.vsockUds;
  }

  /** Connects to a guest vsock port through Firecracker's hybrid-vsock handshake. */
  vsockConnect(port: number, options?: HybridVsockConnectOptions): Promise<HybridVsockConnection> {
    return connectHybridVsock(this.requireVsock().hostPath, port, options);
  }

  /** Listens for guest-initiated connections to host port `port` (`<uds>_<port>`). */
  async vsockListen(port: number, onConnection: (socket: net.Socket) => void): Promise<string> {
    const server = await listenGuestPort(this.requireVsock().hostPath, port, onConnection);
    this.listeners.push(server);
    return server.path;
  }

  /**
   * PUT /mmds/config. The MMDS version defaults to V2 (session tokens), which every supported
   * Firecracker has: V1 is deprecated since 1.5 and each use of it is answered with a warning.
   */
  async configureMmds(
    o: {
      version?: "V1" | "V2";
      networkInterfaces?: string[];
      ipv4Address?: string;
      imdsCompat?: boolean;
    } = {},
  ): Promise<void> {
    await this.client.putMmdsConfig({
      network_interfaces: o.networkInterfaces ?? this.ifaces.map((i) => i.ifaceId),
      version: o.version ?? "V2",
      ...(o.ipv4Address ? { ipv4_address: o.ipv4Address } : {}),
      ...(o.imdsCompat !== undefined ? { imds_compat: o.imdsCompat } : {}),
    });
  }

  async putMmdsFromFile(file: string): Promise<void> {
    await this.client.putMmds(await mmdsDataFromFile(file));
  }

  async addBalloon(o: {
    amountMib: number;
    deflateOnOom?: boolean;
    statsPollingIntervalS?: number;
  }): Promise<void> {
    await this.client.putBalloon({
      amount_mib: o.amountMib,
      deflate_on_oom: o.deflateOnOom ?? true,
      ...(o.statsPollingIntervalS !== undefined ? { stats_polling_interval_s: o.statsPollingIntervalS } : {}),
    });
  }

  async balloonStats(): Promise<BalloonStats> {
    return (await this.client.getBalloonStats()).body;
  }

  // -- lifecycle --------------------------------------------------------------------------

  async describe(): Promise<InstanceInfo> {
    return (await this.client.describeInstance()).body;
  }

  async state(): Promise<InstanceInfo["state"]> {
    return (await this.describe()).state;
  }

  private async expectState(expected: InstanceInfo["state"], what: string): Promise<void> {
    const s = await this.state();
    if (s !== expected)
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        `microVM ${this.id} is "${s}" ${what}, expected "${expected}"`,
        { details: { state: s } },
      );
  }

  /**
   * InstanceStart, checking KVM and the state ("Not started") before and the state ("Running")
   * after. When Firecracker dies answering it, the error carries what its log said.
   */
  async start(): Promise<void> {
    await requireKvm(this.o.kvmDevice);
    await this.expectState("Not started", "before start");
    try {
      await this.client.instanceStart();
    } catch (err) {
      throw instanceStartFailure(err, await this.exitedSoon(), (this.logReader?.lines ?? []).join("\n"));
    }
    await this.expectState("Running", "after start");
  }

  /** Whether Firecracker is gone (or goes within a second: an abort takes a moment). */
  private async exitedSoon(): Promise<boolean> {
    const pid = this.launched?.pid;
    if (pid === undefined) return true;
    for (let i = 0; i < 20; i++) {
      if (!(await isProcessAlive(pid, this.launched?.startTime))) return true;
      await sleep(50);
    }
    return false;
  }

  async pause(): Promise<void> {
    await this.client.pause();
    await this.expectState("Paused", "after pause");
  }

  async resume(): Promise<void> {
    await this.client.resume();
    await this.expectState("Running", "after resume");
  }

  /** Pauses (when running) and writes a snapshot into the jail; returns it with host paths. */
  async snapshot(
    o: { type?: SnapshotType; memName?: string; vmstateName?: string; targetVersion?: string } = {},
  ): Promise<Snapshot> {
    if ((await this.state()) === "Running") await this.pause();
    const jail = this.requireJail();
    const type = o.type ?? "Full";
    const memJail = `/${o.memName ?? (type === "Diff" ? "mem.diff" : "mem")}`;
    const stateJail = `/${o.vmstateName ?? (type === "Diff" ? "vmstate.diff" : "vmstate")}`;
    await this.client.createSnapshot(
      snapshotCreateBody(this.version, {
        type,
        snapshotPath: jail.fcPath(stateJail),
        memFilePath: jail.fcPath(memJail),
        ...(o.targetVersion !== undefined ? { targetVersion: o.targetVersion } : {}),
      }),
    );
    return {
      type,
      vmstate: jail.hostPath(stateJail),
      mem: jail.hostPath(memJail),
      firecrackerVersion: this.version.raw,
      disks: [...this.drives.entries()].map(([driveId, d]) => ({
        driveId,
        jailPath: d.jailPath,
        hostPath: d.hostPath,
      })),
      ...(this.vsockUds ? { vsockUdsPath: this.vsockUds.jailPath } : {}),
      netIfaces: this.ifaces.map((i) => ({ ifaceId: i.ifaceId, hostDevName: i.tapName })),
    };
  }

  snapshotFull(): Promise<Snapshot> {
    return this.snapshot({ type: "Full" });
  }

  snapshotDiff(): Promise<Snapshot> {
    return this.snapshot({ type: "Diff" });
  }

  /**
   * Restores `snap` into this freshly spawned (unconfigured) microVM: the snapshot files and
   * the disks are put back at the paths Firecracker used, then PUT /snapshot/load. With the Uffd
   * backend, `uffdSocket` is the host path of a listening page-fault handler.
   */
  async restoreFromSnapshot(
    snap: Snapshot,
    o: {
      resume?: boolean;
      backend?: MemoryBackendType;
      uffdSocket?: string;
      trackDirtyPages?: boolean;
      networkOverrides?: { iface_id: string; host_dev_name: string }[];
      vsockOverride?: string;
    } = {},
  ): Promise<void> {
    const jail = this.requireJail();
    const stateFc = await jail.put(snap.vmstate, "/restore/vmstate", { readOnly: true });
    const backend = o.backend ?? "File";
    let backendPath: string;
    if (backend === "Uffd") {
      if (!o.uffdSocket)
        throw new HypervisorError(
          "ERR_INVALID_ARGUMENT",
          "the Uffd backend needs the handler's socket (uffdSocket)",
        );
      backendPath = await jail.put(o.uffdSocket, "/restore/uffd.sock");
    } else {
      backendPath = await jail.put(snap.mem, "/restore/mem");
    }
    for (const d of snap.disks) {
      await jail.put(d.hostPath, d.jailPath);
      this.drives.set(d.driveId, { jailPath: d.jailPath, hostPath: d.hostPath });
    }
    if (snap.vsockUdsPath)
      this.vsockUds = {
        jailPath: snap.vsockUdsPath,
        hostPath: jail.hostPath(o.vsockOverride ?? snap.vsockUdsPath),
      };
    await this.client.loadSnapshot(
      snapshotLoadBody(this.version, {
        snapshotPath: stateFc,
        backend,
        backendPath,
        ...(o.resume !== undefined ? { resume: o.resume } : {}),
        ...(o.trackDirtyPages ? { trackDirtyPages: true } : {}),
        ...(o.networkOverrides ? { networkOverrides: o.networkOverrides } : {}),
        ...(o.vsockOverride ? { vsockOverride: jail.fcPath(o.vsockOverride) } : {}),
      }),
    );
  }

  // -- observability ----------------------------------------------------------------------

  /** Log lines read from the log FIFO so far. */
  get logLines(): readonly string[] {
    return this.logReader?.lines ?? [];
  }

  waitForLog(match: string | RegExp, timeoutMs = 5_000): Promise<string> {
    if (!this.logReader) throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} has no log FIFO`);
    return this.logReader.waitFor(match, timeoutMs);
  }

  /** FlushMetrics, then the metrics line it produced, parsed. */
  async flushMetrics(timeoutMs = 5_000): Promise<MetricsLine> {
    const reader = this.metricsReader;
    if (!reader) throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} has no metrics FIFO`);
    reader.drain();
    await this.client.flushMetrics();
    return parseMetricsLine(await reader.next(timeoutMs));
  }

  /** What the guest printed on the serial console (captured from Firecracker's stdout). */
  async consoleData(): Promise<string> {
    return this.consolePath ? fileTail(this.consolePath, 1 << 20) : "";
  }

  // -- pinning ----------------------------------------------------------------------------

  private requirePid(): number {
    const pid = this.launched?.pid;
    if (!pid) throw new HypervisorError("ERR_INVALID_STATE", `microVM ${this.id} is not running`);
    return pid;
  }

  async pinVmm(cpu: number): Promise<boolean> {
    const tid = await vmmThread(this.requirePid());
    if (tid === undefined) return false;
    await setAffinity(tid, [cpu]);
    return true;
  }

  async pinVcpu(vcpu: number, cpu: number): Promise<boolean> {
    const tid = (await vcpuThreads(this.requirePid())).get(vcpu);
    if (tid === undefined) return false;
    await setAffinity(tid, [cpu]);
    return true;
  }

  async pinApi(cpu: number): Promise<boolean> {
    const tid = await apiThread(this.requirePid());
    if (tid === undefined) return false;
    await setAffinity(tid, [cpu]);
    return true;
  }

  // -- teardown ---------------------------------------------------------------------------

  /**
   * SIGKILLs Firecracker (found through the pid file when the jailer forked or cloned it, so a
   * Firecracker in a new pid namespace is killed too) and the spawned process, and waits for both.
   */
  async kill(): Promise<void> {
    if (this.killed || !this.launched) return;
    this.killed = true;
    const { pid, startTime, spawned } = this.launched;
    await this.apiClient?.close();
    await terminatePid(pid, {
      ...(startTime !== undefined ? { startTime } : {}),
      steps: [{ signal: "SIGKILL", timeoutMs: 10_000 }],
    });
    if (spawned.running) await spawned.terminate([{ signal: "SIGKILL", timeoutMs: 10_000 }]);
    await spawned.exited;
    if (await isProcessAlive(pid, startTime))
      throw new HypervisorError("ERR_PROCESS", `Firecracker ${pid} of microVM ${this.id} survived SIGKILL`);
  }

  /** Kills, closes readers and listeners, deletes taps, unmounts and removes the jail and the resource directory. Idempotent. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    const errors: unknown[] = [];
    const attempt = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    await attempt(() => this.kill());
    await attempt(async () => this.apiClient?.close());
    await attempt(async () => this.logReader?.close());
    await attempt(async () => this.metricsReader?.close());
    for (const l of this.listeners.splice(0))
      await attempt(() => new Promise<void>((resolve) => l.close(() => resolve())));
    for (const t of this.taps.splice(0)) await attempt(() => deleteTap(t.name, t.netns));
    if (this.jail) await attempt(() => this.jail!.cleanup());
    // After the kill: a cgroup cannot be removed while Firecracker is in it.
    if (this.jailerCgroups) await attempt(() => removeJailerCgroups(this.jailerCgroups!));
    await attempt(() => rm(this.path, { recursive: true, force: true }));
    if (errors.length)
      throw new HypervisorError(
        "ERR_PROCESS",
        `cleaning up microVM ${this.id} failed: ${errors.map(messageOf).join("; ")}`,
        { cause: errors[0] },
      );
    this.cleaned = true;
  }
}
