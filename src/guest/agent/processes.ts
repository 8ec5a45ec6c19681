import { readdir, readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { constants as osConstants } from "node:os";
import type { Writable } from "node:stream";
import type { Connection } from "../../agent/protocol/connection.js";
import type { GuestProcessInfo, ProcessExit } from "../../agent/protocol/methods.js";
import { spawnWithNode, type Launch, type LaunchedChild } from "./child.js";
import { AgentOpError } from "./errors.js";
import { OutputPump } from "./output.js";

export const PTY_HELPER = "/usr/bin/cocoon-pty";
/** Exited processes kept for a later `wait`, oldest dropped first. */
const MAX_EXITED = 256;

export interface Stdio {
  stdin?: number;
  stdout?: number;
  stderr?: number;
}

export interface LaunchSpec {
  /** Resource control: extra facts about an exit, looked up before it is reported. */
  exitNote?: (exit: ProcessExit) => Promise<Partial<ProcessExit> | undefined>;
  execId: string;
  containerId?: string;
  /** What the user asked to run (for listings). */
  args: string[];
  /** What the agent actually spawns (the program itself, or runc, possibly under cocoon-pty). */
  argv: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  uid?: number;
  gid?: number;
  terminal: boolean;
  rows: number;
  cols: number;
  /**
   * The spawned program reports a signal death as exit code 128+N (runc, cocoon-pty) rather
   * than being killed itself: decode that into a signal name.
   */
  wrapped: boolean;
  /** Keep stdin open (a pipe) even with no stdin stream bound: terminals, and attach later. */
  openStdin: boolean;
  /** Where runc writes the pid of the process it runs (the one signals must reach). */
  pidFile?: string;
}

const SIGNAL_NAMES = new Map<number, string>(
  Object.entries(osConstants.signals).map(([name, num]) => [num, name]),
);

export function signalNumber(name: string): number {
  const n = (osConstants.signals as Record<string, number>)[name];
  if (n === undefined) throw new AgentOpError("INVALID_ARGUMENT", `unknown signal ${name}`);
  return n;
}

/** One process the agent started, with its output pumps and exit status. */
export class GuestProcess {
  readonly startedAt = new Date().toISOString();
  readonly stdout: OutputPump;
  readonly stderr: OutputPump | undefined;
  readonly stdin: Writable | null;
  private readonly control: Writable | undefined;
  exit: ProcessExit | undefined;
  /** Resolves once the process has exited and its output pipes have ended. */
  readonly done: Promise<ProcessExit>;

  constructor(
    readonly spec: LaunchSpec,
    readonly child: LaunchedChild,
  ) {
    this.stdin = child.stdin;
    this.stdout = new OutputPump(child.stdout);
    this.stderr = child.stderr ? new OutputPump(child.stderr) : undefined;
    this.control = child.control;
    this.control?.on("error", () => undefined);
    this.stdin?.on("error", () => undefined);
    const exited = child.exited.then(({ code, signal }) => decodeExit(code, signal, spec.wrapped));
    this.done = Promise.all([exited, this.stdout.ended, this.stderr?.ended]).then(async ([exit]) => {
      // Resource control: a container's exit learns whether the OOM killer caused it.
      this.exit = { ...exit, ...(await spec.exitNote?.(exit).catch(() => undefined)) };
      return this.exit;
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exit === undefined && !this.child.hasExited;
  }

  /** Connects the process's stdio to streams of a session. */
  bind(conn: Connection, stdio: Stdio): void {
    if (stdio.stdout !== undefined) this.stdout.bind(conn.stream(stdio.stdout));
    if (stdio.stderr !== undefined) {
      const s = conn.stream(stdio.stderr);
      if (this.stderr) this.stderr.bind(s);
      else s.end(); // a terminal merges stderr into stdout
    }
    if (stdio.stdin !== undefined) {
      const input = conn.stream(stdio.stdin);
      const sink = this.stdin;
      if (!sink) {
        input.end();
        return;
      }
      input.readable.on("data", (chunk: Buffer) => {
        if (!sink.write(chunk)) {
          input.readable.pause();
          sink.once("drain", () => input.readable.resume());
        }
      });
      // EOF from the host, or the host's session gone: the process sees end of input.
      const close = (): void => {
        if (!sink.writableEnded) sink.end();
        input.end();
      };
      input.readable.once("end", close);
      input.readable.once("error", close);
    }
  }

  closeStdin(): void {
    if (this.stdin && !this.stdin.writableEnded) this.stdin.end();
  }

  /**
   * The pid a signal must reach: the user's program, not the runc or cocoon-pty around it (a
   * wrapper forwards catchable signals, but SIGKILL would only kill the wrapper).
   */
  async targetPid(): Promise<number> {
    if (this.spec.pidFile) {
      const deadline = Date.now() + 5_000;
      for (;;) {
        const text = await readFile(this.spec.pidFile, "utf8").catch(() => "");
        if (/^\d+$/.test(text.trim())) return Number(text.trim());
        if (!this.running || Date.now() >= deadline) break;
        await sleep(20);
      }
    } else if (this.spec.terminal) {
      const child = await childOf(this.pid);
      if (child) return child;
    }
    return this.pid;
  }

  async signal(name: string): Promise<void> {
    const num = signalNumber(name);
    if (!this.running)
      throw new AgentOpError("INVALID_STATE", `process ${this.spec.execId} has already exited`);
    try {
      process.kill(await this.targetPid(), num);
    } catch (err) {
      throw new AgentOpError(
        "INVALID_STATE",
        `cannot signal process ${this.spec.execId}: ${(err as Error).message}`,
      );
    }
  }

  resize(rows: number, cols: number): void {
    if (!this.spec.terminal || !this.control) {
      throw new AgentOpError("INVALID_STATE", `process ${this.spec.execId} has no terminal`);
    }
    this.control.write(`${rows} ${cols}\n`);
  }

  info(): GuestProcessInfo {
    return {
      execId: this.spec.execId,
      ...(this.spec.containerId ? { containerId: this.spec.containerId } : {}),
      pid: this.pid,
      args: this.spec.args,
      terminal: this.spec.terminal,
      state: this.exit ? "exited" : "running",
      ...(this.exit ? { exit: this.exit } : {}),
      startedAt: this.startedAt,
    };
  }
}

/** The first child of `pid`, found by scanning /proc (the per-task "children" files need a kernel option). */
async function childOf(pid: number): Promise<number | undefined> {
  for (const entry of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid === pid) return Number(entry);
  }
  return undefined;
}

export function decodeExit(
  code: number | null,
  signal: NodeJS.Signals | null,
  wrapped: boolean,
): ProcessExit {
  if (signal) {
    const num = (osConstants.signals as Record<string, number>)[signal] ?? 0;
    return { exitCode: 128 + num, signal };
  }
  const exitCode = code ?? 0;
  if (wrapped && exitCode > 128 && SIGNAL_NAMES.has(exitCode - 128)) {
    return { exitCode, signal: SIGNAL_NAMES.get(exitCode - 128)! };
  }
  return { exitCode };
}

/** Every process the agent started, by exec id. Shared by all sessions. */
export class ProcessTable {
  private readonly procs = new Map<string, GuestProcess>();
  private readonly exitListeners = new Set<(p: GuestProcess) => void>();

  /** `launch` starts the processes: the agent's goes through cocoon-spawner (spawner.ts). */
  constructor(private readonly start: Launch = spawnWithNode) {}

  get(execId: string): GuestProcess {
    const p = this.procs.get(execId);
    if (!p) throw new AgentOpError("NOT_FOUND", `no process with exec id ${execId}`);
    return p;
  }

  has(execId: string): boolean {
    return this.procs.has(execId);
  }

  list(): GuestProcess[] {
    return [...this.procs.values()];
  }

  onExit(listener: (p: GuestProcess) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  /** Spawns a process; fails (without a record) if it cannot be started at all. */
  async launch(spec: LaunchSpec): Promise<GuestProcess> {
    if (this.procs.has(spec.execId)) {
      const old = this.procs.get(spec.execId)!;
      if (old.running)
        throw new AgentOpError("ALREADY_EXISTS", `a process with exec id ${spec.execId} is running`);
      this.procs.delete(spec.execId);
    }
    const argv = spec.terminal
      ? [PTY_HELPER, String(spec.rows), String(spec.cols), "--", ...spec.argv]
      : spec.argv;
    const child = await this.start({
      argv,
      env: spec.env,
      cwd: spec.cwd,
      uid: spec.uid,
      gid: spec.gid,
      stdin: spec.openStdin,
      terminal: spec.terminal,
    });
    const proc = new GuestProcess({ ...spec, argv }, child);
    this.procs.set(spec.execId, proc);
    void proc.done.then(() => {
      for (const l of this.exitListeners) l(proc);
      this.prune();
    });
    return proc;
  }

  remove(execId: string): void {
    this.procs.delete(execId);
  }

  private prune(): void {
    const exited = [...this.procs.values()].filter((p) => p.exit);
    for (const p of exited.slice(0, Math.max(0, exited.length - MAX_EXITED)))
      this.procs.delete(p.spec.execId);
  }
}
