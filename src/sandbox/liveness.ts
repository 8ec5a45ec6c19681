/**
 * The truth about a sandbox whose VM may have ended while no cocoon process looked: the
 * persisted document says what cocoon last did; the monitor's records (and, without a
 * monitor, the VMM's pid) say what happened since. Folding them gives the state every
 * command shows and acts on.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { isProcessAlive } from "../host/proc.js";
import { readMonitorRecords } from "../monitor/records.js";
import type { SandboxDoc } from "./state.js";

/** Why a sandbox is stopped when cocoon did not stop it (persisted in the document). */
export const stopCauseSchema = z.object({
  /** exited | signal | panic | oom (the VMM's end), main-exited, vanished, interrupted. */
  reason: z.string(),
  message: z.string(),
  /** The main process's exit status, when its end stopped the sandbox. */
  exitCode: z.number().int().optional(),
  at: z.string().optional(),
});
export type StopCause = z.infer<typeof stopCauseSchema>;

/** The cocoon process creating a sandbox (until the sandbox is ready). */
export const creatorSchema = z.object({ pid: z.number().int().positive(), startTime: z.number().optional() });

const LIVE_STATES = new Set(["ready", "running", "paused"]);

/** The exit status a shell would report for a sandbox stopped this way (docker's `Exited (N)`). */
export function exitStatusOf(cause: StopCause | undefined): number | undefined {
  return cause?.exitCode;
}

/**
 * Updates `doc` (in memory) from what happened to its VM. Returns true when the state changed.
 * A sandbox still being created by a live cocoon process is left alone.
 */
export async function foldLiveness(doc: SandboxDoc, vmDir: string): Promise<boolean> {
  if (!LIVE_STATES.has(doc.state)) return false;
  const creator = doc.creating;
  if (creator) {
    if (await isProcessAlive(creator.pid, creator.startTime)) return false;
    return stop(doc, {
      reason: "interrupted",
      message: `creating the sandbox was interrupted: cocoon (pid ${creator.pid}) died before it was ready`,
    });
  }
  const records = await readMonitorRecords(vmDir);
  if (records.mainExit) {
    const main = records.mainExit;
    const exit = {
      exitCode: main.exitCode,
      ...(main.signal ? { signal: main.signal } : {}),
      ...(main.oomKilled ? { oomKilled: true } : {}),
    };
    const first = doc.containers[0];
    if (first) first.exit = exit;
    else doc.guestProcessExit = exit;
    return stop(doc, {
      reason: main.oomKilled ? "oom" : "main-exited",
      message: `the main process ${main.signal ? `was killed by ${main.signal}` : `exited with status ${main.exitCode}`}${main.oomKilled ? " (out of memory)" : ""}`,
      exitCode: main.exitCode,
      at: main.at,
    });
  }
  if (records.vmmExit) {
    const v = records.vmmExit;
    return stop(doc, { reason: v.reason, message: v.message, at: v.at });
  }
  // No monitor record of an end: a VMM without a monitor (another driver, or a monitor that
  // was killed) is judged by its pid and start time.
  const hv = doc.hypervisorState;
  const pid = typeof hv?.pid === "number" ? hv.pid : 0;
  const startTime = typeof hv?.pidStartTime === "number" ? hv.pidStartTime : undefined;
  if (pid > 0 && !(await isProcessAlive(pid, startTime))) {
    return stop(doc, {
      reason: "vanished",
      message: `the VMM (pid ${pid}) is gone and nothing recorded why`,
    });
  }
  return false;
}

const VM_END_POLL_MS = 100;

/**
 * Resolves once the VM's monitor has recorded its end (the VMM's or the main process's), or
 * never: for racing a question to the agent of a VM that may be ending (`signal` stops it).
 */
export async function whenVmEnded(vmDir: string, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    const records = await readMonitorRecords(vmDir).catch(() => undefined);
    if (records?.vmmExit || records?.mainExit) return;
    await sleep(VM_END_POLL_MS, undefined, { signal }).catch(() => undefined);
  }
  return new Promise<void>(() => undefined);
}

function stop(doc: SandboxDoc, cause: StopCause): true {
  doc.state = "stopped";
  doc.stopCause = { ...cause, at: cause.at ?? new Date().toISOString() };
  for (const c of doc.containers) c.state = "stopped";
  return true;
}

/** "stopped: qemu-system-x86_64 was killed by SIGKILL" — for errors about a sandbox that is not running. */
export function describeState(doc: SandboxDoc): string {
  return doc.state === "stopped" && doc.stopCause ? `stopped: ${doc.stopCause.message}` : doc.state;
}
