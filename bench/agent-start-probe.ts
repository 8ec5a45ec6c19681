/**
 * Cold-start probe (issue 14): boots bare QEMU once (bench/boot.ts: cocoon's kernel and rootfs,
 * no cocoon code) and prints the time to HELLO_ACK on the host and, on the guest's clock, when
 * the agent's node was exec'd and when the first answer came. With PROBE_DETAIL=1 it then
 * times `node -e 0` in the guest (Node's own start), every command in PROBE_CMDS
 * (`;`-separated) the same way, and prints the output of each command in PROBE_SHOW; files
 * named as arguments are copied to the guest's /tmp first.
 * Usage: [COCOON_ASSETS=dir] node --import tsx bench/agent-start-probe.ts [file...]
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { Connection } from "../src/agent/protocol/connection.js";
import { bareQemuArgs, connectUnix } from "./boot.js";
import { sh } from "./datapath.js";

const root = await mkdtemp("/tmp/ccs-");
const { args, sockets } = await bareQemuArgs(root, "st");
const t0 = performance.now();
const qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
try {
  const conn = new Connection(await connectUnix(sockets.get("cocoon.agent.0")!), { role: "client" });
  await conn.hello("probe", 180_000);
  const helloMs = performance.now() - t0;
  // The agent's start time and its CPU time (user, system) so far, in clock ticks (100 Hz).
  const clock = await sh(conn, "cut -d' ' -f1 /proc/uptime; cut -d' ' -f22,14,15 /proc/$(pidof node)/stat");
  const [up, stat] = clock.split("\n");
  const [utime, stime, start] = stat!.split(" ").map(Number);
  console.log(`host: qemu spawn → HELLO_ACK ${(helloMs / 1000).toFixed(2)} s`);
  console.log(`guest clock: node exec'd ${(start! / 100).toFixed(2)} s, first answer ${up} s`);
  console.log(
    `agent CPU time by then: user ${(utime! / 100).toFixed(2)} s, system ${(stime! / 100).toFixed(2)} s`,
  );
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
  const extra = process.argv.slice(2);
  for (const file of extra) {
    const body = await readFile(file);
    const name = `/tmp/${file.split("/").pop()}`;
    await sh(conn, `cat > ${name}`, body);
  }
  if (process.env.PROBE_DETAIL === "1") {
    await timeIt("node -e 0, caches dropped", "node -e 0", 3, true);
    await timeIt("node -e 0, warm", "node -e 0", 5);
    await timeIt("node --jitless -e 0, warm", "node --jitless -e 0", 3);
    for (const cmd of (process.env.PROBE_CMDS ?? "").split(";").filter(Boolean)) await timeIt(cmd, cmd, 5);
    for (const cmd of (process.env.PROBE_SHOW ?? "").split(";").filter(Boolean))
      console.log(await sh(conn, `${cmd} 2>&1`));
    console.log(await sh(conn, `node -e 'console.log(JSON.stringify(performance.nodeTiming))'`));
  }
  conn.close();
} finally {
  qemu.kill("SIGKILL");
  await rm(root, { recursive: true, force: true });
}
