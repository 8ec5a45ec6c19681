/**
 * Where the agent's time goes (issue 14): boots bare QEMU with `cocoon.cpuprof=1`, runs one
 * workload through the agent, has the agent write its CPU profile, and prints the functions
 * with the most self time. Usage: node --import tsx bench/profile-agent.ts out|in|exec
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Connection } from "../src/agent/protocol/connection.js";
import { bareQemuArgs, connectUnix } from "./boot.js";
import { run, sh } from "./datapath.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
}

const workload = process.argv[2] ?? "out";
const MB = 32;
const root = await mkdtemp("/tmp/ccp-");
const { args, sockets } = await bareQemuArgs(root, "prof", { append: "cocoon.cpuprof=1" });
const qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
try {
  const conn = new Connection(await connectUnix(sockets.get("cocoon.agent.0")!), { role: "client" });
  await conn.hello("profile", 120_000);
  await sh(conn, `dd if=/dev/urandom of=/tmp/blob bs=1M count=${MB} 2>/dev/null`);
  await sh(conn, "kill -USR2 $(pidof node)"); // restart the profile: only the workload counts
  await sleep(500);
  const t0 = performance.now();
  if (workload === "out") for (let i = 0; i < 3; i++) await run(conn, ["cat", "/tmp/blob"]);
  else if (workload === "in")
    for (let i = 0; i < 3; i++)
      await run(conn, ["head", "-c", String(MB * 2 ** 20)], Buffer.alloc(MB * 2 ** 20));
  else for (let i = 0; i < 50; i++) await run(conn, ["true"]);
  console.log(`workload ${workload}: ${(performance.now() - t0).toFixed(0)} ms`);
  await sh(conn, "kill -USR2 $(pidof node)");
  await sleep(1000);
  const text = (await run(conn, ["cat", "/tmp/agent.cpuprofile"])).stdout.toString();
  const file = path.resolve(import.meta.dirname, "results", `agent-${workload}.cpuprofile`);
  await writeFile(file, text);
  const profile = JSON.parse(text) as Profile;
  const self = new Map<string, number>();
  let total = 0;
  for (const n of profile.nodes) {
    const key = `${n.callFrame.functionName || "(anonymous)"} ${path.basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + (n.hitCount ?? 0));
    total += n.hitCount ?? 0;
  }
  const wallMs = (profile.endTime - profile.startTime) / 1000;
  console.log(`profile: ${total} samples over ${wallMs.toFixed(0)} ms (${file})`);
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25))
    console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
  conn.close();
} finally {
  qemu.kill("SIGKILL");
  await rm(root, { recursive: true, force: true });
}
