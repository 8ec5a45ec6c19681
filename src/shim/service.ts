import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import * as shim from "../gen/shim/github.com/containerd/containerd/runtime/v2/task/shim_pb.js";
import * as ev from "../gen/shim/github.com/containerd/containerd/api/events/task_pb.js";
import { Status } from "../gen/shim/github.com/containerd/containerd/api/types/task/task_pb.js";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { CLEANED_MARKER } from "./delete.js";
import type { EventPublisher } from "./events.js";
import { ShimProcess, signalName } from "./process.js";
import { mountRootfs, unmountRootfs, bundleRootfs } from "./rootfs.js";
import { podRoleOf } from "./pod.js";
import { parseExecSpec, readBundleSpec } from "./spec.js";
import { metricsAny } from "./stats.js";
import { ProcessIo } from "./stdio.js";
import { Code, TtrpcError } from "./ttrpc/status.js";
import type { ShimVm, VmRequest } from "./vm.js";

/** One containerd task (container) served by this shim, and its processes. */
interface Task {
  id: string;
  bundle: string;
  vm: ShimVm;
  mountedRootfs: boolean;
  procs: Map<string, ShimProcess>;
  /** For a pod's later container: the task id of the pod's sandbox container, whose VM it is in. */
  podSandboxId?: string;
}

export interface TaskServiceDeps {
  namespace: string;
  logger: Logger;
  events: EventPublisher;
  bootVm: (req: VmRequest, logger: Logger) => Promise<ShimVm>;
  /** Called when Shutdown finds no task left: the process exits. */
  onShutdown: () => void;
}

const ts = (d: Date | undefined) => (d ? timestampFromDate(d) : undefined);

/** containerd.task.v2.Task (and v3) on cocoon sandboxes: one VM per task. */
export class TaskService {
  private readonly tasks = new Map<string, Task>();

  constructor(private readonly deps: TaskServiceDeps) {}

  get taskCount(): number {
    return this.tasks.size;
  }

  private task(id: string): Task {
    const t = this.tasks.get(id);
    if (!t) throw new TtrpcError(Code.notFound, `task ${id} not found`);
    return t;
  }

  private proc(id: string, execId: string): { t: Task; p: ShimProcess } {
    const t = this.task(id);
    const p = t.procs.get(execId);
    if (!p) throw new TtrpcError(Code.notFound, `process ${execId} of task ${id} not found`);
    return { t, p };
  }

  async create(req: shim.CreateTaskRequest): Promise<{ pid: number }> {
    if (this.tasks.has(req.id)) throw new TtrpcError(Code.alreadyExists, `task ${req.id} already exists`);
    if (req.checkpoint) throw new TtrpcError(Code.unimplemented, "checkpoint restore is not supported");
    const spec = await readBundleSpec(req.bundle);
    const stdio = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    this.deps.logger.debug({ id: req.id, ...stdio, rootfs: req.rootfs.map((m) => m.type) }, "create");
    let mounted = false;
    let io: ProcessIo | undefined;
    try {
      if (req.rootfs.length) {
        await mountRootfs(req.bundle, req.rootfs);
        mounted = true;
      }
      io = await ProcessIo.open(stdio, req.id, this.deps.namespace);
      const container = {
        taskId: req.id,
        rootfsDir: mounted ? bundleRootfs(req.bundle) : spec.rootPath,
        process: { ...spec.process, terminal: req.terminal },
        ...(spec.hostname ? { hostname: spec.hostname } : {}),
        readonlyRootfs: spec.readonly,
      };
      const pod = podRoleOf(req.id, spec.annotations);
      const vm =
        pod?.role === "container"
          ? await this.podVm(pod.sandboxId, req.id).addContainer(container)
          : await this.deps.bootVm(
              {
                ...container,
                namespace: this.deps.namespace,
                annotations: spec.annotations,
                ...(spec.netnsPath ? { netnsPath: spec.netnsPath } : {}),
                ...(pod ? { pod: true } : {}),
              },
              this.deps.logger,
            );
      const init = new ShimProcess("", stdio, io);
      this.tasks.set(req.id, {
        id: req.id,
        bundle: req.bundle,
        vm,
        mountedRootfs: mounted,
        procs: new Map([["", init]]),
        ...(pod?.role === "container" ? { podSandboxId: pod.sandboxId } : {}),
      });
      void this.deps.events.publish("/tasks/create", ev.TaskCreateSchema, {
        containerId: req.id,
        bundle: req.bundle,
        rootfs: req.rootfs,
        io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
        checkpoint: req.checkpoint,
        pid: vm.pid,
      });
      return { pid: vm.pid };
    } catch (err) {
      await io?.close().catch(() => undefined);
      if (mounted) await unmountRootfs(req.bundle).catch(() => undefined);
      throw err;
    }
  }

  /** The VM of a pod's sandbox task, which this shim must serve (containerd groups by pod). */
  private podVm(sandboxId: string, taskId: string): ShimVm {
    const owner = this.tasks.get(sandboxId);
    if (!owner)
      throw new TtrpcError(
        Code.failedPrecondition,
        `container ${taskId} belongs to pod ${sandboxId}, whose sandbox task this shim does not run`,
      );
    const init = owner.procs.get("");
    if (init?.status === Status.STOPPED)
      throw new TtrpcError(Code.failedPrecondition, `the sandbox task of pod ${sandboxId} has stopped`);
    return owner.vm;
  }

  async start(req: shim.StartRequest): Promise<{ pid: number }> {
    const { t, p } = this.proc(req.id, req.execId);
    if (p.status !== Status.CREATED)
      throw new TtrpcError(Code.failedPrecondition, `process ${req.execId || req.id} was already started`);
    const attach = { stdin: p.io.hasStdin, ...(p.stdio.terminal ? { rows: 24, cols: 80 } : {}) };
    let guest;
    try {
      guest =
        p.execId === ""
          ? await t.vm.startMain(attach)
          : await t.vm.exec(p.execId, this.execSpecs.get(key(t.id, p.execId))!, attach);
    } catch (err) {
      await p.abandon(255);
      throw err;
    }
    // Exit handling is attached before anything else is awaited, and TaskStart is queued first,
    // so a fast exit can never overtake the start event.
    if (p.execId === "")
      void this.deps.events.publish("/tasks/start", ev.TaskStartSchema, { containerId: t.id, pid: t.vm.pid });
    else
      void this.deps.events.publish("/tasks/exec-started", ev.TaskExecStartedSchema, {
        containerId: t.id,
        execId: p.execId,
        pid: t.vm.pid,
      });
    p.follow(guest, (done) =>
      this.deps.events.publish("/tasks/exit", ev.TaskExitSchema, {
        containerId: t.id,
        id: done.execId || t.id,
        pid: t.vm.pid,
        exitStatus: done.exitStatus,
        exitedAt: ts(done.exitedAt),
      }),
    );
    return { pid: t.vm.pid };
  }

  private readonly execSpecs = new Map<string, import("../sandbox/config.js").ProcessConfig>();

  async exec(req: shim.ExecProcessRequest): Promise<void> {
    const t = this.task(req.id);
    if (!req.execId) throw new TtrpcError(Code.invalidArgument, "exec needs an exec id");
    if (t.procs.has(req.execId))
      throw new TtrpcError(Code.alreadyExists, `exec ${req.execId} already exists`);
    const spec = parseExecSpec(req.spec?.value);
    const stdio = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    const io = await ProcessIo.open(stdio, req.id, this.deps.namespace);
    this.execSpecs.set(key(t.id, req.execId), { ...spec, terminal: req.terminal });
    t.procs.set(req.execId, new ShimProcess(req.execId, stdio, io));
    void this.deps.events.publish("/tasks/exec-added", ev.TaskExecAddedSchema, {
      containerId: t.id,
      execId: req.execId,
    });
  }

  async state(req: shim.StateRequest): Promise<Partial<shim.StateResponse>> {
    const { t, p } = this.proc(req.id, req.execId);
    return {
      id: p.execId || t.id,
      bundle: t.bundle,
      pid: t.vm.pid,
      status: p.status,
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exitStatus: p.exitStatus,
      exitedAt: ts(p.exitedAt),
      execId: p.execId,
    };
  }

  async wait(req: shim.WaitRequest): Promise<Partial<shim.WaitResponse>> {
    const { p } = this.proc(req.id, req.execId);
    await p.exited;
    return { exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
  }

  async kill(req: shim.KillRequest): Promise<void> {
    const { t, p } = this.proc(req.id, req.execId);
    if (p.status === Status.STOPPED)
      throw new TtrpcError(Code.notFound, `process ${req.execId || req.id} already finished`);
    if (p.status === Status.CREATED) {
      await p.abandon(128 + (req.signal || 15));
      return;
    }
    const name = signalName(req.signal);
    await t.vm.signal(p.execId, name, req.all && p.execId === "");
  }

  async delete(req: shim.DeleteRequest): Promise<Partial<shim.DeleteResponse>> {
    const { t, p } = this.proc(req.id, req.execId);
    if (p.status === Status.RUNNING || p.status === Status.PAUSED)
      throw new TtrpcError(Code.failedPrecondition, `process ${req.execId || req.id} is still running`);
    const members = [...this.tasks.values()].filter((x) => x.podSandboxId === t.id).map((x) => x.id);
    if (p.execId === "" && members.length)
      throw new TtrpcError(
        Code.failedPrecondition,
        `pod ${t.id} still has containers (${members.join(", ")}): delete them first`,
      );
    if (p.status === Status.CREATED) await p.abandon(0);
    await p.exited;
    const answer = { pid: t.vm.pid, exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt ?? new Date()) };
    if (p.execId !== "") {
      t.procs.delete(p.execId);
      this.execSpecs.delete(key(t.id, p.execId));
      return answer;
    }
    for (const other of t.procs.values())
      if (other !== p && other.status !== Status.STOPPED) await other.abandon(137);
    try {
      await t.vm.destroy();
    } finally {
      if (t.mountedRootfs) await unmountRootfs(t.bundle);
      this.tasks.delete(t.id);
    }
    await writeFile(path.join(t.bundle, CLEANED_MARKER), "").catch(() => undefined);
    void this.deps.events.publish("/tasks/delete", ev.TaskDeleteSchema, {
      containerId: t.id,
      pid: answer.pid,
      exitStatus: answer.exitStatus,
      exitedAt: answer.exitedAt,
      id: t.id,
    });
    return answer;
  }

  async pids(req: shim.PidsRequest): Promise<MessageInitShape<typeof shim.PidsResponseSchema>> {
    const t = this.task(req.id);
    return { processes: [{ pid: t.vm.pid }] };
  }

  async pause(req: shim.PauseRequest): Promise<void> {
    const t = this.task(req.id);
    await t.vm.pause();
    for (const p of t.procs.values()) if (p.status === Status.RUNNING) p.status = Status.PAUSED;
    void this.deps.events.publish("/tasks/paused", ev.TaskPausedSchema, { containerId: t.id });
  }

  async resume(req: shim.ResumeRequest): Promise<void> {
    const t = this.task(req.id);
    await t.vm.resume();
    for (const p of t.procs.values()) if (p.status === Status.PAUSED) p.status = Status.RUNNING;
    void this.deps.events.publish("/tasks/resumed", ev.TaskResumedSchema, { containerId: t.id });
  }

  async resizePty(req: shim.ResizePtyRequest): Promise<void> {
    const { p } = this.proc(req.id, req.execId);
    if (!p.guest) throw new TtrpcError(Code.failedPrecondition, "the process has not started");
    await p.guest.resize(req.height, req.width);
  }

  async closeIO(req: shim.CloseIORequest): Promise<void> {
    const { p } = this.proc(req.id, req.execId);
    if (req.stdin) p.io.closeStdin(p.guest?.stdin);
  }

  /** Resizes the task's VM where the hypervisor can (q35); elsewhere FailedPrecondition says why. */
  async update(req: shim.UpdateTaskRequest): Promise<void> {
    const t = this.task(req.id);
    await t.vm.update(req.resources?.value);
  }

  async stats(req: shim.StatsRequest): Promise<MessageInitShape<typeof shim.StatsResponseSchema>> {
    const t = this.task(req.id);
    return { stats: metricsAny(await t.vm.stats()) };
  }

  async connect(req: shim.ConnectRequest): Promise<Partial<shim.ConnectResponse>> {
    const t = this.task(req.id);
    return { shimPid: process.pid, taskPid: t.vm.pid, version: "" };
  }

  async shutdown(_req: shim.ShutdownRequest): Promise<void> {
    if (this.tasks.size === 0) this.deps.onShutdown();
  }

  /** Handlers by the generated service's method names. */
  handlers(): Record<string, (req: never) => Promise<unknown>> {
    const bind = <R>(f: (r: R) => Promise<unknown>) => f.bind(this) as (req: never) => Promise<unknown>;
    return {
      state: bind(this.state),
      create: bind(this.create),
      start: bind(this.start),
      delete: bind(this.delete),
      pids: bind(this.pids),
      pause: bind(this.pause),
      resume: bind(this.resume),
      kill: bind(this.kill),
      exec: bind(this.exec),
      resizePty: bind(this.resizePty),
      closeIO: bind(this.closeIO),
      update: bind(this.update),
      wait: bind(this.wait),
      connect: bind(this.connect),
      shutdown: bind(this.shutdown),
      stats: bind(this.stats),
      // checkpoint is answered Unimplemented (not registered).
    };
  }
}

function key(id: string, execId: string): string {
  return `${id}\0${execId}`;
}
