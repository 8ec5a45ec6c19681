/**
 * Cold-start probe (issue 14): boots bare QEMU (bench/boot.ts: cocoon's kernel and rootfs, no
 * cocoon code) and prints the time to HELLO_ACK on the host and, on the guest's clock, the
 * agent's start timeline: when the kernel ran init (dmesg), when node's process was forked, node's
 * own phases (performance.nodeTiming) and the agent's steps up to its first answer
 * (/run/cocoon/start-timeline.json, src/guest/agent/start-timeline.ts).
 *
 * PROBE_BOOTS=n boots n times and prints each phase's median and range. PROBE_ASSETS=dir,dir
 * compares asset dirs (each a COCOON_ASSETS), booted in turn, interleaved (default: the current
 * assets). With PROBE_DETAIL=1 the first boot then times `node -e 0` in the guest (Node's own
 * start), every command in PROBE_CMDS (`;`-separated) the same way, and prints the output of
 * each command in PROBE_SHOW; files named as arguments are copied to the guest's /tmp first.
 * PROBE_APPEND is added to the kernel command line (e.g. cocoon.cpuprof=1); PROBE_CONSOLE=file
 * keeps the guest's console (the agent's stderr) in that file.
 * Usage: [COCOON_ASSETS=dir] node --import tsx bench/agent-start-probe.ts [file...]
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { Connection } from "../src/agent/protocol/connection.js";
import { AssetCatalog, type GuestAssets } from "../src/guest/image/catalog.js";
import type { StartTimeline } from "../src/guest/agent/start-timeline.js";
import { bareQemuArgs, connectUnix } from "./boot.js";
import { sh } from "./datapath.js";

const BOOTS = Number(process.env.PROBE_BOOTS ?? 1);
const ASSET_DIRS = (process.env.PROBE_ASSETS ?? "").split(",").filter(Boolean);

/** One boot's figures: seconds on the guest's clock by phase, and the host's time to HELLO_ACK. */
interface Boot {
  hostHello: number;
  phases: Map<string, number>;
  cpu: { user: number; system: number };
}

async function detail(conn: Connection): Promise<void> {
  // Seconds on the guest's clock for a shell command, median of n, caches warm (or dropped).
  const timeIt = async (label: string, cmd: string, n = 3, drop = false): Promise<void> => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = await sh(
        conn,
        `${drop ? "sync; echo 3 > /proc/sys/vm/drop_caches; " : ""}a=$(cut -d' ' -f1 /proc/uptime); ${cmd} >/dev/null 2>&1; b=$(cut -d' ' -f1 /proc/uptime); echo "$a $b"`,
      );
      const [a, b] = s.split(" ").map(Number);
      out.push(b! - a!);
    }
    out.sort((x, y) => x - y);
    console.log(
      `${label.padEnd(48)} median ${out[Math.floor(n / 2)]!.toFixed(2)} s  (${out.map((x) => x.toFixed(2)).join(", ")})`,
    );
  };
  for (const file of process.argv.slice(2)) {
    const body = await readFile(file);
    const name = `/tmp/${file.split("/").pop()}`;
    await sh(conn, `cat > ${name}`, body);
  }
  await timeIt("node -e 0, caches dropped", "node -e 0", 3, true);
  await timeIt("node -e 0, warm", "node -e 0", 5);
  await timeIt("node --jitless -e 0, warm", "node --jitless -e 0", 3);
  for (const cmd of (process.env.PROBE_CMDS ?? "").split(";").filter(Boolean)) await timeIt(cmd, cmd, 5);
  for (const cmd of (process.env.PROBE_SHOW ?? "").split(";").filter(Boolean))
    console.log(await sh(conn, `${cmd} 2>&1`));
  console.log(await sh(conn, `node -e 'console.log(JSON.stringify(performance.nodeTiming))'`));
}

async function boot(assets: GuestAssets | undefined, withDetail: boolean): Promise<Boot> {
  const root = await mkdtemp("/tmp/ccs-");
  const { args, sockets } = await bareQemuArgs(root, "st", {
    ...(assets ? { assets } : {}),
    ...(process.env.PROBE_APPEND ? { append: process.env.PROBE_APPEND } : {}),
    ...(process.env.PROBE_CONSOLE ? { console: process.env.PROBE_CONSOLE } : {}),
  });
  const t0 = performance.now();
  const qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
  try {
    const conn = new Connection(await connectUnix(sockets.get("cocoon.agent.0")!), { role: "client" });
    await conn.hello("probe", 180_000);
    const hostHello = (performance.now() - t0) / 1000;
    // The agent's CPU time (user, system) so far, in clock ticks (100 Hz); when the kernel ran
    // init; the agent's timeline (written just after its first answer: wait for it).
    const out = await sh(
      conn,
      "cut -d' ' -f14,15 /proc/$(pidof node)/stat; dmesg | sed -n 's/^\\[ *\\([0-9.]*\\)\\] Run .* as init process.*/\\1/p' | head -1; " +
        "for i in 1 2 3 4 5 6 7 8 9 10; do [ -s /run/cocoon/start-timeline.json ] && break; sleep 0.1; done; cat /run/cocoon/start-timeline.json 2>/dev/null",
    );
    const [stat, initLine, ...rest] = out.split("\n");
    const [utime, stime] = stat!.split(" ").map(Number);
    const phases = new Map<string, number>();
    const init = Number(initLine!.trim().split(/\s+/).pop());
    if (Number.isFinite(init)) phases.set("kernel runs init", init);
    if (rest.length) {
      const t = JSON.parse(rest.join("\n")) as StartTimeline;
      if (t.forked !== undefined) phases.set("node's process forked (launcher)", t.forked);
      phases.set("node: timeOrigin", t.timeOrigin);
      for (const [k, v] of Object.entries(t.node)) phases.set(`node: ${k}`, v);
      for (const m of t.marks) if (!phases.has(m.name)) phases.set(m.name, m.at);
    } else {
      console.log("  (no start timeline in this guest)");
    }
    if (withDetail) await detail(conn);
    conn.close();
    return { hostHello, phases, cpu: { user: utime! / 100, system: stime! / 100 } };
  } finally {
    qemu.kill("SIGKILL");
    await new Promise((r) => qemu.once("exit", r));
    await rm(root, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function report(label: string, boots: Boot[]): void {
  console.log(`\n== ${label}: ${boots.length} boot(s); guest clock, seconds since boot: median [min–max]`);
  const names = new Set(boots.flatMap((b) => [...b.phases.keys()]));
  const rows = [...names].map((name) => {
    const xs = boots.map((b) => b.phases.get(name)).filter((x): x is number => x !== undefined);
    return { name, xs, m: median(xs) };
  });
  rows.sort((a, b) => a.m - b.m);
  let prev: number | undefined;
  for (const r of rows) {
    const step = prev === undefined ? "" : `+${(r.m - prev).toFixed(3)}`;
    console.log(
      `  ${r.name.padEnd(40)} ${r.m.toFixed(3).padStart(7)} ${step.padStart(8)}   [${Math.min(...r.xs).toFixed(3)}–${Math.max(...r.xs).toFixed(3)}]`,
    );
    prev = r.m;
  }
  const host = boots.map((b) => b.hostHello);
  console.log(
    `  host: qemu spawn → HELLO_ACK median ${median(host).toFixed(2)} s [${Math.min(...host).toFixed(2)}–${Math.max(...host).toFixed(2)}]`,
  );
  console.log(
    `  agent CPU by then: user ${median(boots.map((b) => b.cpu.user)).toFixed(2)} s, system ${median(boots.map((b) => b.cpu.system)).toFixed(2)} s (medians)`,
  );
}

const targets: { label: string; assets?: GuestAssets }[] = ASSET_DIRS.length
  ? await Promise.all(
      ASSET_DIRS.map(async (dir) => ({ label: dir, assets: await new AssetCatalog(dir).resolveCurrent() })),
    )
  : [{ label: process.env.COCOON_ASSETS ?? "current assets" }];
const results = new Map<string, Boot[]>(targets.map((t) => [t.label, []]));
for (let i = 0; i < BOOTS; i++) {
  for (const t of targets) {
    const b = await boot(t.assets, process.env.PROBE_DETAIL === "1" && i === 0);
    results.get(t.label)!.push(b);
    const answered = b.phases.get("hello answered");
    console.log(
      `boot ${i + 1}/${BOOTS} ${t.label}: host → HELLO_ACK ${b.hostHello.toFixed(2)} s` +
        (answered !== undefined ? `, guest answered at ${answered.toFixed(2)} s` : ""),
    );
  }
}
for (const t of targets) report(t.label, results.get(t.label)!);
