import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { HostError, errnoCode, messageOf } from "../../errors.js";
import type { CgroupPlan } from "./plan.js";

/** The limits a sandbox's host cgroups carry. */
export interface CgroupLimits {
  /** CPUs' worth of CFS quota (the vCPU count); 0 = no quota. */
  cpus: number;
  periodUs: number;
  /** Relative CPU weight, 1..10000 (v2 `cpu.weight`; v1 `cpu.shares` = weight × 1024 / 100). */
  weight?: number;
  /** Host CPUs the vCPU threads may run on ("0-1,3"). */
  cpusetCpus?: string;
  memoryBytes: number;
  pidsMax: number;
}

function cgroupError(what: string, file: string, err: unknown): HostError {
  const code = errnoCode(err);
  return new HostError("ERR_CGROUP", `${what} (${file}): ${messageOf(err)}`, {
    details: { file, errno: code },
    ...(code === "EACCES" || code === "EPERM" || code === "EROFS"
      ? { hint: 'cocoon manages host cgroups as root; run as root or set [runtime] cgroups = "off"' }
      : code === "EBUSY" || code === "EINVAL"
        ? { hint: "the value is not allowed here (below current use, or outside the parent's range)" }
        : {}),
  });
}

async function write(dir: string, file: string, value: string, what: string): Promise<void> {
  const p = path.join(dir, file);
  try {
    await writeFile(p, value);
  } catch (err) {
    throw cgroupError(what, p, err);
  }
}

async function read(dir: string, file: string): Promise<string | undefined> {
  return readFile(path.join(dir, file), "utf8").then(
    (t) => t.trim(),
    () => undefined,
  );
}

/** Makes the directories and writes the limits. Idempotent (a retry after a crash). */
export async function createCgroups(plan: CgroupPlan, limits: CgroupLimits): Promise<void> {
  for (const dir of plan.dirs) {
    try {
      await mkdir(dir);
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") throw cgroupError("cannot create the cgroup", dir, err);
    }
    if (plan.version === 2 && dir === plan.dirs[0]) {
      const parent = path.dirname(dir);
      const wanted = [
        plan.cpu || plan.cpuacct ? "cpu" : "",
        plan.cpuset ? "cpuset" : "",
        plan.memory ? "memory" : "",
        plan.pids ? "pids" : "",
        plan.blkio ? "io" : "",
      ].filter(Boolean);
      const available = ((await read(parent, "cgroup.controllers")) ?? "").split(/\s+/);
      const enable = wanted.filter((c) => available.includes(c)).map((c) => `+${c}`);
      if (enable.length)
        await write(parent, "cgroup.subtree_control", enable.join(" "), "cannot enable controllers");
    }
    if (plan.threaded.includes(dir))
      await write(dir, "cgroup.type", "threaded", "cannot make the cgroup threaded");
  }
  if (plan.version === 2 && plan.subtreeControllers.length) {
    await write(
      plan.dirs[0]!,
      "cgroup.subtree_control",
      plan.subtreeControllers.map((c) => `+${c}`).join(" "),
      "cannot enable thread controllers",
    );
  }
  // v1 cpuset: a cgroup takes no task until cpus and mems are set; copy the parent's.
  for (const dir of plan.version === 1
    ? [...plan.cpusetInherit, ...(plan.cpuset ? [plan.cpuset] : [])]
    : []) {
    for (const f of ["cpuset.mems", "cpuset.cpus"]) {
      const inherited = await read(path.dirname(dir), f);
      if (inherited) await write(dir, f, inherited, "cannot set the cpuset");
    }
  }
  await applyLimits(plan, limits);
}

/** Writes (or rewrites, on a resize) every limit of the plan. */
export async function applyLimits(plan: CgroupPlan, limits: CgroupLimits): Promise<void> {
  const quota = limits.cpus > 0 ? Math.round(limits.cpus * limits.periodUs) : -1;
  if (plan.cpu) {
    if (plan.version === 2) {
      await write(
        plan.cpu,
        "cpu.max",
        `${quota < 0 ? "max" : quota} ${limits.periodUs}`,
        "cannot set the CPU quota",
      );
      if (limits.weight)
        await write(plan.cpu, "cpu.weight", String(limits.weight), "cannot set the CPU weight");
    } else {
      await write(plan.cpu, "cpu.cfs_period_us", String(limits.periodUs), "cannot set the CPU period");
      await write(plan.cpu, "cpu.cfs_quota_us", String(quota), "cannot set the CPU quota");
      if (limits.weight)
        await write(
          plan.cpu,
          "cpu.shares",
          String(Math.max(2, Math.round((limits.weight * 1024) / 100))),
          "cannot set CPU shares",
        );
    }
  }
  if (plan.cpuset && limits.cpusetCpus)
    await write(plan.cpuset, "cpuset.cpus", limits.cpusetCpus, "cannot pin the vCPUs");
  if (plan.memory) {
    const file = plan.version === 2 ? "memory.max" : "memory.limit_in_bytes";
    await write(plan.memory, file, String(limits.memoryBytes), "cannot set the memory limit");
  }
  if (plan.pids) await write(plan.pids, "pids.max", String(limits.pidsMax), "cannot set the pids limit");
}

/** Moves a whole process (every thread) into the sandbox's process cgroups. */
export async function joinProcess(plan: CgroupPlan, pid: number): Promise<void> {
  for (const dir of plan.procs) await write(dir, "cgroup.procs", String(pid), `cannot move process ${pid}`);
}

/** Moves vCPU threads into the vCPU cgroups (a no-op with sandbox_cgroup_only). */
export async function joinVcpuThreads(plan: CgroupPlan, tids: number[]): Promise<void> {
  const file = plan.version === 2 ? "cgroup.threads" : "tasks";
  for (const dir of plan.vcpus)
    for (const tid of tids) await write(dir, file, String(tid), `cannot move vCPU thread ${tid}`);
}

/** Thread ids in a cgroup (to check placement). */
export async function cgroupThreads(dir: string, version: 1 | 2): Promise<number[]> {
  const text = (await read(dir, version === 2 ? "cgroup.threads" : "tasks")) ?? "";
  return text.split("\n").filter(Boolean).map(Number);
}

/** The first of `dirs` that holds a task, with its tasks (missing directories hold none). */
export async function firstBusyCgroup(
  dirs: string[],
  version: 1 | 2,
): Promise<{ dir: string; tasks: number[] } | undefined> {
  for (const dir of dirs) {
    const tasks = await cgroupThreads(dir, version);
    if (tasks.length) return { dir, tasks };
  }
  return undefined;
}

/**
 * Refuses cgroups another VMM already runs in. The names are `cocoon-<sandbox id>`: a sandbox
 * of the same id under another state root (another COCOON_ROOT) would otherwise join that
 * one's cgroups, share its limits, and fail its delete (EBUSY) for as long as the other runs.
 * An existing empty directory (left by a crash) is taken over.
 */
export async function checkCgroupsFree(plan: CgroupPlan): Promise<void> {
  const busy = await firstBusyCgroup(plan.dirs, plan.version);
  if (busy) {
    const { dir, tasks } = busy;
    throw new HostError("ERR_CGROUP", `the host cgroup ${dir} is in use (tasks ${tasks.join(", ")})`, {
      details: { dir, tasks },
      hint: "another cocoon state root (COCOON_ROOT) has a running sandbox of the same name: pick another name",
    });
  }
}

/**
 * Removes the sandbox's directories, children first. A cgroup whose last task has just been
 * reaped can stay busy for a moment, so EBUSY is retried briefly; what still holds tasks then
 * is an error (the record stays, a later `rm` retries).
 */
export async function removeCgroups(plan: CgroupPlan, timeoutMs = 5_000): Promise<void> {
  for (const dir of [...plan.dirs].reverse()) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await rmdir(dir);
        break;
      } catch (err) {
        const code = errnoCode(err);
        if (code === "ENOENT") break;
        if (code !== "EBUSY" || Date.now() >= deadline) {
          const tasks = await cgroupThreads(dir, plan.version);
          throw new HostError("ERR_CGROUP", `cannot remove the cgroup ${dir}: ${messageOf(err)}`, {
            details: { dir, tasks },
            ...(tasks.length ? { hint: `tasks ${tasks.join(", ")} are still in it` } : {}),
          });
        }
        await sleep(50);
      }
    }
  }
}

/** Host-side figures for `stats`. Missing controllers leave fields out. */
export interface HostCgroupStats {
  cpuUsageNs?: number;
  memoryBytes?: number;
  memoryLimitBytes?: number;
  memoryPeakBytes?: number;
  pids?: number;
  pidsLimit?: number;
  blockReadBytes?: number;
  blockWriteBytes?: number;
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v === "" || v === "max") return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

function keyed(text: string | undefined, key: string): number | undefined {
  const line = text?.split("\n").find((l) => l.startsWith(`${key} `));
  return num(line?.split(" ")[1]);
}

/** Sums v2 io.stat (`rbytes=` / `wbytes=`) or v1 blkio (`Read`/`Write` lines) over devices. */
function ioBytes(text: string | undefined, version: 1 | 2): { read: number; write: number } | undefined {
  if (text === undefined) return undefined;
  let read = 0;
  let writeBytes = 0;
  for (const line of text.split("\n")) {
    if (version === 2) {
      read += Number(/rbytes=(\d+)/.exec(line)?.[1] ?? 0);
      writeBytes += Number(/wbytes=(\d+)/.exec(line)?.[1] ?? 0);
    } else {
      const m = /^\S+ (Read|Write) (\d+)$/.exec(line.trim());
      if (m?.[1] === "Read") read += Number(m[2]);
      if (m?.[1] === "Write") writeBytes += Number(m[2]);
    }
  }
  return { read, write: writeBytes };
}

export async function readCgroupStats(plan: CgroupPlan): Promise<HostCgroupStats> {
  const out: HostCgroupStats = {};
  const v2 = plan.version === 2;
  const set = <K extends keyof HostCgroupStats>(k: K, v: number | undefined): void => {
    if (v !== undefined) out[k] = v;
  };
  if (plan.cpuacct) {
    if (v2) {
      const usec = keyed(await read(plan.cpuacct, "cpu.stat"), "usage_usec");
      set("cpuUsageNs", usec === undefined ? undefined : usec * 1000);
    } else set("cpuUsageNs", num(await read(plan.cpuacct, "cpuacct.usage")));
  }
  if (plan.memory) {
    set("memoryBytes", num(await read(plan.memory, v2 ? "memory.current" : "memory.usage_in_bytes")));
    set("memoryLimitBytes", num(await read(plan.memory, v2 ? "memory.max" : "memory.limit_in_bytes")));
    set("memoryPeakBytes", num(await read(plan.memory, v2 ? "memory.peak" : "memory.max_usage_in_bytes")));
  }
  if (plan.pids) {
    set("pids", num(await read(plan.pids, "pids.current")));
    set("pidsLimit", num(await read(plan.pids, "pids.max")));
  }
  if (plan.blkio) {
    const io = ioBytes(
      await read(plan.blkio, v2 ? "io.stat" : "blkio.throttle.io_service_bytes_recursive"),
      plan.version,
    );
    set("blockReadBytes", io?.read);
    set("blockWriteBytes", io?.write);
  }
  return out;
}
