/**
 * The agent's start timeline (issue 14, cold start): when node's own phases ended
 * (`performance.nodeTiming`) and when the loader and startAgent() reached each step, all on the
 * guest's CLOCK_MONOTONIC (seconds since the guest booted, the clock of /proc/uptime and of
 * dmesg). After the first HELLO_ACK the agent writes it to START_TIMELINE_FILE, which
 * bench/agent-start-probe.ts reads: the first answer pays nothing for it but a few
 * `process.hrtime` calls.
 *
 * The loader and the agent bundle are two bundles, each with its own copy of this module: the
 * marks live on the process (a global under a registered symbol), so both add to one list.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

export const START_TIMELINE_FILE = "/run/cocoon/start-timeline.json";

export interface StartMark {
  name: string;
  /** Seconds on CLOCK_MONOTONIC. */
  at: number;
}

export interface StartTimeline {
  /** When the kernel created node's process (fork of the launcher), /proc/self/stat, 10 ms ticks. */
  forked?: number;
  /** node's time origin (its performance.now() 0), as close to its main() as node records. */
  timeOrigin: number;
  /** performance.nodeTiming's phases that had happened when the file was written. */
  node: Record<string, number>;
  marks: StartMark[];
}

const KEY = Symbol.for("cocoon.agent.startMarks");
type Holder = { [KEY]?: StartMark[] };

function now(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

function marks(): StartMark[] {
  const holder = globalThis as Holder;
  return (holder[KEY] ??= []);
}

/** Records that the start reached `name` now. */
export function markStart(name: string): void {
  marks().push({ name, at: now() });
}

/** Forgets every mark (a snapshot's deserialized main starts a new process's list). */
export function resetStartMarks(): void {
  (globalThis as Holder)[KEY] = [];
}

/** The timeline so far. `stat` is /proc/self/stat's content, when it could be read. */
export function startTimeline(stat?: string): StartTimeline {
  const t = now();
  const origin = t - performance.now() / 1000;
  const node: Record<string, number> = {};
  const timing = performance.nodeTiming as unknown as Record<string, unknown>;
  for (const phase of ["nodeStart", "v8Start", "environment", "bootstrapComplete", "loopStart"]) {
    const ms = timing[phase];
    // -1: not reached yet (loopStart while the main script runs)
    if (typeof ms === "number" && ms >= 0) node[phase] = origin + ms / 1000;
  }
  const out: StartTimeline = { timeOrigin: origin, node, marks: [...marks()] };
  // starttime is field 22; the command name (field 2) may hold spaces, so count after its ")".
  const fields = stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields?.[19]);
  if (Number.isFinite(ticks)) out.forked = ticks / 100;
  return out;
}

/** Writes the timeline so far to `file` (START_TIMELINE_FILE); never throws. */
export async function writeStartTimeline(file = START_TIMELINE_FILE): Promise<void> {
  try {
    const stat = await readFile("/proc/self/stat", "utf8").catch(() => undefined);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, `${JSON.stringify(startTimeline(stat), null, 1)}\n`);
  } catch {
    // a diagnostic only
  }
}
