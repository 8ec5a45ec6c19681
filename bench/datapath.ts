/**
 * Data-path benchmark (issue 14): what the agent costs against what the channel and the guest
 * allow, all measured in ONE guest (bare QEMU booting cocoon's kernel and rootfs, with the
 * agent port and one more raw port), so the ratios do not depend on the machine's noise:
 * - guest stdout → host: `cat` of a blob through the agent's stdout stream, against the same
 *   `cat` writing into the dedicated raw port and read from its socket on the host;
 * - host → guest stdin: `head -c` of the agent's stdin stream, against `head -c` of the raw port;
 * - exec round trip (`true`, with stdout and stderr streams, as sandbox.exec opens them)
 *   against an agent health round trip plus the in-guest fork/exec/wait of `true` measured by
 *   a tiny native loop (bench/forkloop.c);
 * - facts: the agent's RSS in the guest and the rootfs size.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { spawn, type ChildProcess } from "node:child_process";
import type net from "node:net";
import path from "node:path";
import { Connection, type Stream } from "../src/agent/protocol/connection.js";
import { runChecked } from "../src/host/process.js";
import { guestAssets } from "../test/helpers/env.js";
import { bareQemuArgs, connectUnix } from "./boot.js";
import { compare, printComparison, round, writeResults, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const EXEC_ROUNDS = Number(process.env.BENCH_EXEC_ROUNDS ?? 30);
const MB = Number(process.env.BENCH_THROUGHPUT_MB ?? 32);
/** Extra kernel arguments for the guest, e.g. `cocoon.portrelay=1` (the agent's port relay). */
const APPEND = process.env.BENCH_DATAPATH_APPEND ?? "";
const BYTES = MB * 2 ** 20;
const RAW_PORT = "cocoon.bench.0";
const FORK_ITERATIONS = 200;

export interface DatapathFacts {
  /** The agent's resident set in the guest (VmRSS) after boot, and its peak (VmHWM) after the bench. */
  agentRssKiB: { afterBoot: number; peakAfterBench: number };
  /**
   * Where the boot goes, on the guest's clock (seconds since the kernel started): when init
   * exec'd the agent's node, and when the agent answered its first request after HELLO
   * (read by that request, so it includes one exec round trip).
   */
  guestClock: { agentExecS: number; firstAnswerS: number };
  /** The rootfs image: its size and the blocks it occupies on the host. */
  rootfs: { path: string; bytes: number; allocatedBytes: number };
}

let execSeq = 0;

interface RunResult {
  stdout: Buffer;
  exitCode: number;
  ms: number;
}

/** Runs a guest process through the agent, as sandbox.exec does: stdout and stderr streams. */
export async function run(conn: Connection, args: string[], stdin?: Buffer): Promise<RunResult> {
  const t0 = performance.now();
  const out = conn.openStream();
  const err = conn.openStream();
  const input = stdin ? conn.openStream() : undefined;
  const execId = `b${++execSeq}`;
  const collected = collect(out);
  const errDone = collect(err);
  await conn.request("process.start", {
    execId,
    process: { args },
    stdio: { stdout: out.id, stderr: err.id, ...(input ? { stdin: input.id } : {}) },
  });
  if (input && stdin) {
    void input.write(stdin).then(() => input.end());
    input.readable.resume();
  }
  const [exit, stdout] = await Promise.all([
    conn.request("process.wait", { execId }) as Promise<{ exitCode: number }>,
    collected,
    errDone,
  ]);
  return { stdout, exitCode: exit.exitCode, ms: performance.now() - t0 };
}

function collect(s: Stream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.readable.on("data", (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.readable.once("end", () => {
      s.end();
      resolve(Buffer.concat(chunks));
    });
    s.readable.once("error", reject);
  });
}

export async function sh(conn: Connection, script: string, stdin?: Buffer): Promise<string> {
  const r = await run(conn, ["sh", "-c", script], stdin);
  if (r.exitCode !== 0) throw new Error(`guest script failed (${r.exitCode}): ${script}`);
  return r.stdout.toString().trim();
}

/** Counts bytes arriving on the raw port's socket until `n` have come. */
function receive(sock: net.Socket, n: number): Promise<void> {
  let got = 0;
  return new Promise((resolve) => {
    const onData = (c: Buffer): void => {
      got += c.length;
      if (got >= n) {
        sock.off("data", onData);
        resolve();
      }
    };
    sock.on("data", onData);
  });
}

async function agentRss(conn: Connection, field: "VmRSS" | "VmHWM"): Promise<number> {
  const out = await sh(conn, `grep ${field} /proc/$(pidof node)/status`);
  return Number(/(\d+)\s*kB/.exec(out)?.[1] ?? NaN);
}

async function buildForkLoop(dir: string): Promise<Buffer> {
  const bin = path.join(dir, "forkloop");
  await runChecked("gcc", ["-O2", "-static", "-o", bin, path.join(import.meta.dirname, "forkloop.c")]);
  const { readFile } = await import("node:fs/promises");
  return readFile(bin);
}

export async function runDatapathBench(): Promise<{ results: Comparison[]; facts: DatapathFacts }> {
  const assets = await guestAssets();
  const root = await mkdtemp("/tmp/ccd-");
  let qemu: ChildProcess | undefined;
  try {
    const forkloop = await buildForkLoop(root);
    const { args, sockets } = await bareQemuArgs(root, "dp", {
      ports: [RAW_PORT],
      ...(APPEND ? { append: APPEND } : {}),
    });
    qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
    const conn = new Connection(await connectUnix(sockets.get("cocoon.agent.0")!), { role: "client" });
    await conn.hello("bench", 120_000);
    const raw = await connectUnix(sockets.get(RAW_PORT)!);
    raw.pause();
    const clock = (await sh(conn, "cut -d' ' -f1 /proc/uptime; cut -d' ' -f22 /proc/$(pidof node)/stat"))
      .split("\n")
      .map(Number);
    const afterBoot = await agentRss(conn, "VmRSS");

    const dev = await sh(
      conn,
      `for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = ${RAW_PORT} ] && echo /dev/\${p##*/}; done`,
    );
    if (!dev.startsWith("/dev/")) throw new Error(`no raw port ${RAW_PORT} in the guest`);
    await sh(conn, `dd if=/dev/urandom of=/tmp/blob bs=1M count=${MB} 2>/dev/null`);
    await sh(conn, "cat > /tmp/forkloop && chmod 755 /tmp/forkloop", forkloop);

    // guest → host
    const outAgent: number[] = [];
    const outRaw: number[] = [];
    const inAgent: number[] = [];
    const inRaw: number[] = [];
    const payload = Buffer.alloc(BYTES, 0x5a);
    for (let i = 0; i < ROUNDS; i++) {
      const a = await run(conn, ["cat", "/tmp/blob"]);
      if (a.stdout.length !== BYTES)
        throw new Error(`agent stdout: ${a.stdout.length} bytes, expected ${BYTES}`);
      outAgent.push(MB / (a.ms / 1000));

      let t0 = performance.now();
      const got = receive(raw, BYTES);
      raw.resume();
      const r = await run(conn, ["sh", "-c", `cat /tmp/blob > ${dev}`]);
      await got;
      raw.pause();
      if (r.exitCode !== 0) throw new Error(`raw write failed: ${r.exitCode}`);
      outRaw.push(MB / ((performance.now() - t0) / 1000));

      const b = await run(conn, ["head", "-c", String(BYTES)], payload);
      if (b.exitCode !== 0) throw new Error(`agent stdin: exit ${b.exitCode}`);
      inAgent.push(MB / (b.ms / 1000));

      t0 = performance.now();
      const reader = run(conn, ["sh", "-c", `head -c ${BYTES} ${dev} > /dev/null`]);
      raw.write(payload);
      const rr = await reader;
      if (rr.exitCode !== 0) throw new Error(`raw read failed: ${rr.exitCode}`);
      inRaw.push(MB / ((performance.now() - t0) / 1000));
      process.stderr.write(
        `  datapath round ${i + 1}/${ROUNDS}: out agent ${outAgent.at(-1)!.toFixed(1)} raw ${outRaw.at(-1)!.toFixed(1)}, ` +
          `in agent ${inAgent.at(-1)!.toFixed(1)} raw ${inRaw.at(-1)!.toFixed(1)} MiB/s\n`,
      );
    }

    // exec round trip against health + native fork/exec/wait
    const forkUs: number[] = [];
    for (let i = 0; i < ROUNDS; i++)
      forkUs.push(Number(await sh(conn, `/tmp/forkloop ${FORK_ITERATIONS} /bin/true`)));
    const forkMs = [...forkUs].sort((x, y) => x - y)[Math.floor(forkUs.length / 2)]! / 1000;
    const execs: number[] = [];
    const pings: number[] = [];
    for (let i = 0; i < 3; i++) await run(conn, ["true"]); // warm-up
    for (let i = 0; i < EXEC_ROUNDS; i++) {
      execs.push((await run(conn, ["true"])).ms);
      const t = performance.now();
      await conn.request("health.check", {});
      pings.push(performance.now() - t);
    }
    const peak = await agentRss(conn, "VmHWM");
    const st = await stat(assets.rootfs);
    conn.close();
    raw.destroy();

    const results = [
      compare(
        `guest stdout → host throughput (${MB} MiB, same guest)`,
        "MiB/s",
        ["agent stdout stream (cat)", outAgent],
        ["raw virtio-serial port (cat > port)", outRaw],
        "issue 14 goal: ratio >= 0.5; higher is better",
      ),
      compare(
        `host → guest stdin throughput (${MB} MiB, same guest)`,
        "MiB/s",
        ["agent stdin stream (head -c)", inAgent],
        ["raw virtio-serial port (head -c port)", inRaw],
        "issue 14 goal: ratio >= 0.5; higher is better",
      ),
      compare(
        "exec round trip (`true`) vs health + native fork/exec/wait",
        "ms",
        ["process.start + wait, stdout/stderr streams", execs],
        [`health.check + fork/exec/wait ${round(forkMs, 3)} ms`, pings.map((p) => p + forkMs)],
        `issue 14 goal: ratio <= 3; in-guest fork/exec/wait of /bin/true: ${forkUs.join(", ")} µs (${FORK_ITERATIONS} each)`,
      ),
      compare(
        "agent health round trip vs in-guest fork/exec/wait",
        "ms",
        ["agent health.check round trip", pings],
        ["native fork/exec/wait of /bin/true", forkUs.map((u) => u / 1000)],
        "context for the exec goal",
      ),
    ];
    const facts: DatapathFacts = {
      agentRssKiB: { afterBoot, peakAfterBench: peak },
      // starttime is in clock ticks: USER_HZ is 100 on x86 Linux
      guestClock: { agentExecS: (clock[1] ?? NaN) / 100, firstAnswerS: clock[0] ?? NaN },
      rootfs: { path: assets.rootfs, bytes: st.size, allocatedBytes: st.blocks * 512 },
    };
    return { results, facts };
  } finally {
    qemu?.kill("SIGKILL");
    if (qemu && qemu.exitCode === null) await new Promise((r) => qemu!.once("exit", r));
    await rm(root, { recursive: true, force: true });
  }
}

export function printFacts(f: DatapathFacts): void {
  console.log(
    `\nagent RSS in the guest: ${f.agentRssKiB.afterBoot} KiB after boot, peak ${f.agentRssKiB.peakAfterBench} KiB after the bench`,
  );
  console.log(
    `guest clock: the agent's node exec'd at ${f.guestClock.agentExecS} s, first answer at ${f.guestClock.firstAnswerS} s`,
  );
  console.log(`rootfs: ${f.rootfs.bytes} bytes (${f.rootfs.allocatedBytes} allocated) ${f.rootfs.path}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { results, facts } = await runDatapathBench();
  results.forEach(printComparison);
  printFacts(facts);
  console.log(`\nwrote ${await writeResults("datapath", results, { facts })}`);
}
