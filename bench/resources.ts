/**
 * Resource control benchmarks. (1) The host memory overhead of one idle sandbox: the PSS of
 * QEMU and virtiofsd beyond the guest RAM the guest has touched (MemTotal − MemFree) — the
 * figure a RuntimeClass `overhead` needs. (2) The time of a live resize on q35 (vCPU and
 * memory hotplug, onlined by the agent), against an update to the size the VM already has
 * (the fixed cost: lock, state, agent round trips).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Runtime } from "../src/sandbox/runtime.js";
import type { Sandbox } from "../src/sandbox/sandbox.js";
import { ASSETS_DIR, guestAssets } from "../test/helpers/env.js";
import { busyboxRootfs } from "../test/helpers/rootfs.js";
import { compare, pssKiB, round, stats, type Comparison } from "./lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

async function pssMiB(pid: number): Promise<number> {
  return (await pssKiB(pid)) / 1024;
}

async function guestTouchedMiB(sb: Sandbox): Promise<number> {
  const out = await (await sb.exec({ process: { args: ["cat", "/proc/meminfo"] }, inGuest: true })).output();
  const text = out.stdout.toString();
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return (kb("MemTotal") - kb("MemFree")) / 1024;
}

async function runtimeAt(root: string, toml: string): Promise<Runtime> {
  const configPath = path.join(root, `c-${Math.random().toString(36).slice(2)}.toml`);
  await writeFile(configPath, toml);
  return Runtime.open({ root, configPath, env: { COCOON_ASSETS: ASSETS_DIR } });
}

async function idleOverhead(root: string): Promise<{ cmp: Comparison; overhead: number[] }> {
  const runtime = await runtimeAt(root, "");
  const rootfs = await busyboxRootfs(path.join(root, "busybox"));
  const vmm: number[] = [];
  const guest: number[] = [];
  const overhead: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const sb = await runtime.createSandbox({
      memoryMB: 512,
      containers: [
        { id: "idle", rootfs: { type: "dir", path: rootfs }, process: { args: ["sleep", "600"] } },
      ],
    });
    try {
      await sb.start();
      await sleep(3_000);
      const pids = (await sb.status()).pids;
      let pss = 0;
      for (const pid of pids) pss += await pssMiB(pid);
      const touched = await guestTouchedMiB(sb);
      vmm.push(pss);
      guest.push(touched);
      overhead.push(pss - touched);
    } finally {
      await sb.delete({ force: true });
    }
  }
  return {
    cmp: compare(
      "idle sandbox host memory (512 MiB guest, one virtio-fs container)",
      "MiB",
      ["QEMU + virtiofsd PSS", vmm],
      ["guest RAM in use (MemTotal - MemFree)", guest],
      "the difference is the VMM overhead (see extra.idleOverheadMiB)",
    ),
    overhead,
  };
}

async function resizeTime(root: string): Promise<Comparison[]> {
  const runtime = await runtimeAt(root, `[hypervisor.qemu]\nmachine_type = "q35"\nshared_fs = "none"\n`);
  const sb = await runtime.createSandbox({ cpus: 1, memoryMB: 512, process: { args: ["sleep", "600"] } });
  const cpu: number[] = [];
  const mem: number[] = [];
  const noop: number[] = [];
  const time = async (fn: () => Promise<unknown>): Promise<number> => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  try {
    await sb.start();
    // One grow of each per VM: QEMU 7.2 crashes re-plugging after an unplug (resize.ts).
    cpu.push(await time(() => sb.update({ cpus: 2 })));
    mem.push(await time(() => sb.update({ memoryMB: 1024 })));
    for (let i = 0; i < ROUNDS; i++) noop.push(await time(() => sb.update({ cpus: 2, memoryMB: 1024 })));
  } finally {
    await sb.delete({ force: true });
  }
  return [
    compare(
      "live resize: +1 vCPU, seen online by the guest (q35)",
      "ms",
      ["update --cpus 2", cpu],
      ["update to the current size", noop],
    ),
    compare(
      "live resize: +512 MiB, onlined by the guest (q35)",
      "ms",
      ["update --memory 1G", mem],
      ["update to the current size", noop],
    ),
  ];
}

export async function runResourceBench(): Promise<{ results: Comparison[]; extra: Record<string, unknown> }> {
  await guestAssets();
  const root = await mkdtemp("/tmp/ccr-");
  try {
    process.stderr.write("  idle sandbox overhead...\n");
    const idle = await idleOverhead(root);
    process.stderr.write("  live resize...\n");
    const resize = await resizeTime(root);
    return {
      results: [idle.cmp, ...resize],
      extra: { idleOverheadMiB: stats(idle.overhead.map((x) => round(x))) },
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
