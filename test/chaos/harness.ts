/**
 * The chaos suite's harness: a state root per run, the real `cocoon` executable, and the two
 * checks every fault ends with — the state is true (what ps says matches which processes
 * live), and after `rm -f` or `gc` nothing is left behind.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isProcessAlive } from "../../src/host/proc.js";
import { findTaggedProcesses } from "../../src/monitor/reap.js";
import { cocoon, type Spawned } from "../helpers/cli-process.js";
import { leaksUnder, monitorPids, psAll, type SandboxRow } from "../helpers/crash.js";
import { ASSETS_DIR } from "../helpers/env.js";

export interface ChaosContext {
  root: string;
  env: NodeJS.ProcessEnv;
  /** Runs the real CLI against this root. */
  cli(args: string[]): Spawned;
  /** Runs the CLI and fails unless it exits 0. */
  ok(args: string[]): Promise<string>;
  /** One line for the report. */
  say(line: string): void;
}

/** What one fault found, for its report lines. */
export interface FaultOutcome {
  injected: string;
  /** ms from the injection until `ps -a` told the truth (when the fault changes the state). */
  stateTrueMs?: number;
  /** ms from the injection until the monitor recorded the VMM's end. */
  recordedMs?: number;
  state?: string;
  cleanup: string;
}

export interface Fault {
  name: string;
  run(ctx: ChaosContext): Promise<FaultOutcome>;
}

/** Small guests: five engineers and TCG share two cores. */
export const MEMORY = ["--memory", "512"];

export function chaosContext(root: string, say: (line: string) => void): ChaosContext {
  // No network: the CLI's default bridge would put cocoon0 and its NAT rules in the machine's own
  // namespace, which tests must never touch (test/integration/network.test.ts covers networking).
  const env: NodeJS.ProcessEnv = {
    COCOON_ROOT: root,
    COCOON_ASSETS: ASSETS_DIR,
    COCOON_CONFIG: "",
    COCOON_NETWORK: "none",
  };
  const cli = (args: string[]) => cocoon(args, env);
  return {
    root,
    env,
    cli,
    say,
    async ok(args) {
      const r = await cli(args).result;
      if (r.code !== 0) {
        throw new Error(
          `cocoon ${args.join(" ")} exited ${r.code ?? r.signal}: ${r.stderr.toString().trim()}`,
        );
      }
      return r.stdout.toString();
    },
  };
}

const LIVE = new Set(["ready", "running", "paused", "created"]);

/** The sandbox's VMM according to its monitor's record, and whether it lives. */
export async function vmmOf(root: string, id: string): Promise<{ pid: number; alive: boolean } | undefined> {
  const pids = await monitorPids(root, id);
  if (!pids?.vmm) return undefined;
  return { pid: pids.vmm, alive: await isProcessAlive(pids.vmm) };
}

/**
 * Whether `ps -a` tells the truth about `id`: listed as live exactly when its VMM lives, and,
 * when not listed, no process of its VM is left running.
 */
export async function stateIsTrue(ctx: ChaosContext, id: string): Promise<{ ok: boolean; row?: SandboxRow }> {
  const row = (await psAll(ctx.env)).find((r) => r.id === id);
  const vmm = await vmmOf(ctx.root, id);
  const tagged = (await findTaggedProcesses(path.join(ctx.root, "run", "vm"))).filter(
    (p) => path.basename(p.vmDir) === id,
  );
  if (!row) return { ok: tagged.length === 0 };
  const live = LIVE.has(row.state);
  return { ok: live === (vmm?.alive ?? false), row };
}

/** Polls until the state is true; the time it took (undefined: not within `timeoutMs`). */
export async function timeUntilTrue(
  ctx: ChaosContext,
  id: string,
  since: number,
  /** The state the fault must end in (e.g. stopped), beyond being true. */
  want: (state: string) => boolean = () => true,
  timeoutMs = 15_000,
): Promise<{ ms?: number; row?: SandboxRow }> {
  for (;;) {
    const t = await stateIsTrue(ctx, id);
    if (t.ok && want(shown(t.row))) return { ms: Date.now() - since, ...(t.row ? { row: t.row } : {}) };
    if (Date.now() - since > timeoutMs) return t.row ? { row: t.row } : {};
    await sleep(50);
  }
}

/** How long after `since` the monitor recorded the VMM's end (undefined: not recorded). */
export async function recordedAfter(root: string, id: string, since: number): Promise<number | undefined> {
  try {
    const rec = JSON.parse(
      await readFile(path.join(root, "run", "vm", id, "monitor", "vmm-exit.json"), "utf8"),
    ) as { at: string };
    return Date.parse(rec.at) - since;
  } catch {
    return undefined;
  }
}

/** "stopped (signal)", "running", "absent": a row as ps shows it. */
export function shown(row: SandboxRow | undefined): string {
  if (!row) return "absent";
  if (row.stopCause) {
    return row.stopCause.exitCode !== undefined
      ? `exited (${row.stopCause.exitCode})`
      : `${row.state} (${row.stopCause.reason})`;
  }
  return row.state;
}

/** Everything left under the root, and cocoon-tagged processes anywhere. */
export async function leaks(root: string, sandboxIds: string[] = []): Promise<string[]> {
  const out = await leaksUnder(root, sandboxIds);
  for (const p of await findTaggedProcesses(path.join(root, "run", "vm"))) {
    const line = `process ${p.pid}`;
    if (!out.some((l) => l.startsWith(line))) out.push(`${line}: ${p.name} (tagged ${p.vmDir})`);
  }
  return out;
}

/** Fails with `message` unless `cond`. */
export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** Waits for a condition (polling), failing after `timeoutMs`. */
export async function until(
  what: string,
  cond: () => Promise<boolean>,
  timeoutMs = 300_000,
  pollMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(pollMs);
  }
}
