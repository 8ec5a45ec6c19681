/**
 * The soak: create/exec/rm cycles through one long-lived library client (this process), with
 * an accounting of everything a cycle could leak, taken before and after: processes, mounts,
 * this client's open fds, network namespaces, taps, host cgroups, state entries and cocoon's
 * temp files.
 */
import { readFile, readdir, readlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Runtime } from "../../src/sandbox/runtime.js";
import { detectCgroupLayout } from "../../src/host/cgroups/layout.js";
import { findTaggedProcesses } from "../../src/monitor/reap.js";
import { processesMentioning, entriesUnder } from "../helpers/env.js";
import { check, type Fault } from "./harness.js";

export type Accounting = Record<string, string[]>;

/** This process's open fds, by what they are ("socket", "pipe", "anon_inode:[eventfd]", a path). */
async function openFds(): Promise<string[]> {
  const out: string[] = [];
  for (const fd of await readdir("/proc/self/fd")) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => undefined);
    if (target === undefined) continue; // the fd readdir itself used
    out.push(target.replace(/^(socket|pipe):\[\d+\]$/, "$1"));
  }
  return out.sort();
}

async function netDevices(kind: "tun"): Promise<string[]> {
  const out: string[] = [];
  for (const dev of await readdir("/sys/class/net").catch(() => [])) {
    const isTun = await readFile(`/sys/class/net/${dev}/tun_flags`, "utf8").then(
      () => true,
      () => false,
    );
    if (kind === "tun" && isTun) out.push(dev);
  }
  return out.sort();
}

/** cocoon's host cgroups (`cocoon-*`) where this process would make a sandbox's. */
async function hostCgroups(): Promise<string[]> {
  const layout = await detectCgroupLayout();
  if (!layout) return [];
  const parents = layout.version === 2 ? [layout.ownDir] : layout.hierarchies.map((h) => h.ownDir);
  const out: string[] = [];
  for (const dir of parents)
    for (const e of await readdir(dir).catch(() => []))
      if (e.startsWith("cocoon-")) out.push(path.join(dir, e));
  return out.sort();
}

/** What the accounting compares (equal before and after, or a leak). */
export async function account(root: string, tmp: string): Promise<Accounting> {
  const procs = [
    ...(await processesMentioning(root)).map((p) => `${p.pid} ${p.cmdline.slice(0, 80)}`),
    ...(await findTaggedProcesses(path.join(root, "run", "vm"))).map((p) => `${p.pid} ${p.name} (tagged)`),
  ];
  const mounts = (await readFile("/proc/self/mounts", "utf8"))
    .split("\n")
    .filter((l) => l.includes(root))
    .map((l) => l.split(" ")[1]!);
  const state = (await entriesUnder(path.join(root, "run")))
    // the log grows, and empty top-level directories are layout, not leftovers
    .filter((e) => !e.path.startsWith(path.join(root, "run", "logs")))
    .filter((e) => path.dirname(e.path) !== path.join(root, "run"))
    .map((e) => path.relative(root, e.path));
  // Only cocoon's own temp files: the harness's TMPDIR also holds tsx's compile cache.
  const temps = (await readdir(tmp).catch(() => [])).filter((e) => !e.startsWith("tsx-"));
  const netns = (await readdir("/run/netns").catch(() => [])).sort();
  return {
    processes: procs.sort(),
    mounts: mounts.sort(),
    fds: await openFds(),
    netns,
    taps: await netDevices("tun"),
    cgroups: await hostCgroups(),
    "state entries": state.sort(),
    "temp files": temps.sort(),
  };
}

/** Differences between two accountings, one line per kind that changed. */
export function diff(before: Accounting, after: Accounting): string[] {
  const out: string[] = [];
  for (const kind of Object.keys(before)) {
    const b = before[kind]!;
    const a = after[kind]!;
    const added = a.filter(
      (x, i) => a.indexOf(x) === i && a.filter((y) => y === x).length > b.filter((y) => y === x).length,
    );
    const removed = b.filter(
      (x, i) => b.indexOf(x) === i && b.filter((y) => y === x).length > a.filter((y) => y === x).length,
    );
    if (added.length || removed.length || a.length !== b.length) {
      out.push(
        `${kind}: ${b.length} -> ${a.length}${added.length ? ` (+ ${added.join(", ")})` : ""}${removed.length ? ` (- ${removed.join(", ")})` : ""}`,
      );
    }
  }
  return out;
}

export function soakFault(cycles: number): Fault {
  return {
    name: `soak-${cycles}-cycles`,
    async run(ctx) {
      const tmp = os.tmpdir();
      const runtime = await Runtime.open({ root: ctx.root, env: { ...process.env, ...ctx.env } });
      const before = await account(ctx.root, tmp);
      const started = Date.now();
      for (let i = 0; i < cycles; i++) {
        const sb = await runtime.createSandbox({
          id: `soak-${i}`,
          memoryMB: 512,
          process: { args: ["sleep", "3600"] },
        });
        await sb.start();
        const { stdout, exit } = await (
          await sb.exec({ process: { args: ["echo", `cycle ${i}`] } })
        ).output();
        check(
          exit.exitCode === 0 && stdout.toString() === `cycle ${i}\n`,
          `cycle ${i}: exec printed ${stdout.toString()}`,
        );
        await sb.delete({ force: true });
        await sb.release();
        if ((i + 1) % 10 === 0 || i + 1 === cycles) ctx.say(`  soak: ${i + 1}/${cycles} cycles`);
      }
      const after = await account(ctx.root, tmp);
      const changes = diff(before, after);
      const counts = Object.entries(after)
        .map(([k, v]) => `${k} ${before[k]!.length}/${v.length}`)
        .join(", ");
      check(changes.length === 0, `leaked over ${cycles} cycles: ${changes.join("; ")}`);
      return {
        injected: `${cycles} create/exec/rm cycles through one library client (${((Date.now() - started) / cycles / 1000).toFixed(1)} s a cycle)`,
        cleanup: `accounting before/after equal: ${counts}`,
      };
    },
  };
}
