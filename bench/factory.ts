/**
 * Factory benchmark (VM templates): `cocoon run --rm -- true` cloning the template against the
 * cold path, and the total PSS of the VMM processes of N running clones against N cold
 * sandboxes. Same run, same assets, interleaved rounds.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Runtime } from "../src/sandbox/runtime.js";
import type { Sandbox } from "../src/sandbox/sandbox.js";
import { COCOON_BIN } from "../test/helpers/cli-process.js";
import { ASSETS_DIR, guestAssets, processesMentioning } from "../test/helpers/env.js";
import { compare, printComparison, pssKiB, writeResults, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_FACTORY_ROUNDS ?? 3);
const SANDBOXES = Number(process.env.BENCH_FACTORY_SANDBOXES ?? 3);

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
  const base = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR };
  const rt = await Runtime.open({ root, configPath: factory, env: { COCOON_ASSETS: ASSETS_DIR } });
  const clone: number[] = [];
  const boot: number[] = [];
  let templateKiB = 0;
  let pss: { clones: number; cold: number };
  try {
    // warm-ups: the first factory run builds the template (not timed)
    await cocoonRun({ ...base, COCOON_CONFIG: factory });
    await cocoonRun({ ...base, COCOON_CONFIG: cold });
    for (let i = 1; i <= ROUNDS; i++) {
      clone.push(await cocoonRun({ ...base, COCOON_CONFIG: factory }));
      boot.push(await cocoonRun({ ...base, COCOON_CONFIG: cold }));
      process.stderr.write(
        `  factory round ${i}/${ROUNDS}: clone ${clone.at(-1)!.toFixed(0)} ms, cold ${boot.at(-1)!.toFixed(0)} ms\n`,
      );
    }
    pss = {
      clones: await runningPss(rt, root, SANDBOXES, true),
      cold: await runningPss(rt, root, SANDBOXES, false),
    };
    templateKiB = ((await stat(rt.factory.template.memoryPath)).blocks * 512) / 1024;
  } finally {
    await rt.factory.template.destroy().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  }
  return [
    compare(
      "cocoon run --rm -- true",
      "ms",
      ["with [factory] enable_template (clone)", clone],
      ["cold boot", boot],
      "whole CLI process, spawn to exit; the template is built by a warm-up run",
    ),
    compare(
      `total PSS of ${SANDBOXES} running VMMs`,
      "KiB",
      [`${SANDBOXES} clones`, [pss.clones]],
      [`${SANDBOXES} cold sandboxes`, [pss.cold]],
      `smaps_rollup of the qemu processes; the template's RAM file (${Math.round(templateKiB)} KiB allocated, shared by all clones) is not in any process's PSS once it is only in the page cache`,
    ),
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await runFactoryBench();
  results.forEach(printComparison);
  console.log(`\nwrote ${await writeResults("factory", results)}`);
}
