/**
 * Factory benchmark (VM templates, the warm pool, snapshots): `cocoon run --rm -- true`
 * cloning the template against the cold path; create-to-agent-ready taking a clone from the
 * warm pool against a cold boot; restoring a snapshot of a 512 MiB sandbox to the agent's
 * first answer against a cold boot; the total PSS of the VMM processes of N running clones
 * against N cold sandboxes. Same run, same assets, interleaved rounds.
 */
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Runtime } from "../src/sandbox/runtime.js";
import type { Sandbox } from "../src/sandbox/sandbox.js";
import { COCOON_BIN } from "../test/helpers/cli-process.js";
import { ASSETS_DIR, guestAssets, processesMentioning } from "../test/helpers/env.js";
import { compare, printComparison, pssKiB, writeResults, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_FACTORY_ROUNDS ?? 3);
const SANDBOXES = Number(process.env.BENCH_FACTORY_SANDBOXES ?? 5);
/** The snapshot bench's guest size (the "512 MiB sandbox"). */
const SNAPSHOT_MIB = 512;

/** Runtime.createSandbox returns once the VM's agent answered and the sandbox is made: time that. */
async function timedCreate(rt: Runtime, template: boolean, memoryMB?: number): Promise<number> {
  const t0 = performance.now();
  const sb = await rt.createSandbox({
    template,
    ...(memoryMB ? { memoryMB } : {}),
    process: { args: ["sleep", "600"] },
  });
  const ms = performance.now() - t0;
  await sb.delete({ force: true });
  return ms;
}

/** Waits until the warm pool holds a ready clone and its filler is done (not timed). */
async function poolSettled(rt: Runtime): Promise<void> {
  for (;;) {
    const s = await rt.factory.pool.status();
    if (s.ready >= 1 && s.starting === 0) return;
    await sleep(200);
  }
}

/** Fills an empty pool (untimed): a pooled create finds none ready and starts the refill. */
async function fillPool(rt: Runtime): Promise<void> {
  await timedCreate(rt, true);
  await poolSettled(rt);
}

async function emptyPool(rt: Runtime): Promise<void> {
  await rt.factory.pool.destroy(async () => new Set());
}

/**
 * Warm pool: create-to-agent-ready taking a ready clone, against a cold boot. The cold boot
 * runs with the pool empty: a warm clone is a running QEMU, and under TCG even an idle guest
 * takes CPU from the boot being timed (it made the cold side ~2x slower here).
 */
async function poolRounds(rt: Runtime): Promise<{ pooled: number[]; cold: number[] }> {
  const pooled: number[] = [];
  const cold: number[] = [];
  for (let i = 1; i <= ROUNDS; i++) {
    cold.push(await timedCreate(rt, false));
    await fillPool(rt);
    pooled.push(await timedCreate(rt, true));
    await poolSettled(rt);
    await emptyPool(rt);
    process.stderr.write(
      `  pool round ${i}/${ROUNDS}: warm clone ${pooled.at(-1)!.toFixed(0)} ms, cold ${cold.at(-1)!.toFixed(0)} ms\n`,
    );
  }
  return { pooled, cold };
}

/** Snapshots: restore of a running 512 MiB sandbox to the agent's first answer, against a cold boot. */
async function snapshotRounds(
  rt: Runtime,
): Promise<{ restore: number[]; cold: number[]; saveMs: number; stateBytes: number }> {
  const source = await rt.createSandbox({
    template: false,
    memoryMB: SNAPSHOT_MIB,
    process: { args: ["sleep", "600"] },
  });
  let saveMs = 0;
  let stateBytes = 0;
  try {
    await source.start({ keepRunning: true });
    const t0 = performance.now();
    stateBytes = (await source.snapshot("bench")).stateBytes;
    saveMs = performance.now() - t0;
  } finally {
    await source.delete({ force: true });
  }
  const restore: number[] = [];
  const cold: number[] = [];
  try {
    for (let i = 1; i <= ROUNDS; i++) {
      const t0 = performance.now();
      const sb = await rt.restoreSandbox("bench");
      restore.push(performance.now() - t0);
      await sb.delete({ force: true });
      cold.push(await timedCreate(rt, false, SNAPSHOT_MIB));
      process.stderr.write(
        `  snapshot round ${i}/${ROUNDS}: restore ${restore.at(-1)!.toFixed(0)} ms, cold ${cold.at(-1)!.toFixed(0)} ms\n`,
      );
    }
  } finally {
    await rt.snapshots.remove("bench");
  }
  return { restore, cold, saveMs, stateBytes };
}

function cocoonRun(env: NodeJS.ProcessEnv): Promise<number> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [COCOON_BIN, "run", "--rm", "--", "true"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return new Promise((resolve, reject) =>
    child.once("exit", (code) =>
      code === 0 ? resolve(performance.now() - t0) : reject(new Error(`cocoon run exited ${code}`)),
    ),
  );
}

/** Total PSS (KiB, from smaps_rollup) of the QEMU processes whose command line mentions `root`. */
async function vmmPssKiB(root: string): Promise<number> {
  let total = 0;
  for (const { pid, cmdline } of await processesMentioning(root)) {
    if (!cmdline.startsWith("qemu-system") && !cmdline.includes("/qemu-system")) continue;
    total += await pssKiB(pid).catch(() => 0); // gone meanwhile
  }
  return total;
}

/** Starts `n` idle sandboxes, reads the VMMs' PSS once they all answer, then removes them. */
async function runningPss(rt: Runtime, root: string, n: number, template: boolean): Promise<number> {
  const sandboxes: Sandbox[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const sb = await rt.createSandbox({ template, process: { args: ["sleep", "600"] } });
      sandboxes.push(sb);
      await sb.start({ keepRunning: true });
    }
    // Every guest has done the same small amount of work: one exec each.
    for (const sb of sandboxes)
      await (await sb.exec({ process: { args: ["true"] }, inGuest: true })).output();
    return await vmmPssKiB(root);
  } finally {
    for (const sb of sandboxes) await sb.delete({ force: true }).catch(() => undefined);
  }
}

export async function runFactoryBench(): Promise<Comparison[]> {
  await guestAssets();
  const root = await mkdtemp("/tmp/ccf-");
  const cold = path.join(root, "cold.toml");
  const factory = path.join(root, "factory.toml");
  await writeFile(cold, "");
  await writeFile(factory, "[factory]\nenable_template = true\n");
  const pooledConfig = path.join(root, "pool.toml");
  await writeFile(pooledConfig, "[factory]\nenable_template = true\ncache = 1\n");
  const base = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR };
  const rt = await Runtime.open({ root, configPath: factory, env: { COCOON_ASSETS: ASSETS_DIR } });
  const poolRt = await Runtime.open({ root, configPath: pooledConfig, env: { COCOON_ASSETS: ASSETS_DIR } });
  const clone: number[] = [];
  const boot: number[] = [];
  const pooledRun: number[] = [];
  let templateKiB = 0;
  let pss: { clones: number; cold: number };
  let pool: { pooled: number[]; cold: number[] };
  let snap: { restore: number[]; cold: number[]; saveMs: number; stateBytes: number };
  try {
    // warm-ups: the first factory run builds the template (not timed)
    await cocoonRun({ ...base, COCOON_CONFIG: factory });
    await cocoonRun({ ...base, COCOON_CONFIG: cold });
    for (let i = 1; i <= ROUNDS; i++) {
      // The clone and cold runs find the pool empty: no warm clone's QEMU competes for the CPU.
      clone.push(await cocoonRun({ ...base, COCOON_CONFIG: factory }));
      boot.push(await cocoonRun({ ...base, COCOON_CONFIG: cold }));
      // The refills are not timed: the pooled run finds a ready clone.
      await fillPool(poolRt);
      pooledRun.push(await cocoonRun({ ...base, COCOON_CONFIG: pooledConfig }));
      await poolSettled(poolRt);
      await emptyPool(poolRt);
      process.stderr.write(
        `  factory round ${i}/${ROUNDS}: clone ${clone.at(-1)!.toFixed(0)} ms, warm pool ${pooledRun.at(-1)!.toFixed(0)} ms, cold ${boot.at(-1)!.toFixed(0)} ms\n`,
      );
    }
    pss = {
      clones: await runningPss(rt, root, SANDBOXES, true),
      cold: await runningPss(rt, root, SANDBOXES, false),
    };
    templateKiB = ((await stat(rt.factory.template.memoryPath)).blocks * 512) / 1024;
    pool = await poolRounds(poolRt);
    snap = await snapshotRounds(rt);
  } finally {
    await poolRt.factory.destroy().catch(() => undefined);
    await rt.factory.template.destroy().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  }
  return [
    compare(
      "cocoon run --rm -- true",
      "ms",
      ["with [factory] enable_template (clone)", clone],
      ["cold boot", boot],
      "whole CLI process, spawn to exit; the template is built by a warm-up run; no warm clone runs meanwhile",
    ),
    compare(
      "cocoon run --rm -- true, warm pool",
      "ms",
      ["with [factory] cache = 1 (a clone already running)", pooledRun],
      ["cold boot", boot],
      "whole CLI process, spawn to exit; each run finds a ready clone (filled untimed before, emptied after: the cold runs have no warm clone beside them)",
    ),
    compare(
      `total PSS of ${SANDBOXES} running VMMs`,
      "KiB",
      [`${SANDBOXES} clones`, [pss.clones]],
      [`${SANDBOXES} cold sandboxes`, [pss.cold]],
      `smaps_rollup of the qemu processes; the template's RAM file (${Math.round(templateKiB)} KiB allocated, shared by all clones) is not in any process's PSS once it is only in the page cache`,
    ),
    compare(
      "create to agent ready",
      "ms",
      ["a clone from the warm pool ([factory] cache = 1)", pool.pooled],
      ["cold boot", pool.cold],
      "Runtime.createSandbox until it returns (agent answered, sandbox made); the pool is filled (untimed) before a pooled create and empty during a cold one",
    ),
    compare(
      `restore of a running ${SNAPSHOT_MIB} MiB sandbox to the agent's first answer`,
      "ms",
      ["Runtime.restoreSandbox", snap.restore],
      [`cold boot of a ${SNAPSHOT_MIB} MiB sandbox`, snap.cold],
      `the snapshot holds device state and RAM in one file (${(snap.stateBytes / 2 ** 20).toFixed(1)} MiB; QEMU skips zero pages); taking it took ${Math.round(snap.saveMs)} ms`,
    ),
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await runFactoryBench();
  results.forEach(printComparison);
  console.log(`\nwrote ${await writeResults("factory", results)}`);
}
