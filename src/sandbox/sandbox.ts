import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { chmod, rename, rm, stat } from "node:fs/promises";
import { EventEmitter } from "node:events";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { AgentClient } from "../agent/client.js";
import type { ProcessExit } from "../agent/protocol/methods.js";
import { SandboxError, isCocoonError, messageOf } from "../errors.js";
import { validateHypervisorConfig, type HypervisorConfig } from "../hypervisor/config.js";
import type { Hypervisor, HypervisorState } from "../hypervisor/hypervisor.js";
import { newHypervisor } from "../hypervisor/registry.js";
import type { RuntimePaths } from "../store/paths.js";
import type { Store } from "../store/store.js";
import {
  containerConfigSchema,
  processConfigSchema,
  type ContainerConfig,
  type ParsedSandboxConfig,
  type ProcessConfig,
} from "./config.js";
import { ProcessHandle } from "./process.js";
import { bootFromSnapshot, bootSandbox, createInGuest, type LaunchHost } from "./launch.js";
import { SandboxCgroups } from "./resources/host-cgroups.js";
import { sampleStats, type SandboxStats } from "./resources/stats.js";
import { resizeSandbox, type ResizeRequest, type ResizeResult } from "./resources/update.js";
import {
  addInterface,
  networkRecord,
  removeInterface,
  tearDownNetwork,
  type AddInterfaceOptions,
} from "./network.js";
import type { GuestInterface, GuestRoute } from "../agent/protocol/methods.js";
import type { SnapshotMeta } from "./snapshot/meta.js";
import {
  bindIntoPodShare,
  podRootfsPath,
  podRootfsStorage,
  podShareDir,
  unbindFromPodShare,
  unmountWorkDir,
} from "./pod.js";
import { pidStartTime } from "../host/process.js";
import { guestNetworkBytes } from "../network/counters.js";
import { readWatchMain, watchMainProcess } from "../monitor/records.js";
import { reapVmProcesses } from "../monitor/reap.js";
import { describeState, foldLiveness, whenVmEnded, type StopCause } from "./liveness.js";
import {
  checkTransition,
  SANDBOX_DOC,
  type ContainerState,
  type SandboxDoc,
  type SandboxState,
} from "./state.js";

/** What a sandbox needs from its surroundings. */
export interface SandboxContext {
  paths: RuntimePaths;
  store: Store;
  logger: Logger;
}

export interface AttachOptions {
  stdin?: boolean;
  /** Window size for a terminal. */
  rows?: number;
  cols?: number;
}

export interface ExecOptions extends AttachOptions {
  process: ProcessConfig;
  /** Run in this container (default: the sandbox's first container, else in the guest). */
  containerId?: string;
  /** Run directly in the guest even when the sandbox has containers. */
  inGuest?: boolean;
  execId?: string;
}

export interface ContainerStatus {
  id: string;
  state: ContainerState["state"];
  pid?: number;
  exit?: ProcessExit;
}

export interface SandboxStatus {
  id: string;
  state: SandboxState;
  hypervisor: string;
  createdAt: string;
  pids: number[];
  containers: ContainerStatus[];
  guestProcess?: { state: "created" | "running" | "exited"; exit?: ProcessExit };
  annotations: Record<string, string>;
  hostname: string;
  /** Why it stopped, when cocoon did not stop it (the VMM died, the main process ended). */
  stopCause?: StopCause;
}

export const MAIN_EXEC_ID = "main";

/**
 * How long `status` (ps, inspect) waits for the agent's word on the processes. A TCG guest
 * under load answers in well under a second; longer means it is hung or being stopped.
 */
const STATUS_CONNECT_TIMEOUT_MS = 3_000;
const STATUS_CALL_TIMEOUT_MS = 3_000;

/** Starting from a snapshot (src/sandbox/snapshot/): the saved VM and what ran in it. */
export interface SandboxRestore {
  /** The snapshot's directory (the driver's files: QEMU's `state`; Firecracker's `state`, `memory`, `firecracker.json`). */
  dir: string;
  /** The source VM's RAM was a named memory backend (it was a template clone). */
  namedRam: boolean;
  state: "ready" | "running";
  guestProcessExit?: SandboxDoc["guestProcessExit"];
  /** The monitor's watch on the main process, as the source had it. */
  watchMain?: { execId: string; graceMs: number };
}

/** A clone taken from the warm pool: its VM directory and the driver state of its running VM. */
export interface PooledVm {
  vmDir: string;
  hypervisorState: HypervisorState;
}

/** What a snapshot keeps of the sandbox besides its VM state. */
export interface SandboxSnapshotSource {
  doc: SandboxDoc;
  watchMain?: { execId: string; graceMs: number };
  namedRam: boolean;
}

function newExecId(): string {
  return `exec-${randomBytes(6).toString("hex")}`;
}

/**
 * A sandbox: one VM with its agent, and the containers or process running in it. Created by
 * one cocoon process and usable by any later one: every state change is persisted (under
 * the sandbox lock) before it is reported.
 */
export class Sandbox extends EventEmitter {
  private client: AgentClient | undefined;

  private constructor(
    private readonly ctx: SandboxContext,
    private doc: SandboxDoc,
    private readonly hypervisor: Hypervisor,
  ) {
    super();
  }

  get id(): string {
    return this.doc.config.id;
  }

  get state(): SandboxState {
    return this.doc.state;
  }

  get config(): SandboxDoc["config"] {
    return this.doc.config;
  }

  private get logger(): Logger {
    return this.ctx.logger;
  }

  private hypervisorConfig(): HypervisorConfig {
    return this.doc.config.hypervisorConfig as unknown as HypervisorConfig;
  }

  private get vmDir(): string {
    return this.doc.vmDir ?? this.ctx.paths.vmDir(this.id);
  }

  private get workDir(): string {
    return this.ctx.paths.sharedDir(this.id);
  }

  private async persist(): Promise<void> {
    await this.ctx.store.writeSandbox(this.id, "sandbox", SANDBOX_DOC, this.doc);
  }

  /** Re-reads the persisted state: another cocoon process may have changed it. */
  private async refresh(): Promise<void> {
    const stored = await this.ctx.store.readSandbox(this.id, "sandbox", SANDBOX_DOC);
    if (!stored) throw this.ctx.store.notFound(this.id);
    this.doc = stored.data;
    await foldLiveness(this.doc, this.vmDir);
    if (
      this.doc.hypervisorState &&
      (this.doc.state === "running" || this.doc.state === "paused" || this.doc.state === "ready")
    ) {
      this.hypervisor.load(this.doc.hypervisorState as unknown as HypervisorState);
    }
  }

  /** Runs a state change under the sandbox lock, on fresh state. */
  private locked<T>(purpose: string, fn: () => Promise<T>): Promise<T> {
    return this.ctx.store.withSandboxLock(
      this.id,
      async () => {
        await this.refresh();
        return fn();
      },
      { purpose, timeoutMs: 120_000 },
    );
  }

  /**
   * Creates a sandbox and boots its VM: the rootfs of each container is prepared (a bad path
   * fails before anything starts), the VM boots, the agent answers, the containers are
   * created. The sandbox is then `ready`. On any failure nothing is left behind.
   */
  static async create(
    ctx: SandboxContext,
    config: ParsedSandboxConfig,
    from?: { restore: SandboxRestore } | { pooled: PooledVm },
  ): Promise<Sandbox> {
    const id = config.id;
    return ctx.store.withSandboxLock(
      id,
      async () => {
        if (await ctx.store.sandboxExists(id)) {
          throw new SandboxError("ERR_ALREADY_EXISTS", `a sandbox named "${id}" already exists`, {
            details: { sandbox: id },
          });
        }
        const hvConfig = validateHypervisorConfig(config.hypervisorConfig);
        const hypervisor = newHypervisor(config.hypervisorType, { logger: ctx.logger, store: ctx.store });
        const doc: SandboxDoc = {
          config: { ...config, hypervisorConfig: hvConfig as unknown as Record<string, unknown> },
          state: "ready",
          createdAt: new Date().toISOString(),
          containers: [],
          // Until the sandbox is ready, its record says who is making it: if that process
          // dies, later commands see a half-made sandbox (and gc removes it), not a "ready" one.
          creating: {
            pid: process.pid,
            ...(await pidStartTime(process.pid).then((t) => (t ? { startTime: t } : {}))),
          },
        };
        const sandbox = new Sandbox(ctx, doc, hypervisor);
        try {
          if (from && "restore" in from) await bootFromSnapshot(sandbox.launchHost(), hvConfig, from.restore);
          else await bootSandbox(sandbox.launchHost(), hvConfig, from?.pooled);
          delete sandbox.doc.creating;
          await sandbox.persist();
        } catch (err) {
          await sandbox.discard();
          throw err;
        }
        return sandbox;
      },
      { purpose: "create", timeoutMs: 5_000 },
    );
  }

  /** What src/sandbox/launch.ts needs of this sandbox while it is made. */
  private launchHost(): LaunchHost {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the getters read the live fields
    const self = this;
    return {
      get id() {
        return self.id;
      },
      get ctx() {
        return self.ctx;
      },
      get doc() {
        return self.doc;
      },
      get hypervisor() {
        return self.hypervisor;
      },
      get vmDir() {
        return self.vmDir;
      },
      get workDir() {
        return self.workDir;
      },
      get logger() {
        return self.logger;
      },
      hostname: () => this.hostname(),
      persist: () => this.persist(),
      agent: () => this.agent(),
    };
  }

  /**
   * Snapshots (src/sandbox/snapshot/): pauses the VM, writes its device state and RAM into
   * `dir`, then lets it run on. Only a sandbox without containers: their root filesystems are
   * host shares and disks that a VM snapshot does not carry.
   */
  async saveSnapshot(dir: string): Promise<SandboxSnapshotSource> {
    return this.locked("snapshot", async () => {
      if (this.doc.state !== "running" && this.doc.state !== "ready")
        throw new SandboxError(
          "ERR_INVALID_STATE",
          `cannot snapshot sandbox ${this.id}: it is ${describeState(this.doc)} (it must be ready or running)`,
          { details: { state: this.doc.state } },
        );
      if (this.doc.containers.length > 0)
        throw new SandboxError(
          "ERR_NOT_SUPPORTED",
          `cannot snapshot sandbox ${this.id}: snapshots of sandboxes with containers are not supported yet`,
          { hint: "snapshot a sandbox that runs its command in the guest (cocoon run without --rootfs)" },
        );
      if (this.doc.config.network && this.doc.config.network.mode !== "none")
        throw new SandboxError(
          "ERR_NOT_SUPPORTED",
          `cannot snapshot sandbox ${this.id}: snapshots of sandboxes with a network are not supported yet (its NICs and namespace are not in the snapshot)`,
          { hint: "create the sandbox with --network none to snapshot it" },
        );
      if (!this.hypervisor.snapshotVM)
        throw new SandboxError(
          "ERR_NOT_SUPPORTED",
          `snapshots of running sandboxes are not supported on ${this.hypervisor.type}`,
        );
      const watchMain = await readWatchMain(this.vmDir);
      try {
        await this.hypervisor.snapshotVM(dir);
      } finally {
        // The source runs on whether or not the snapshot was written.
        await this.hypervisor.resumeVM();
      }
      return {
        doc: structuredClone(this.doc),
        ...(watchMain ? { watchMain } : {}),
        namedRam: this.hypervisorConfig().bootFromTemplate,
      };
    });
  }

  /**
   * Snapshots this sandbox as `name` (src/sandbox/snapshot/): it is paused while its state is
   * written, then runs on. Runtime.restoreSandbox starts new sandboxes from it.
   */
  async snapshot(name?: string): Promise<SnapshotMeta> {
    // Loaded on use: the snapshot store itself creates sandboxes.
    const { SnapshotStore } = await import("./snapshot/snapshots.js");
    return new SnapshotStore(this.ctx).create(this, name);
  }

  private hostname(): string {
    return this.doc.config.hostname ?? this.id.slice(0, 63);
  }

  /** Undoes a failed create: VM, files, state. Errors here must not hide the original one. */
  private async discard(): Promise<void> {
    await this.closeAgent();
    await this.hypervisor.stopVM().catch(() => undefined);
    await this.reap();
    await this.hypervisor
      .cleanup()
      .catch((err: unknown) => this.logger.warn({ err }, "cleanup after a failed create"));
    await tearDownNetwork(this.ctx, this.id).catch((err: unknown) =>
      this.logger.warn({ err }, "network teardown after a failed create"),
    );
    await this.removeFiles();
  }

  /** Ends whatever still runs for this VM (its monitor, the VMM, helpers), found by record and by tag. */
  private async reap(): Promise<void> {
    const reaped = await reapVmProcesses(this.vmDir);
    if (reaped.length) this.logger.info({ reaped }, "ended processes left for this sandbox's VM");
  }

  private async removeFiles(): Promise<void> {
    await SandboxCgroups.remove(this.ctx.store, this.id);
    for (const c of this.doc.containers)
      for (const p of c.rootfs.owned) await rm(p, { recursive: true, force: true });
    await unmountWorkDir(this.workDir);
    await rm(this.workDir, { recursive: true, force: true });
    await this.ctx.store.removeSandbox(this.id);
  }

  /** Loads a sandbox another cocoon process created. */
  static async load(ctx: SandboxContext, id: string): Promise<Sandbox> {
    if (!id) throw new SandboxError("ERR_INVALID_ARGUMENT", "the sandbox id is empty");
    const stored = await ctx.store.readSandbox(id, "sandbox", SANDBOX_DOC);
    if (!stored) throw ctx.store.notFound(id);
    const doc = stored.data;
    const vmDir = doc.vmDir ?? ctx.paths.vmDir(id);
    await foldLiveness(doc, vmDir);
    const hypervisor = newHypervisor(doc.config.hypervisorType as ParsedSandboxConfig["hypervisorType"], {
      logger: ctx.logger,
      store: ctx.store,
    });
    await hypervisor.createVM({
      id,
      config: doc.config.hypervisorConfig as unknown as HypervisorConfig,
      paths: { vmDir, jailerBase: ctx.paths.jailerBase },
      logger: ctx.logger,
    });
    if (doc.hypervisorState) hypervisor.load(doc.hypervisorState as unknown as HypervisorState);
    return new Sandbox(ctx, doc, hypervisor);
  }

  /** This process's session with the agent, opened on first use. */
  async agent(connectTimeoutMs = 15_000, signal?: AbortSignal): Promise<AgentClient> {
    if (this.client && !this.client.closed) return this.client;
    const client = await AgentClient.connect(this.hypervisor.agentChannel(), {
      timeoutMs: connectTimeoutMs,
      ...(signal ? { signal } : {}),
      requestTimeoutMs: this.doc.config.agentConfig.requestTimeoutMs,
    });
    client.onClose(() => {
      if (this.client === client) this.client = undefined;
      this.emit("agent-closed");
    });
    this.client = client;
    return client;
  }

  private async closeAgent(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.close();
  }

  private requireRunning(what: string): void {
    if (this.doc.state !== "running") {
      throw new SandboxError(
        "ERR_INVALID_STATE",
        `cannot ${what}: sandbox ${this.id} is not running (it is ${describeState(this.doc)})`,
        {
          details: { state: this.doc.state },
        },
      );
    }
  }

  /** Opens the stdio streams of a process on our session. */
  private async streams(
    agent: AgentClient,
    opts: AttachOptions,
  ): Promise<{
    ids: { stdin?: number; stdout: number; stderr: number };
    handles: {
      stdin?: ReturnType<AgentClient["openStream"]>;
      stdout: ReturnType<AgentClient["openStream"]>;
      stderr: ReturnType<AgentClient["openStream"]>;
    };
  }> {
    const stdout = agent.openStream();
    const stderr = agent.openStream();
    const stdin = opts.stdin ? agent.openStream() : undefined;
    return {
      ids: { stdout: stdout.id, stderr: stderr.id, ...(stdin ? { stdin: stdin.id } : {}) },
      handles: { stdout, stderr, ...(stdin ? { stdin } : {}) },
    };
  }

  /**
   * Starts the sandbox's main process (its containers, or the guest process). With `attach`,
   * returns a handle on the main process's stdio; otherwise its output waits in the agent.
   * When the main process ends the VM stops, as a container stops with its main process;
   * `keepRunning` leaves the VM up for further `exec` instead (its exit is then read from the agent).
   */
  async start(
    options: { attach?: AttachOptions; keepRunning?: boolean } = {},
  ): Promise<ProcessHandle | undefined> {
    return this.locked("start", async () => {
      checkTransition(this.id, this.doc.state, "running");
      const agent = await this.agent();
      let handle: ProcessHandle | undefined;
      for (const [i, c] of this.doc.containers.entries()) {
        const started = await this.startInGuest(agent, c, i === 0 ? options.attach : undefined);
        handle ??= started;
      }
      const gp = this.doc.config.guestProcess;
      if (gp) {
        const proc = processConfigSchema.parse(gp);
        const attach = options.attach;
        const s = attach ? await this.streams(agent, attach) : undefined;
        const { pid } = await agent.call("process.start", {
          execId: MAIN_EXEC_ID,
          process: { ...proc, rows: attach?.rows ?? proc.rows ?? 24, cols: attach?.cols ?? proc.cols ?? 80 },
          stdio: s?.ids ?? {},
        });
        if (s) handle = new ProcessHandle(agent, MAIN_EXEC_ID, undefined, pid, s.handles);
      }
      this.doc.state = "running";
      await this.persist();
      // The monitor stops the VM when the main process ends (after a grace for an attached
      // client to drain its output), as a container stops with its main process.
      if (!options.keepRunning)
        await watchMainProcess(this.vmDir, this.mainExecId(), options.attach ? 5_000 : 0);
      return handle;
    });
  }

  private async startInGuest(
    agent: AgentClient,
    c: ContainerState,
    attach: AttachOptions | undefined,
  ): Promise<ProcessHandle | undefined> {
    const s = attach ? await this.streams(agent, attach) : undefined;
    const size = attach?.rows && attach.cols ? { rows: attach.rows, cols: attach.cols } : {};
    const { pid } = await agent.call("container.start", {
      containerId: c.config.id,
      stdio: s?.ids ?? {},
      ...size,
    });
    c.state = "running";
    return s ? new ProcessHandle(agent, c.config.id, c.config.id, pid, s.handles) : undefined;
  }

  /**
   * Adds a container to the running (or ready) VM, its rootfs directory bind-mounted into the
   * pod share (the sandbox must have been created with `podShare`). It is then `created`;
   * `startContainer` runs it. On failure nothing of it is left.
   */
  async addContainer(input: ContainerConfig): Promise<void> {
    const parsed = containerConfigSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new SandboxError(
        "ERR_INVALID_CONFIG",
        `invalid container config at ${issue.path.join(".") || "<root>"}: ${issue.message}`,
      );
    }
    const config = parsed.data;
    await this.locked("add container", async () => {
      if (this.doc.state !== "running" && this.doc.state !== "ready")
        throw new SandboxError(
          "ERR_INVALID_STATE",
          `cannot add a container: sandbox ${this.id} is ${describeState(this.doc)}`,
        );
      if (this.doc.containers.some((c) => c.config.id === config.id))
        throw new SandboxError(
          "ERR_ALREADY_EXISTS",
          `sandbox ${this.id} already has a container "${config.id}"`,
        );
      const fsType = this.hypervisorConfig().sharedFS;
      if (!this.doc.config.podShare || (fsType !== "virtio-fs" && fsType !== "virtio-9p"))
        throw new SandboxError(
          "ERR_NOT_SUPPORTED",
          `sandbox ${this.id} was not created with a pod share (podShare), so its VM cannot take more containers`,
        );
      if (config.rootfs.type !== "dir")
        throw new SandboxError(
          "ERR_INVALID_ARGUMENT",
          "a container added to a running VM needs a rootfs directory",
        );
      const target = podRootfsPath(podShareDir(this.workDir), config.id);
      await bindIntoPodShare(config.rootfs.path, target);
      const state: ContainerState = {
        config,
        state: "created",
        rootfs: { kind: "share", hostPath: target, owned: [], inPodShare: true },
      };
      try {
        await createInGuest(
          await this.agent(),
          config,
          podRootfsStorage(config.id, fsType),
          this.hostname(),
          config.id,
        );
      } catch (err) {
        await unbindFromPodShare(target).catch(() => undefined);
        throw err;
      }
      this.doc.containers.push(state);
      await this.persist();
    });
  }

  /** Starts a container added by `addContainer`; with `attach`, returns its init's stdio. */
  async startContainer(
    containerId: string,
    options: { attach?: AttachOptions } = {},
  ): Promise<ProcessHandle | undefined> {
    return this.locked("start container", async () => {
      this.requireRunning("start a container");
      const c = this.findContainer(containerId);
      if (c.state !== "created")
        throw new SandboxError("ERR_INVALID_STATE", `container ${containerId} is ${c.state}, not created`);
      const handle = await this.startInGuest(await this.agent(), c, options.attach);
      await this.persist();
      return handle;
    });
  }

  /** Runs another process in the sandbox (Kata's ExecProcess / EnterContainer). */
  async exec(options: ExecOptions): Promise<ProcessHandle> {
    await this.refresh();
    this.requireRunning("exec a process");
    const proc = processConfigSchema.parse(options.process);
    const containerId = options.inGuest
      ? undefined
      : (options.containerId ?? this.doc.containers[0]?.config.id);
    if (containerId) this.findContainer(containerId);
    const agent = await this.agent();
    const s = await this.streams(agent, options);
    const execId = options.execId ?? newExecId();
    const { pid } = await agent.call("process.start", {
      execId,
      ...(containerId ? { containerId } : {}),
      process: { ...proc, rows: options.rows ?? proc.rows ?? 24, cols: options.cols ?? proc.cols ?? 80 },
      stdio: s.ids,
    });
    return new ProcessHandle(agent, execId, containerId, pid, s.handles);
  }

  /** Re-attaches to a running process's stdio (from another cocoon process). */
  async attach(execId: string, options: AttachOptions = {}): Promise<ProcessHandle> {
    await this.refresh();
    this.requireRunning("attach to a process");
    const agent = await this.agent();
    const s = await this.streams(agent, options);
    await agent.call("process.attach", { execId, stdio: s.ids });
    const info = (await agent.call("process.list", {})).processes.find((p) => p.execId === execId);
    return new ProcessHandle(agent, execId, info?.containerId, info?.pid ?? 0, s.handles);
  }

  /** Waits for a process (the main one by default) to exit. */
  async wait(execId?: string): Promise<ProcessExit> {
    await this.refresh();
    this.requireRunning("wait for a process");
    const id = execId ?? this.mainExecId();
    return (await this.agent()).call("process.wait", { execId: id }, { timeoutMs: 0 });
  }

  async signal(
    signal: string,
    options: { execId?: string; containerId?: string; all?: boolean } = {},
  ): Promise<void> {
    await this.refresh();
    this.requireRunning("signal a process");
    const agent = await this.agent();
    if (options.all) {
      const cid = options.containerId ?? this.doc.containers[0]?.config.id;
      if (!cid) throw new SandboxError("ERR_INVALID_ARGUMENT", "signalling every process needs a container");
      await agent.call("process.signal", { containerId: cid, signal, all: true });
    } else {
      await agent.call("process.signal", { execId: options.execId ?? this.mainExecId(), signal });
    }
  }

  async resizeTerminal(execId: string, rows: number, cols: number): Promise<void> {
    await this.refresh();
    this.requireRunning("resize a terminal");
    await (await this.agent()).call("process.resize", { execId, rows, cols });
  }

  /** The exec id of the main process: the first container's init, or the guest process. */
  mainExecId(): string {
    return this.doc.containers[0]?.config.id ?? MAIN_EXEC_ID;
  }

  findContainer(containerId: string): ContainerState {
    if (!containerId) throw new SandboxError("ERR_INVALID_ARGUMENT", "the container id is empty");
    const c = this.doc.containers.find((x) => x.config.id === containerId);
    if (!c)
      throw new SandboxError("ERR_NOT_FOUND", `sandbox ${this.id} has no container "${containerId}"`, {
        details: { containerId },
      });
    return c;
  }

  getAllContainers(): ContainerState[] {
    return [...this.doc.containers];
  }

  /** Removes a container: kills what runs in it, detaches its rootfs, deletes its files. */
  async removeContainer(containerId: string): Promise<void> {
    await this.locked("remove container", async () => {
      const c = this.findContainer(containerId);
      if (this.doc.state === "running" || this.doc.state === "ready") {
        await (await this.agent()).call("container.remove", { containerId, timeoutSeconds: 10 });
        if (c.rootfs.blockId) {
          await this.hypervisor.hotplugRemoveDevice({
            type: "block",
            id: c.rootfs.blockId,
            path: c.rootfs.hostPath,
          });
        }
      }
      if (c.rootfs.inPodShare) await unbindFromPodShare(c.rootfs.hostPath);
      for (const p of c.rootfs.owned) await rm(p, { recursive: true, force: true });
      this.doc.containers = this.doc.containers.filter((x) => x !== c);
      this.doc.hypervisorState = this.hypervisor.save() as unknown as Record<string, unknown>;
      await this.persist();
    });
  }

  async pause(): Promise<void> {
    await this.locked("pause", async () => {
      checkTransition(this.id, this.doc.state, "paused");
      await this.hypervisor.pauseVM();
      this.doc.state = "paused";
      this.doc.hypervisorState = this.hypervisor.save() as unknown as Record<string, unknown>;
      await this.persist();
    });
  }

  async resume(): Promise<void> {
    await this.locked("resume", async () => {
      checkTransition(this.id, this.doc.state, "running");
      if (this.doc.state !== "paused")
        throw new SandboxError("ERR_INVALID_STATE", `sandbox ${this.id} is not paused`);
      await this.hypervisor.resumeVM();
      this.doc.state = "running";
      this.doc.hypervisorState = this.hypervisor.save() as unknown as Record<string, unknown>;
      await this.persist();
    });
  }

  /** Stops everything in the sandbox and the VM. The sandbox stays listed until deleted. */
  async stop(): Promise<void> {
    await this.locked("stop", async () => {
      if (this.doc.state === "stopped" && this.doc.stopCause) {
        // It stopped by itself (its main process ended, its VM died): make sure nothing is left
        // running for it and record that truth, as docker's stop of an exited container does.
        await this.reap();
        await tearDownNetwork(this.ctx, this.id);
        await this.persist();
        return;
      }
      checkTransition(this.id, this.doc.state, "stopped");
      await this.shutdownVm();
      await tearDownNetwork(this.ctx, this.id);
      this.doc.state = "stopped";
      await this.persist();
    });
  }

  private async shutdownVm(): Promise<void> {
    let tornDown = false;
    if (this.doc.state === "running" || this.doc.state === "ready") {
      // Best effort: a dead or hung agent must not keep the VM alive.
      try {
        const agent = await this.agent();
        const remember = await agent.call("process.list", {}, { timeoutMs: 5_000 }).catch(() => undefined);
        for (const c of this.doc.containers) {
          const p = remember?.processes.find((x) => x.execId === c.config.id);
          c.state = "stopped";
          if (p?.exit) c.exit = p.exit;
        }
        const main = remember?.processes.find((x) => x.execId === MAIN_EXEC_ID);
        if (main?.exit) this.doc.guestProcessExit = main.exit;
        await agent.call("sandbox.destroy", {}, { timeoutMs: 15_000 });
        tornDown = true;
      } catch (err) {
        this.logger.warn({ err }, "the agent did not tear the sandbox down; stopping the VM anyway");
      }
    }
    await this.closeAgent();
    // Once the agent has killed everything and unmounted, the guest has nothing left to
    // flush (its root is read-only): skip the ACPI powerdown and quit the VM at once.
    await this.hypervisor.stopVM({ graceful: !tornDown });
    await this.hypervisor.cleanup();
    this.doc.hypervisorState = this.hypervisor.save() as unknown as Record<string, unknown>;
    for (const c of this.doc.containers) c.state = "stopped";
  }

  /**
   * Deletes the sandbox: only from ready, paused or stopped (or any state with `force`).
   * Stops the VM if it still runs, then removes containers' files, the VM directory, the
   * shared files and the persisted state.
   */
  async delete(options: { force?: boolean } = {}): Promise<void> {
    await this.locked("delete", async () => {
      if (this.doc.state === "running" && !options.force) {
        throw new SandboxError(
          "ERR_INVALID_STATE",
          `sandbox ${this.id} is running: stop it first (or use --force)`,
          {
            details: { state: this.doc.state },
          },
        );
      }
      if (this.doc.state === "stopped") await this.reap();
      if (this.doc.state !== "stopped") {
        if (this.doc.state === "paused") await this.hypervisor.resumeVM().catch(() => undefined);
        await this.shutdownVm().catch(async (err: unknown) => {
          this.logger.warn({ err }, "stopping the VM during delete failed; cleaning up anyway");
          await this.hypervisor.cleanup();
        });
      } else {
        await this.hypervisor.cleanup();
      }
      await this.reap();
      // A failed teardown keeps the record (and the sandbox) so that a later rm or gc retries.
      await tearDownNetwork(this.ctx, this.id);
      await this.removeFiles();
    });
    this.emit("deleted");
  }

  /** Status with every container's; asks the agent when the sandbox runs. */
  async status(): Promise<SandboxStatus> {
    await this.refresh();
    let live: { execId: string; state: string; pid: number; exit?: ProcessExit }[] | undefined;
    if (this.doc.state === "running" || this.doc.state === "ready") {
      // A guest that does not answer must not make `ps` hang: one that is hung, or a VM that
      // ended after the state above was read (the connect retries a missing socket until its
      // timeout; the monitor's record of the end stops the wait). The recorded states are
      // shown instead, and the liveness is folded again.
      const done = new AbortController();
      const query = this.agent(STATUS_CONNECT_TIMEOUT_MS, done.signal)
        .then((a) => a.call("process.list", {}, { timeoutMs: STATUS_CALL_TIMEOUT_MS, signal: done.signal }))
        .then((r) => r.processes)
        .catch(() => undefined);
      live = await Promise.race([query, whenVmEnded(this.vmDir, done.signal).then(() => undefined)]);
      done.abort();
      if (!live) await foldLiveness(this.doc, this.vmDir);
    }
    const containers = this.doc.containers.map((c): ContainerStatus => {
      const p = live?.find((x) => x.execId === c.config.id);
      const state = p
        ? p.state === "running"
          ? this.doc.state === "paused"
            ? "paused"
            : "running"
          : "stopped"
        : c.state;
      return {
        id: c.config.id,
        state,
        ...(p?.pid ? { pid: p.pid } : {}),
        ...((p?.exit ?? c.exit) ? { exit: p?.exit ?? c.exit } : {}),
      };
    });
    const main = live?.find((x) => x.execId === MAIN_EXEC_ID);
    const guestProcess = this.doc.config.guestProcess
      ? main
        ? {
            state: main.state === "running" ? ("running" as const) : ("exited" as const),
            ...(main.exit ? { exit: main.exit } : {}),
          }
        : this.doc.guestProcessExit
          ? { state: "exited" as const, exit: this.doc.guestProcessExit }
          : { state: "created" as const }
      : undefined;
    return {
      id: this.id,
      state: this.doc.state,
      hypervisor: this.doc.config.hypervisorType,
      createdAt: this.doc.createdAt,
      pids: this.doc.state === "stopped" ? [] : this.hypervisor.getPids(),
      containers,
      ...(guestProcess ? { guestProcess } : {}),
      annotations: { ...this.doc.config.annotations },
      hostname: this.hostname(),
      ...(this.doc.stopCause ? { stopCause: this.doc.stopCause } : {}),
    };
  }

  /**
   * Waits until the sandbox stops (its main process ended, its VM died, or it was stopped)
   * and says why; `cocoon wait` exits with the main process's status from it.
   */
  async waitStopped(options: { pollMs?: number; signal?: AbortSignal } = {}): Promise<StopCause | undefined> {
    for (;;) {
      await this.refresh();
      if (this.doc.state === "stopped") return this.doc.stopCause;
      options.signal?.throwIfAborted();
      await sleep(options.pollMs ?? 200, undefined, options.signal ? { signal: options.signal } : {});
    }
  }

  /** Processes the agent knows of (running and recently exited). */
  async processes(): Promise<
    { execId: string; containerId?: string; pid: number; args: string[]; state: string; exit?: ProcessExit }[]
  > {
    await this.refresh();
    this.requireRunning("list processes");
    return (await (await this.agent()).call("process.list", {})).processes;
  }

  getAnnotations(): Record<string, string> {
    return { ...this.doc.config.annotations };
  }

  /** Sets annotations (read-modify-write under the sandbox lock: safe across processes). */
  async setAnnotations(values: Record<string, string>): Promise<void> {
    await this.locked("annotations", async () => {
      this.doc.config.annotations = { ...this.doc.config.annotations, ...values };
      await this.persist();
    });
  }

  /** Copies a host file into the sandbox (a container's root, or the guest's). */
  async copyIn(
    hostPath: string,
    guestPath: string,
    options: { containerId?: string; inGuest?: boolean } = {},
  ): Promise<number> {
    await this.refresh();
    this.requireRunning("copy files");
    const st = await stat(hostPath).catch(() => undefined);
    if (!st?.isFile())
      throw new SandboxError("ERR_INVALID_ARGUMENT", `${hostPath} is not a regular file on the host`);
    const agent = await this.agent();
    const stream = agent.openStream();
    const containerId = options.inGuest
      ? undefined
      : (options.containerId ?? this.doc.containers[0]?.config.id);
    const done = agent.call(
      "file.write",
      { path: guestPath, stream: stream.id, mode: st.mode & 0o7777, ...(containerId ? { containerId } : {}) },
      { timeoutMs: 0 },
    );
    done.catch(() => undefined);
    for await (const chunk of createReadStream(hostPath)) await stream.write(chunk as Buffer);
    stream.end();
    return (await done).bytes;
  }

  /** Copies a file out of the sandbox to the host. */
  async copyOut(
    guestPath: string,
    hostPath: string,
    options: { containerId?: string; inGuest?: boolean } = {},
  ): Promise<number> {
    await this.refresh();
    this.requireRunning("copy files");
    const agent = await this.agent();
    const stream = agent.openStream();
    stream.end();
    const containerId = options.inGuest
      ? undefined
      : (options.containerId ?? this.doc.containers[0]?.config.id);
    const result = agent.call(
      "file.read",
      { path: guestPath, stream: stream.id, ...(containerId ? { containerId } : {}) },
      { timeoutMs: 0 },
    );
    const tmp = `${hostPath}.cocoon-${process.pid}`;
    try {
      await Promise.all([pipeline(stream.readable, createWriteStream(tmp)), result]);
      const { mode } = await result;
      await chmod(tmp, mode);
      await rename(tmp, hostPath);
      return (await result).bytes;
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** The console log (the guest's serial output). */
  consoleLogPath(): string {
    return path.join(this.vmDir, "console.log");
  }

  /**
   * Watches the sandbox: emits "dead" with a reason when the VM exits or the agent stops
   * answering. Returns a function that stops watching.
   */
  monitor(options: { intervalMs?: number; onDead: (reason: string) => void }): () => void {
    let stopped = false;
    const interval = options.intervalMs ?? 2_000;
    const check = async (): Promise<void> => {
      if (stopped) return;
      try {
        await this.hypervisor.check();
        await (await this.agent()).call("health.check", {}, { timeoutMs: 10_000 });
      } catch (err) {
        if (stopped) return;
        stopped = true;
        const reason = isCocoonError(err) ? `${err.code}: ${err.message}` : messageOf(err);
        this.emit("dead", reason);
        options.onDead(reason);
        return;
      }
      timer = setTimeout(() => void check(), interval);
    };
    let timer = setTimeout(() => void check(), interval);
    const onClosed = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => void check(), 0);
    };
    this.on("agent-closed", onClosed);
    return () => {
      stopped = true;
      clearTimeout(timer);
      this.off("agent-closed", onClosed);
    };
  }

  // Resource control: live resize (resources/update.ts)
  /** Resizes the running VM (vCPUs, memory) and its host cgroup limits. */
  async update(request: ResizeRequest): Promise<ResizeResult> {
    return this.locked("update", async () => {
      if (this.doc.state !== "running" && this.doc.state !== "ready") this.requireRunning("update resources");
      try {
        return await resizeSandbox(
          {
            hypervisor: this.hypervisor,
            agent: await this.agent(),
            cgroups: await SandboxCgroups.load(this.ctx.store, this.id),
          },
          request,
        );
      } finally {
        this.doc.hypervisorState = this.hypervisor.save() as unknown as Record<string, unknown>;
        await this.persist();
      }
    });
  }

  /** One sample of the sandbox's figures (host cgroups, guest, containers); see statsRow. */
  async stats(): Promise<SandboxStats> {
    await this.refresh();
    const live = this.doc.state === "running" || this.doc.state === "ready";
    const running = this.doc.containers.filter((c) => c.state === "running").map((c) => c.config.id);
    return sampleStats(
      this.id,
      live ? await this.agent() : undefined,
      await SandboxCgroups.load(this.ctx.store, this.id),
      running,
      async () => {
        const net = live ? await networkRecord(this.ctx, this.id) : undefined;
        return net
          ? guestNetworkBytes(
              net.nsPath,
              net.endpoints.map((e) => e.tap),
            )
          : undefined;
      },
    );
  }

  // Networking (network.ts): Kata's AddInterface / RemoveInterface / UpdateRoutes / List*.
  /** Hot-plugs an interface of the sandbox's namespace into the VM; undone entirely on failure. */
  async addInterface(options: AddInterfaceOptions): Promise<GuestInterface> {
    return this.locked("add interface", async () => {
      this.requireRunning("add a network interface");
      try {
        return await addInterface(
          this.ctx,
          this.id,
          { hypervisor: this.hypervisor, agent: await this.agent() },
          options,
        );
      } finally {
        this.doc.hypervisorState = this.hypervisor.save() as unknown as Record<string, unknown>;
        await this.persist();
      }
    });
  }

  async removeInterface(iface: string): Promise<void> {
    await this.locked("remove interface", async () => {
      this.requireRunning("remove a network interface");
      try {
        await removeInterface(
          this.ctx,
          this.id,
          { hypervisor: this.hypervisor, agent: await this.agent() },
          iface,
        );
      } finally {
        this.doc.hypervisorState = this.hypervisor.save() as unknown as Record<string, unknown>;
        await this.persist();
      }
    });
  }

  async listInterfaces(): Promise<GuestInterface[]> {
    await this.refresh();
    this.requireRunning("list network interfaces");
    return (await (await this.agent()).call("network.listInterfaces", {})).interfaces;
  }

  async listRoutes(): Promise<GuestRoute[]> {
    await this.refresh();
    this.requireRunning("list routes");
    return (await (await this.agent()).call("network.listRoutes", {})).routes;
  }

  async updateRoutes(routes: GuestRoute[]): Promise<GuestRoute[]> {
    await this.refresh();
    this.requireRunning("update routes");
    return (await (await this.agent()).call("network.updateRoutes", { routes })).routes;
  }

  /** Lets go of this process's connections; the sandbox keeps running. */
  async release(): Promise<void> {
    await this.closeAgent();
    this.hypervisor.disconnect();
  }
}
