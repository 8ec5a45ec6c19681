/**
 * Start-up benchmark: how long cocoon's programs take to load, run from tsc's dist/ against
 * their bundles in dist/bundle/ (scripts/bundle.mjs). Interleaved rounds, medians:
 *  - `cocoon --help` and `cocoon ps` (an empty temporary state root), as bin/cocoon.js runs them;
 *  - the per-sandbox monitor, from its spawn to its "started" event (its VMM is /bin/sleep).
 * No VM is started. Needs `npm run build`. BENCH_STARTUP_ROUNDS sets the rounds (default 7).
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { packagePath } from "../src/package-root.js";

const ROUNDS = Number(process.env.BENCH_STARTUP_ROUNDS ?? 7);
const VARIANTS = {
  dist: { cli: packagePath("dist/cli/main.js"), monitor: packagePath("dist/monitor/main.js") },
  bundle: { cli: packagePath("dist/bundle/cli.js"), monitor: packagePath("dist/bundle/monitor.js") },
};
/** What bin/cocoon.js does with the entry it picked. */
const LAUNCHER =
  "const { main } = await import(process.argv[1]); await main(['node', 'cocoon', ...process.argv.slice(2)]); process.exit(process.exitCode ?? 0);";

function timeCli(entry: string, args: string[], env: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", LAUNCHER, entry, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`cocoon ${args.join(" ")} (${entry}) exited ${r.status}: ${r.stderr}`);
  return ms;
}

function timeMonitor(script: string, root: string): Promise<number> {
  const vmDir = mkdtempSync(path.join(root, "vm-"));
  mkdirSync(path.join(vmDir, "monitor"));
  const specPath = path.join(vmDir, "monitor/spec.json");
  const spec = { vmDir, launch: { file: "/bin/sleep", args: ["30"], logPath: path.join(vmDir, "vmm.log") } };
  writeFileSync(specPath, JSON.stringify(spec));
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [script, specPath], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, COCOON_VM_DIR: vmDir },
    });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (!out.includes("\n")) return;
      const ms = performance.now() - t0;
      const event = JSON.parse(out.split("\n")[0]!) as { event: string; pid?: number };
      if (event.event !== "started" || !event.pid) return reject(new Error(`monitor: ${out}`));
      process.kill(event.pid, "SIGKILL"); // the monitor records the exit and ends
      child.once("exit", () => resolve(ms));
      child.stdout.removeAllListeners("data");
    });
    child.once("error", reject);
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const root = mkdtempSync(path.join(os.tmpdir(), "cocoon-bench-startup-"));
const samples = new Map<string, number[]>();
const add = (what: string, variant: string, ms: number) => {
  const key = `${what.padEnd(18)} ${variant.padEnd(6)}`;
  samples.set(key, [...(samples.get(key) ?? []), ms]);
};
try {
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? (["bundle", "dist"] as const) : (["dist", "bundle"] as const);
    for (const v of order) {
      add("cocoon --help", v, timeCli(VARIANTS[v].cli, ["--help"], {}));
      add("cocoon ps", v, timeCli(VARIANTS[v].cli, ["ps"], { COCOON_ROOT: root }));
      add("monitor → started", v, await timeMonitor(VARIANTS[v].monitor, root));
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
console.log(
  `start-up, median of ${ROUNDS} interleaved rounds (load average ${os.loadavg()[0]!.toFixed(1)}):`,
);
for (const [key, xs] of [...samples].sort()) {
  console.log(`  ${key}  ${median(xs).toFixed(0).padStart(5)} ms  (min ${Math.min(...xs).toFixed(0)})`);
}
