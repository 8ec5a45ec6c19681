/**
 * Starting a VMM under a per-sandbox monitor (see spec.ts), and the handle the starter keeps
 * on it. The handle behaves like a child process (WatchedProcess) for as long as the starter
 * lives, but the VMM is the monitor's child: when the starter dies, the monitor still sees the
 * VMM end and records why.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { HypervisorError, StoreError, messageOf } from "../errors.js";
import { isProcessAlive } from "../host/proc.js";
import { FROM_SOURCE, packagePath, programScript } from "../package-root.js";
import {
  escalate,
  settleWithin,
  type EscalationStep,
  type ExitStatus,
  type WatchedProcess,
} from "../host/process.js";
import { readFileTail } from "./reason.js";
import { monitorDir } from "./records.js";
import { OWNER_ENV, monitorEventSchema, type MonitorEvent, type MonitorSpec } from "./spec.js";

/**
 * How the monitor program is run: the TypeScript source under tsx when we run from the sources
 * (tests), else its bundle (dist/bundle/monitor.js, quicker to load) or tsc's dist/monitor/main.js.
 */
function monitorCommand(): string[] {
  if (FROM_SOURCE) return ["--import", import.meta.resolve("tsx"), packagePath("src/monitor/main.ts")];
  return [programScript("monitor", "monitor/main.js")];
}

const POLL_MS = 100;

/** A VMM started by a monitor, seen from the process that asked for it. */
export class SupervisedVmm implements WatchedProcess {
  private status: ExitStatus | undefined;
  /** Resolves when the VMM has exited (told by the monitor, or seen gone). Keeps no event loop alive. */
  readonly exited: Promise<ExitStatus>;

  constructor(
    readonly pid: number,
    readonly startTime: number | undefined,
    readonly file: string,
    readonly monitor: { pid: number; child: ChildProcess },
    events: AsyncIterable<MonitorEvent>,
  ) {
    this.exited = this.follow(events).then((status) => (this.status = status));
  }

  private async follow(events: AsyncIterable<MonitorEvent>): Promise<ExitStatus> {
    try {
      for await (const event of events) {
        if (event.event === "exited")
          return { code: event.code, signal: event.signal as NodeJS.Signals | null };
      }
    } catch {
      // the monitor's stdout broke: fall back to watching the pid
    }
    // The monitor is gone without telling (it was killed): watch the VMM by pid and start time.
    while (await isProcessAlive(this.pid, this.startTime)) await sleep(POLL_MS, undefined, { ref: false });
    return { code: null, signal: null };
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  get running(): boolean {
    return this.status === undefined;
  }

  signal(sig: NodeJS.Signals): boolean {
    if (!this.running) return false;
    try {
      process.kill(this.pid, sig);
      return true;
    } catch {
      return false;
    }
  }

  async waitFor(timeoutMs: number): Promise<ExitStatus | undefined> {
    return this.status ?? settleWithin(this.exited, timeoutMs);
  }

  terminate(steps?: EscalationStep[]): Promise<ExitStatus> {
    return escalate(this, steps);
  }
}

async function* parseEvents(child: ChildProcess): AsyncGenerator<MonitorEvent> {
  const lines = createInterface({ input: child.stdout!, crlfDelay: Infinity });
  for await (const line of lines) {
    try {
      const parsed = monitorEventSchema.safeParse(JSON.parse(line));
      if (parsed.success) yield parsed.data;
    } catch {
      // not one of ours
    }
  }
}

export interface StartMonitorOptions {
  /** How long to wait for the monitor to report the VMM started (default 30 s). */
  timeoutMs?: number;
}

/**
 * Starts a monitor that runs `spec.launch`, and resolves once the VMM process exists. The
 * monitor is detached (its own session) so nothing the starter's terminal does reaches it.
 */
export async function startMonitor(
  spec: MonitorSpec,
  options: StartMonitorOptions = {},
): Promise<SupervisedVmm> {
  const dir = monitorDir(spec.vmDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const specPath = path.join(dir, "spec.json");
  try {
    await writeFile(specPath, JSON.stringify(spec) + "\n", { mode: 0o600 });
  } catch (err) {
    // A full state root: a clear error, and no half-written spec for a monitor to choke on.
    await rm(specPath, { force: true }).catch(() => undefined);
    throw new StoreError("ERR_STATE_IO", `cannot write ${specPath}: ${messageOf(err)}`, {
      cause: err,
      details: { file: specPath },
    });
  }
  const logPath = path.join(dir, "monitor.log");
  const logFd = openSync(logPath, "a");
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...monitorCommand(), specPath], {
      detached: true,
      stdio: ["ignore", "pipe", logFd],
      // Tagged like everything cocoon starts for this VM, so a crash cleanup finds it.
      env: { ...process.env, [OWNER_ENV]: spec.vmDir },
      shell: false,
    });
  } finally {
    closeSync(logFd);
  }
  const failed = (why: string): Promise<never> =>
    readFileTail(logPath, 4096).then((log) => {
      throw new HypervisorError(
        "ERR_VMM_START",
        `${why}${log.trim() ? `: ${log.trim().split("\n").slice(-3).join(" | ")}` : ""}`,
        {
          details: { vmm: spec.launch.file, monitorLog: logPath },
        },
      );
    });
  const events = parseEvents(child);
  const iterator = events[Symbol.asyncIterator]();
  const timeoutMs = options.timeoutMs ?? 30_000;
  const ac = new AbortController();
  const first = await Promise.race([
    iterator.next(),
    sleep(timeoutMs, "timeout" as const, { signal: ac.signal }).catch(() => "timeout" as const),
  ]);
  ac.abort();
  if (first === "timeout") {
    child.kill("SIGKILL");
    return failed(`the monitor did not start ${spec.launch.file} within ${timeoutMs} ms`);
  }
  if (first.done) return failed(`the monitor for ${spec.launch.file} exited before starting it`);
  const event = first.value;
  if (event.event !== "started") {
    return failed(event.event === "failed" ? event.message : `the monitor reported ${event.event} first`);
  }
  // The starter may exit at any time from now on: nothing here may keep it alive.
  child.unref();
  (child.stdout as Socket | null)?.unref();
  const rest: AsyncIterable<MonitorEvent> = { [Symbol.asyncIterator]: () => iterator };
  return new SupervisedVmm(event.pid, event.startTime, spec.launch.file, { pid: child.pid!, child }, rest);
}
