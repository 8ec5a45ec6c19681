/**
 * Workload benchmarks, each against a baseline measured in the same run:
 * - exec round trip (`true` in a running sandbox) against a bare agent round trip
 *   (health.check over the same channel, no process);
 * - stdout throughput of a guest process read on the host, against the same data read inside
 *   the guest (cat to /dev/null, timed with the guest's /proc/uptime);
 * - `cocoon run --rm -- true` end to end (the real CLI) against bare QEMU booting the same
 *   kernel and rootfs to the agent's first answer.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { Runtime } from "../src/sandbox/runtime.js";
import { ASSETS_DIR, guestAssets } from "../test/helpers/env.js";
import { bareBoot } from "./boot.js";
import { compare, round, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const EXEC_ROUNDS = Number(process.env.BENCH_EXEC_ROUNDS ?? 30);
const THROUGHPUT_MB = Number(process.env.BENCH_THROUGHPUT_MB ?? 32);

async function execLatency(root: string): Promise<Comparison> {
  const runtime = await Runtime.open({ root, env: { COCOON_ASSETS: ASSETS_DIR } });
  const sb = await runtime.createSandbox({ memoryMB: 512, process: { args: ["sleep", "3600"] } });
  try {
    await sb.start();
    const agent = await sb.agent();
    const execs: number[] = [];
    const pings: number[] = [];
    for (let i = 0; i < 3; i++) await (await sb.exec({ process: { args: ["true"] } })).done(); // warm-up
    for (let i = 0; i < EXEC_ROUNDS; i++) {
      let t = performance.now();
      await (await sb.exec({ process: { args: ["true"] } })).done();
      execs.push(performance.now() - t);
      t = performance.now();
      await agent.call("health.check", {});
      pings.push(performance.now() - t);
    }
    return compare(
      "exec round trip (`true`)",
      "ms",
      ["sandbox.exec + wait", execs],
      ["agent health.check round trip", pings],
    );
  } finally {
    await sb.delete({ force: true });
  }
}

async function throughput(root: string): Promise<Comparison> {
  const runtime = await Runtime.open({ root, env: { COCOON_ASSETS: ASSETS_DIR } });
  const sb = await runtime.createSandbox({ memoryMB: 512, process: { args: ["sleep", "3600"] } });
  try {
    await sb.start();
    await (
      await sb.exec({
        process: { args: ["dd", "if=/dev/urandom", "of=/tmp/blob", "bs=1M", `count=${THROUGHPUT_MB}`] },
      })
    ).done();
    const host: number[] = [];
    const guest: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t = performance.now();
      const p = await sb.exec({ process: { args: ["cat", "/tmp/blob"] } });
      let bytes = 0;
      p.stdout.on("data", (c: Buffer) => (bytes += c.length));
      await p.done();
      const secs = (performance.now() - t) / 1000;
      if (bytes !== THROUGHPUT_MB * 2 ** 20)
        throw new Error(`read ${bytes} bytes, expected ${THROUGHPUT_MB} MiB`);
      host.push(THROUGHPUT_MB / secs);
      // busybox has no sub-second clock: time 4 passes with /proc/uptime (10 ms resolution).
      const script =
        "a=$(cut -d' ' -f1 /proc/uptime); for i in 1 2 3 4; do cat /tmp/blob > /dev/null; done; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b";
      const timed = await (await sb.exec({ process: { args: ["sh", "-c", script] } })).output();
      const [a, b] = timed.stdout.toString().trim().split(" ").map(Number);
      if (!a || !b || b <= a) throw new Error(`unexpected guest timing: ${timed.stdout.toString()}`);
      guest.push((4 * THROUGHPUT_MB) / (b - a));
    }
    return compare(
      `stdout throughput (${THROUGHPUT_MB} MiB)`,
      "MiB/s",
      ["guest cat → host stream", host],
      ["cat to /dev/null inside the guest", guest],
      "higher is better; ratio = host-side / in-guest",
    );
  } finally {
    await sb.delete({ force: true });
  }
}

function cliRunTrue(root: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const child = spawn(
      process.execPath,
      [path.resolve(import.meta.dirname, "../bin/cocoon.js"), "run", "--rm", "--memory", "512", "--", "true"],
      {
        env: { ...process.env, COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR },
        stdio: "ignore",
      },
    );
    child.once("exit", (code) =>
      code === 0 ? resolve(performance.now() - t) : reject(new Error(`cocoon run exited ${code}`)),
    );
  });
}

async function runEndToEnd(root: string): Promise<Comparison> {
  const cli: number[] = [];
  const bare: number[] = [];
  await cliRunTrue(root); // warm-up
  for (let i = 0; i < ROUNDS; i++) {
    cli.push(await cliRunTrue(root));
    bare.push(await bareBoot(root, 100 + i));
  }
  return compare(
    "`cocoon run --rm -- true` end to end",
    "ms",
    ["cocoon CLI process, wall time", cli],
    ["bare QEMU boot to agent answer", bare],
    "the CLI also starts Node, stops the VM and deletes the sandbox",
  );
}

export async function runWorkloadBench(): Promise<Comparison[]> {
  await guestAssets();
  const root = await mkdtemp("/tmp/ccw-");
  try {
    const out: Comparison[] = [];
    process.stderr.write("  exec latency...\n");
    out.push(await execLatency(root));
    process.stderr.write("  throughput...\n");
    out.push(await throughput(root));
    process.stderr.write("  cocoon run end to end...\n");
    out.push(await runEndToEnd(root));
    return out;
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

export { round };
