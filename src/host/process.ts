import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { HostError, errnoCode, messageOf } from "../errors.js";
import { isProcessAlive, readProcStat } from "./proc.js";

/** How a process ended: an exit code, or the signal that killed it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export function describeExit(status: ExitStatus): string {
  return status.signal ? `killed by ${status.signal}` : `exited with code ${String(status.code)}`;
}

/** Keeps the last `limit` bytes written to it: the stderr tail for error messages. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit = 16 * 1024) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.limit && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
  }

  toString(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString("utf8");
  }
}

export interface SpawnOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Standard streams: "pipe" keeps a tail in memory, "ignore" drops them, a number is an fd. */
  stdin?: "pipe" | "ignore" | number;
  stdout?: "pipe" | "ignore" | number;
  stderr?: "pipe" | "ignore" | number;
  /**
   * Start in a new session so the process outlives this one (a VMM another cocoon process
   * will drive later). The process is unref'd so it does not keep Node alive.
   */
  detached?: boolean;
  /** Bytes of stdout/stderr tail to keep (default 16 KiB). */
  tailBytes?: number;
}

/** One step of a termination sequence: do something, then wait up to `timeoutMs` for the exit. */
export interface EscalationStep {
  /** A signal to send, or a graceful action (e.g. QMP `system_powerdown`). */
  signal?: NodeJS.Signals;
  action?: () => Promise<void>;
  timeoutMs: number;
  /** Name for logs and errors. */
  name?: string;
}

/** The seed's stop sequence: SIGTERM, poll up to 15 s, then SIGKILL. */
export const DEFAULT_ESCALATION: EscalationStep[] = [
  { signal: "SIGTERM", timeoutMs: 15_000 },
  { signal: "SIGKILL", timeoutMs: 5_000 },
];

export const POLL_INTERVAL_MS = 50;

/**
 * A child process cocoon started. Always spawned without a shell; its exit is observed
 * through `exited`, which never rejects, so the child is always reaped.
 */
export class ManagedProcess {
  readonly exited: Promise<ExitStatus>;
  /** Resolves once the process has exited and its piped streams are drained. */
  readonly closed: Promise<void>;
  private status: ExitStatus | undefined;
  private readonly stderr = new TailBuffer();
  private readonly stdout = new TailBuffer();

  private constructor(
    readonly child: ChildProcess,
    readonly pid: number,
    readonly file: string,
    readonly args: readonly string[],
    tailBytes: number,
  ) {
    this.stderr = new TailBuffer(tailBytes);
    this.stdout = new TailBuffer(tailBytes);
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.status = { code, signal };
        resolve(this.status);
      });
    });
    this.closed = new Promise((resolve) => child.once("close", () => resolve()));
    child.stderr?.on("data", (c: Buffer) => this.stderr.push(c));
    child.stdout?.on("data", (c: Buffer) => this.stdout.push(c));
  }

  /** Spawns `file` with `args` (no shell) and resolves once the process exists. */
  static async spawn(
    file: string,
    args: readonly string[],
    options: SpawnOptions = {},
  ): Promise<ManagedProcess> {
    const stdio: StdioOptions = [
      options.stdin ?? "ignore",
      options.stdout ?? "pipe",
      options.stderr ?? "pipe",
    ];
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio,
      detached: options.detached ?? false,
      shell: false,
    });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", () => resolve());
      child.once("error", (err) => {
        if (errnoCode(err) === "ENOENT") {
          reject(
            new HostError("ERR_HOST_MISSING_TOOL", `cannot run ${file}: no such program`, {
              cause: err,
              details: { file },
            }),
          );
        } else {
          reject(
            new HostError("ERR_PROCESS", `cannot run ${file}: ${messageOf(err)}`, {
              cause: err,
              details: { file },
            }),
          );
        }
      });
    });
    if (options.detached) child.unref();
    return new ManagedProcess(child, child.pid!, file, args, options.tailBytes ?? 16 * 1024);
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  get running(): boolean {
    return this.status === undefined;
  }

  stderrTail(): string {
    return this.stderr.toString();
  }

  stdoutTail(): string {
    return this.stdout.toString();
  }

  get stdoutStream(): Readable | null {
    return this.child.stdout;
  }

  /** Sends a signal if still running; false when the process is already gone. */
  signal(sig: NodeJS.Signals): boolean {
    if (!this.running) return false;
    try {
      return this.child.kill(sig);
    } catch {
      return false;
    }
  }

  /** Waits up to `timeoutMs` for the exit; undefined on timeout. */
  async waitFor(timeoutMs: number): Promise<ExitStatus | undefined> {
    return this.status ?? settleWithin(this.exited, timeoutMs);
  }

  /** Runs the escalation steps until the process exits; SIGKILL is always the last resort. */
  terminate(steps: EscalationStep[] = DEFAULT_ESCALATION): Promise<ExitStatus> {
    return escalate(this, steps);
  }
}

/**
 * A process this one observes the end of: a child (ManagedProcess) or a VMM a monitor
 * watches for us (SupervisedVmm). Drivers depend on this, not on how the process was started.
 */
export interface WatchedProcess {
  readonly pid: number;
  readonly file: string;
  readonly exited: Promise<ExitStatus>;
  readonly exitStatus: ExitStatus | undefined;
  readonly running: boolean;
  signal(sig: NodeJS.Signals): boolean;
  waitFor(timeoutMs: number): Promise<ExitStatus | undefined>;
  terminate(steps?: EscalationStep[]): Promise<ExitStatus>;
}

/** Runs the escalation steps until `proc` exits; SIGKILL is always the last resort. */
export async function escalate(
  proc: Omit<WatchedProcess, "terminate" | "exited" | "exitStatus">,
  steps: EscalationStep[] = DEFAULT_ESCALATION,
): Promise<ExitStatus> {
  for (const step of withFinalKill(steps)) {
    if (!proc.running) break;
    try {
      if (step.action) await step.action();
      if (step.signal) proc.signal(step.signal);
    } catch {
      // A failed graceful step (e.g. the control socket is already gone) falls through to the next one.
    }
    if (await proc.waitFor(step.timeoutMs)) break;
  }
  const status = await proc.waitFor(60_000);
  if (!status) {
    throw new HostError("ERR_PROCESS", `process ${proc.pid} (${proc.file}) survived SIGKILL`, {
      details: { pid: proc.pid },
    });
  }
  return status;
}

function withFinalKill(steps: EscalationStep[]): EscalationStep[] {
  return steps.some((s) => s.signal === "SIGKILL")
    ? steps
    : [...steps, { signal: "SIGKILL", timeoutMs: 5_000 }];
}

/** Sends a signal to a pid that may not be our child; false when it no longer exists. */
export function signalPid(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ESRCH") return false;
    throw new HostError("ERR_PROCESS", `cannot signal pid ${pid}: ${messageOf(err)}`, {
      cause: err,
      details: { pid },
    });
  }
}

/** Polls until `pid` is gone (or, with a start time, is no longer that process). */
export async function waitPidGone(
  pid: number,
  timeoutMs: number,
  startTime?: number,
  pollMs = POLL_INTERVAL_MS,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isProcessAlive(pid, startTime))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
}

/**
 * Terminates a process known only by pid (started by another cocoon process, or a
 * daemonized VMM). The start time guards against signalling a recycled pid.
 */
export async function terminatePid(
  pid: number,
  options: { startTime?: number; steps?: EscalationStep[]; pollMs?: number } = {},
): Promise<void> {
  for (const step of withFinalKill(options.steps ?? DEFAULT_ESCALATION)) {
    if (!(await isProcessAlive(pid, options.startTime))) return;
    try {
      if (step.action) await step.action();
      if (step.signal) signalPid(pid, step.signal);
    } catch {
      // fall through to the next, harsher step
    }
    if (await waitPidGone(pid, step.timeoutMs, options.startTime, options.pollMs)) return;
  }
  if (await isProcessAlive(pid, options.startTime)) {
    throw new HostError("ERR_PROCESS", `process ${pid} survived SIGKILL`, { details: { pid } });
  }
}

/** The start time of a live pid, for persisting alongside it. */
export async function pidStartTime(pid: number): Promise<number | undefined> {
  return (await readProcStat(pid))?.startTime;
}

export interface RunResult extends ExitStatus {
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs a short command to completion and collects its output (no shell). A timeout kills it
 * with SIGKILL and reports `timedOut`. A missing program is an ERR_HOST_MISSING_TOOL error.
 */
export async function runCommand(
  file: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string | Buffer } = {},
): Promise<RunResult> {
  const proc = await ManagedProcess.spawn(file, args, {
    cwd: options.cwd,
    env: options.env,
    stdin: options.input === undefined ? "ignore" : "pipe",
    tailBytes: 4 * 1024 * 1024,
  });
  if (options.input !== undefined) proc.child.stdin?.end(options.input);
  let timedOut = false;
  let status = await proc.waitFor(options.timeoutMs ?? 120_000);
  if (!status) {
    timedOut = true;
    proc.signal("SIGKILL");
    status = await proc.exited;
  }
  // 'exit' can come before the last 'data': wait for the pipes to close.
  await proc.closed;
  return { ...status, stdout: proc.stdoutTail(), stderr: proc.stderrTail(), timedOut };
}

/** Like runCommand, but a non-zero exit is an error carrying the stderr tail. */
export async function runChecked(
  file: string,
  args: readonly string[],
  options: Parameters<typeof runCommand>[2] = {},
): Promise<RunResult> {
  const result = await runCommand(file, args, options);
  if (result.timedOut || result.code !== 0) {
    const why = result.timedOut ? "timed out" : describeExit(result);
    throw new HostError(
      "ERR_PROCESS",
      `${file} ${args.join(" ")} ${why}: ${result.stderr.trim().slice(-2000)}`,
      {
        details: { file, args: [...args], code: result.code, signal: result.signal },
      },
    );
  }
  return result;
}

/** `promise`'s value if it settles within `timeoutMs`, else undefined (the timer is cleared either way). */
export async function settleWithin<T>(promise: Promise<T>, timeoutMs: number): Promise<T | undefined> {
  const ac = new AbortController();
  const timer = sleep(timeoutMs, undefined, { signal: ac.signal }).catch(() => undefined);
  try {
    return await Promise.race([promise, timer]);
  } finally {
    ac.abort();
  }
}
