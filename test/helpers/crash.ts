/** Helpers for crash tests and the chaos suite: find a sandbox's processes, inject faults, look for leaks. */
import { readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { existingSandboxCgroups } from "../../src/sandbox/resources/host-cgroups.js";
import { cocoon } from "./cli-process.js";
import { processesMentioning } from "./env.js";

export interface SandboxRow {
  id: string;
  state: string;
  stopCause?: { reason: string; message: string; exitCode?: number };
  guestProcess?: { state: string; exit?: { exitCode: number } };
}

/** `cocoon ps -a --json`, parsed. */
export async function psAll(env: NodeJS.ProcessEnv): Promise<SandboxRow[]> {
  const r = await cocoon(["ps", "-a", "--json"], env).result;
  if (r.code !== 0) throw new Error(`cocoon ps failed: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString() || "[]") as SandboxRow[];
}

export async function rowOf(env: NodeJS.ProcessEnv, id: string): Promise<SandboxRow | undefined> {
  return (await psAll(env)).find((s) => s.id === id);
}

/** The pids a sandbox's monitor recorded (undefined until the VMM was started). */
export async function monitorPids(
  root: string,
  id: string,
): Promise<{ monitor: number; vmm?: number } | undefined> {
  try {
    const rec = JSON.parse(
      await readFile(path.join(root, "run", "vm", id, "monitor", "monitor.json"), "utf8"),
    ) as {
      monitor: { pid: number };
      vmm?: { pid: number };
    };
    return { monitor: rec.monitor.pid, ...(rec.vmm ? { vmm: rec.vmm.pid } : {}) };
  } catch {
    return undefined;
  }
}

/** Waits until the sandbox's VMM exists (its monitor recorded it), polling. */
export async function waitForVmm(root: string, id: string, timeoutMs = 300_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = await monitorPids(root, id);
    if (pids?.vmm) return pids.vmm;
    if (Date.now() > deadline) throw new Error(`no VMM for ${id} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns how long it took, or undefined. */
export async function within(timeoutMs: number, check: () => Promise<boolean>): Promise<number | undefined> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) return undefined;
    await sleep(50);
  }
}

/** Everything a root may hold that should be gone: processes, state entries, mounts, locks. */
export async function leaksUnder(root: string, sandboxIds: string[] = []): Promise<string[]> {
  const leaks: string[] = [];
  for (const dir of await hostCgroupsOf(sandboxIds)) leaks.push(`cgroup ${dir}`);
  for (const p of await processesMentioning(root)) leaks.push(`process ${p.pid}: ${p.cmdline.slice(0, 100)}`);
  for (const sub of ["sbs", "vm", "shared"]) {
    for (const e of await readdir(path.join(root, "run", sub)).catch(() => [])) leaks.push(`${sub}/${e}`);
  }
  for (const e of await readdir(path.join(root, "run", "locks")).catch(() => [])) leaks.push(`locks/${e}`);
  const mounts = await readFile("/proc/self/mounts", "utf8");
  for (const line of mounts.split("\n"))
    if (line.includes(root + "/")) leaks.push(`mount ${line.split(" ")[1]}`);
  return leaks;
}

/** The host cgroup directories (`cocoon-<id>`, either layout) that exist for these sandboxes. */
export async function hostCgroupsOf(sandboxIds: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const id of sandboxIds) out.push(...((await existingSandboxCgroups(id))?.plan.dirs ?? []));
  return out;
}
