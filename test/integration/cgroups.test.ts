import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { createCgroups, joinProcess } from "../../src/host/cgroups/cgroupfs.js";
import { detectCgroupLayout } from "../../src/host/cgroups/layout.js";
import { cgroupPlanSchema, planCgroups, type CgroupPlan } from "../../src/host/cgroups/plan.js";
import { SandboxCgroups } from "../../src/sandbox/resources/host-cgroups.js";
import { Runtime } from "../../src/sandbox/runtime.js";
import { statsRow } from "../../src/sandbox/resources/stats.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { hostCgroupsOf } from "../helpers/crash.js";
import { busyboxRootfs } from "../helpers/rootfs.js";

// Host cgroups of real QEMU sandboxes, read back from cgroupfs (this host is v1/hybrid).
let root: string;
let cleanupRoot: () => Promise<void>;
let rootfsDir: string;
const sandboxes: Sandbox[] = [];

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  rootfsDir = await busyboxRootfs(path.join(root, "busybox"));
}, 20 * 60_000);

afterEach(async () => {
  for (const sb of sandboxes.splice(0)) await sb.delete({ force: true }).catch(() => undefined);
});

afterAll(async () => {
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function runtimeWith(configToml: string): Promise<Runtime> {
  const configPath = path.join(root, `config-${sandboxes.length}.toml`);
  await writeFile(configPath, configToml);
  return Runtime.open({ root, configPath, env: { COCOON_ASSETS: ASSETS_DIR } });
}

async function plan(runtime: Runtime, id: string): Promise<CgroupPlan> {
  const doc = JSON.parse(await readFile(path.join(runtime.paths.sandboxDir(id), "cgroups.json"), "utf8")) as {
    data: { plan: unknown };
  };
  return cgroupPlanSchema.parse(doc.data.plan);
}

const value = async (dir: string, file: string): Promise<string> =>
  (await readFile(path.join(dir, file), "utf8")).trim();
const ids = async (dir: string, file: string): Promise<number[]> =>
  (await value(dir, file)).split("\n").filter(Boolean).map(Number);

/** QEMU names its TCG vCPU threads "CPU <n>/TCG" (KVM: "CPU <n>/KVM"). */
async function vcpuThreads(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const comm = (await readFile(`/proc/${pid}/task/${tid}/comm`, "utf8").catch(() => "")).trim();
    if (/^CPU \d+\//.test(comm)) out.push(Number(tid));
  }
  return out.sort((a, b) => a - b);
}

describe("host cgroups of a QEMU sandbox (real VM, TCG)", () => {
  it("vCPU threads apart from the overhead (sandbox_cgroup_only = false), limits read back, nothing left after rm", async () => {
    const runtime = await runtimeWith(`[hypervisor.qemu]\nshared_fs = "virtio-fs"\n`);
    const sb = await runtime.createSandbox({
      cpus: 1,
      memoryMB: 384,
      cpusetCpus: "0",
      pidsLimit: 200,
      containers: [
        { id: "main", rootfs: { type: "dir", path: rootfsDir }, process: { args: ["sleep", "600"] } },
      ],
    });
    sandboxes.push(sb);
    const p = await plan(runtime, sb.id);
    expect(p).toMatchObject({ version: 1, sandboxCgroupOnly: false });
    const [qemu, virtiofsd] = (await sb.status()).pids;
    expect(virtiofsd).toBeGreaterThan(0);

    // limits
    expect(await value(p.memory!, "memory.limit_in_bytes")).toBe(String((384 + 512) * 1024 * 1024));
    expect(await value(p.pids!, "pids.max")).toBe("200");
    expect(p.cpu).toMatch(/\/vcpus$/);
    expect(await value(p.cpu!, "cpu.cfs_quota_us")).toBe("100000");
    expect(await value(p.cpu!, "cpu.cfs_period_us")).toBe("100000");
    expect(await value(p.cpuset!, "cpuset.cpus")).toBe("0");

    // placement: the whole VMM and virtiofsd in the memory/pids cgroups, vCPUs split off
    expect(await ids(p.memory!, "cgroup.procs")).toEqual(expect.arrayContaining([qemu, virtiofsd]));
    expect(await ids(p.pids!, "cgroup.procs")).toEqual(expect.arrayContaining([qemu, virtiofsd]));
    const vcpus = await vcpuThreads(qemu!);
    expect(vcpus).toHaveLength(1);
    expect((await ids(p.cpu!, "tasks")).sort((a, b) => a - b)).toEqual(vcpus);
    const overhead = path.join(path.dirname(p.cpu!), "overhead");
    expect(await ids(overhead, "tasks")).toEqual(expect.arrayContaining([qemu, virtiofsd]));
    expect(await ids(overhead, "tasks")).not.toContain(vcpus[0]);

    await sb.delete({ force: true });
    for (const dir of p.dirs) expect(existsSync(dir), dir).toBe(false);
  });

  it("everything in one cgroup under the quota with sandbox_cgroup_only = true", async () => {
    const runtime = await runtimeWith(`[runtime]\nsandbox_cgroup_only = true\n`);
    const sb = await runtime.createSandbox({ cpus: 1, memoryMB: 256, process: { args: ["sleep", "600"] } });
    sandboxes.push(sb);
    const p = await plan(runtime, sb.id);
    expect(p).toMatchObject({ sandboxCgroupOnly: true, vcpus: [] });
    const [qemu] = (await sb.status()).pids;
    expect(await value(p.cpu!, "cpu.cfs_quota_us")).toBe("100000");
    expect(await value(p.memory!, "memory.limit_in_bytes")).toBe(String((256 + 512) * 1024 * 1024));
    const tasks = await ids(p.cpu!, "tasks");
    for (const tid of await vcpuThreads(qemu!)) expect(tasks).toContain(tid);
    expect(tasks).toContain(qemu);
    await sb.delete({ force: true });
    for (const dir of p.dirs) expect(existsSync(dir), dir).toBe(false);
  });

  it("stats: a CPU loop shows near one CPU busy, memory allocated in the guest shows on both sides", async () => {
    const runtime = await runtimeWith("");
    const sb = await runtime.createSandbox({
      cpus: 1,
      memoryMB: 512,
      process: { args: ["sh", "-c", "while :; do :; done"] },
    });
    sandboxes.push(sb);
    await sb.start();
    const a = await sb.stats();
    await new Promise((r) => setTimeout(r, 3_000));
    const b = await sb.stats();
    const busy = statsRow(a, b);
    expect(busy.guestCpus).toBe(1);
    expect(busy.guestCpuPercent).toBeGreaterThan(70);
    expect(busy.guestCpuPercent).toBeLessThanOrEqual(105);
    expect(busy.hostCpuPercent).toBeGreaterThan(50);
    expect(busy.hostMemoryLimitBytes).toBe((512 + 512) * 2 ** 20);
    expect(busy.pids).toBeGreaterThan(1);

    const fill = await sb.exec({
      process: { args: ["dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M", "count=200"] },
    });
    expect((await fill.output()).exit).toEqual({ exitCode: 0 });
    const c = await sb.stats();
    const filled = statsRow(b, c);
    expect(filled.guestMemoryBytes! - busy.guestMemoryBytes!).toBeGreaterThan(150 * 2 ** 20);
    expect(filled.hostMemoryBytes! - busy.hostMemoryBytes!).toBeGreaterThan(100 * 2 ** 20);
  });

  it("a container over its 64 MiB limit in the guest is OOM-killed: exit 137, status says OOM", async () => {
    const runtime = await runtimeWith("");
    const sb = await runtime.createSandbox({
      memoryMB: 512,
      containers: [
        {
          id: "hog",
          rootfs: { type: "dir", path: rootfsDir },
          // tail keeps the last "line" of an endless stream without newlines: it only grows
          process: { args: ["tail", "/dev/zero"] },
          resources: { memoryBytes: 64 * 2 ** 20, pidsLimit: 32 },
        },
      ],
    });
    sandboxes.push(sb);
    await sb.start();
    expect(await sb.wait()).toEqual({ exitCode: 137, signal: "SIGKILL", oomKilled: true });
    const status = await sb.status();
    expect(status.containers[0]).toMatchObject({ id: "hog", exit: { exitCode: 137, oomKilled: true } });
  });
});

describe("host cgroups whose record is gone (gc), on the real cgroupfs, no VM", () => {
  it("removes them when empty, in either layout; leaves them while a task is in them", async () => {
    const layout = await detectCgroupLayout();
    expect(layout).toBeDefined();
    const limits = { cpus: 1, periodUs: 100_000, memoryBytes: 256 * 1024 * 1024, pidsMax: 64 };
    for (const only of [false, true]) {
      const id = `gc-orphan-${only ? "one" : "split"}`;
      const p = planCgroups(layout!, id, only);
      await createCgroups(p, limits);
      // A task inside: another state root's live sandbox of the same name. Not ours to remove.
      const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
      try {
        await joinProcess(p, sleeper.pid!);
        expect(await SandboxCgroups.unrecorded(id)).toBeUndefined();
        expect(await hostCgroupsOf([id])).toEqual(expect.arrayContaining(p.dirs));
      } finally {
        sleeper.kill("SIGKILL");
        await new Promise((r) => sleeper.once("exit", r));
      }
      const found = await SandboxCgroups.unrecorded(id);
      expect(await hostCgroupsOf([id])).not.toEqual([]);
      expect(found!.tops.every((d) => path.basename(d) === `cocoon-${id}`)).toBe(true);
      expect(found!.tops.length).toBeGreaterThan(0);
      await found!.remove();
      expect(await hostCgroupsOf([id])).toEqual([]);
    }
  });
});
