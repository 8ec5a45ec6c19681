/**
 * Network benchmark (docs/network.md), same run, interleaved:
 * - guest→host TCP throughput through cocoon's wiring (tap ↔ tc mirred ↔ veth ↔ cocoon0
 *   bridge, a CLI sandbox with --network bridge) against QEMU on a plain tap that has the
 *   host-side address itself (no tc, no veth, no bridge), both in namespaces the bench makes;
 * - the added start time of `run --rm -- true` with --network bridge over --network none.
 * Everything runs below a namespace made here: nothing touches the machine's own network.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { AgentClient, waitForAgent } from "../src/agent/client.js";
import { QemuHypervisor } from "../src/hypervisor/qemu/driver.js";
import { ASSETS_DIR, qemuConfig } from "../test/helpers/env.js";
import { TestNetns } from "../test/helpers/netns.js";
import { compare, printComparison, writeResults, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const MIB = Number(process.env.BENCH_NET_MIB ?? 64);

/** A receiver in `ns` that prints the throughput (Mbit/s) of the first connection, first byte to EOF. */
const RECEIVER = (ip: string) => `
const s = require("net").createServer((c) => {
  let bytes = 0, t0 = 0;
  c.on("data", (d) => { if (!t0) t0 = performance.now(); bytes += d.length; });
  c.on("end", () => { process.stdout.write(String((bytes * 8) / ((performance.now() - t0) / 1000) / 1e6)); s.close(); c.destroy(); });
}).listen(5001, "${ip}");`;

const SENDER = (ip: string) => `dd if=/dev/zero bs=65536 count=${MIB * 16} 2>/dev/null | nc ${ip} 5001`;

async function receive(ns: TestNetns, ip: string, send: () => Promise<unknown>): Promise<number> {
  const out = ns.run(process.execPath, ["-e", RECEIVER(ip)]);
  await new Promise((r) => setTimeout(r, 500));
  await send();
  return Number(await out);
}

async function cocoonThroughput(host: TestNetns, env: NodeJS.ProcessEnv): Promise<number> {
  const id = `bn${randomBytes(3).toString("hex")}`;
  const d = await host.cocoon(["run", "-d", "--name", id, "--network", "bridge", "--", "sleep", "1000"], env);
  if (d.code !== 0) throw new Error(d.stderr);
  try {
    return await receive(host, "10.88.0.1", () =>
      host.cocoon(["exec", id, "--", "sh", "-c", SENDER("10.88.0.1")], env),
    );
  } finally {
    await host.cocoon(["rm", "-f", id], env);
  }
}

async function plainTapThroughput(root: string, i: number): Promise<number> {
  const ns = await TestNetns.create("cct-bench-tap");
  const hv = new QemuHypervisor();
  try {
    await ns.run("ip", ["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    await ns.run("ip", ["addr", "add", "10.77.0.1/24", "dev", "tap0"]);
    await ns.run("ip", ["link", "set", "tap0", "up"]);
    const mac = "02:00:0a:4d:00:02";
    await hv.createVM({
      id: `pt${i}`,
      config: await qemuConfig(),
      paths: { vmDir: path.join(root, "vm", `pt${i}`), jailerBase: path.join(root, "jail") },
      netnsPath: ns.path,
      guestReady: async (channel, signal) =>
        void (await waitForAgent(channel, { timeoutMs: 120_000, signal })),
    });
    await hv.addDevice({ type: "net", id: "tap0", tapName: "tap0", mac });
    await hv.startVM(120_000);
    const agent = await AgentClient.connect(hv.agentChannel(), { timeoutMs: 30_000 });
    try {
      await agent.call("network.updateInterface", { mac, addresses: ["10.77.0.2/24"] });
      return await receive(ns, "10.77.0.1", async () => {
        await agent.call("process.start", {
          execId: "send",
          process: { args: ["sh", "-c", SENDER("10.77.0.1")] },
        });
        await agent.call("process.wait", { execId: "send" }, { timeoutMs: 0 });
      });
    } finally {
      await agent.close();
    }
  } finally {
    await hv.stopVM().catch(() => undefined);
    await hv.cleanup().catch(() => undefined);
    await ns.destroy();
  }
}

async function startMs(host: TestNetns, env: NodeJS.ProcessEnv, mode: string): Promise<number> {
  const t0 = performance.now();
  const r = await host.cocoon(["run", "--rm", "--network", mode, "--", "true"], env);
  if (r.code !== 0) throw new Error(r.stderr);
  return performance.now() - t0;
}

export async function runNetworkBench(): Promise<Comparison[]> {
  const root = await mkdtemp("/tmp/ccb-net-");
  const host = await TestNetns.create("cct-bench-host");
  const env = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: "" };
  try {
    const wired: number[] = [];
    const plain: number[] = [];
    const bridge: number[] = [];
    const none: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      wired.push(await cocoonThroughput(host, env));
      plain.push(await plainTapThroughput(root, i));
      bridge.push(await startMs(host, env, "bridge"));
      none.push(await startMs(host, env, "none"));
    }
    return [
      compare(
        "guest→host TCP throughput",
        "Mbit/s",
        ["cocoon (tc mirror, veth, bridge)", wired],
        ["QEMU on a plain tap", plain],
        `${MIB} MiB per round, TCG; goal ratio ≥ 0.9`,
      ),
      compare(
        "run --rm -- true",
        "ms",
        ["--network bridge", bridge],
        ["--network none", none],
        "added start time of the bridge",
      ),
    ];
  } finally {
    await host.destroy();
    await rm(root, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await runNetworkBench();
  results.forEach(printComparison);
  console.log(`\nwrote ${await writeResults("network", results)}`);
}
