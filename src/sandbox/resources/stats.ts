import type { AgentClient } from "../../agent/client.js";
import type { ResultOf } from "../../agent/protocol/methods.js";
import type { HostCgroupStats } from "../../host/cgroups/cgroupfs.js";
import type { SandboxCgroups } from "./host-cgroups.js";

/** One sample of a sandbox's figures: the host's cgroups, the guest's view, its containers. */
export interface SandboxStats {
  id: string;
  /** When the sample was taken (ms since the epoch): CPU % needs two samples. */
  readAtMs: number;
  /** VMM + helpers on the host (absent when the sandbox has no host cgroups). */
  host?: HostCgroupStats;
  guest?: ResultOf<"resources.usage">;
  containers: ({ id: string } & ResultOf<"container.stats">)[];
  /** Bytes the guest received and sent on its NICs (absent without a network). */
  network?: { rxBytes: number; txBytes: number };
}

export async function sampleStats(
  id: string,
  agent: AgentClient | undefined,
  cgroups: SandboxCgroups | undefined,
  runningContainers: string[],
  network?: () => Promise<{ rxBytes: number; txBytes: number } | undefined>,
): Promise<SandboxStats> {
  const readAtMs = Date.now();
  const host = await cgroups?.stats();
  const guest = agent ? await agent.call("resources.usage", {}, { timeoutMs: 10_000 }) : undefined;
  const containers: SandboxStats["containers"] = [];
  for (const c of agent ? runningContainers : []) {
    const s = await agent!
      .call("container.stats", { containerId: c }, { timeoutMs: 10_000 })
      .catch(() => undefined);
    if (s) containers.push({ id: c, ...s });
  }
  const net = await network?.().catch(() => undefined);
  return {
    id,
    readAtMs,
    ...(host ? { host } : {}),
    ...(guest ? { guest } : {}),
    containers,
    ...(net ? { network: net } : {}),
  };
}

/** What `stats` shows: rates from two samples, sizes from the later one. docker's CPU %: 100 = one CPU. */
export interface StatsRow {
  id: string;
  /** Host CPU of the VMM (cgroup), and CPU busy inside the guest. */
  hostCpuPercent?: number;
  guestCpuPercent?: number;
  guestCpus?: number;
  /** Memory the guest uses (MemTotal − MemAvailable) and its size. */
  guestMemoryBytes?: number;
  guestMemoryTotalBytes?: number;
  /** Host memory charged to the sandbox and its cgroup limit. */
  hostMemoryBytes?: number;
  hostMemoryLimitBytes?: number;
  blockReadBytes?: number;
  blockWriteBytes?: number;
  /** Bytes the guest received and sent on its NICs (docker's NET I/O). */
  netRxBytes?: number;
  netTxBytes?: number;
  pids?: number;
  guestTasks?: number;
  containers: {
    id: string;
    cpuPercent?: number;
    memoryBytes: number;
    memoryLimitBytes?: number;
    pids: number;
  }[];
}

const pct = (deltaUsec: number, wallMs: number): number =>
  Math.round((deltaUsec / (wallMs * 1000)) * 1000) / 10;

export function statsRow(a: SandboxStats, b: SandboxStats): StatsRow {
  const wall = Math.max(1, b.readAtMs - a.readAtMs);
  const row: StatsRow = { id: b.id, containers: [] };
  const set = <K extends keyof StatsRow>(k: K, v: StatsRow[K] | undefined): void => {
    if (v !== undefined) row[k] = v;
  };
  if (a.host?.cpuUsageNs !== undefined && b.host?.cpuUsageNs !== undefined)
    row.hostCpuPercent = pct((b.host.cpuUsageNs - a.host.cpuUsageNs) / 1000, wall);
  if (a.guest && b.guest) row.guestCpuPercent = pct(b.guest.cpuUsageUsec - a.guest.cpuUsageUsec, wall);
  set("guestCpus", b.guest?.onlineCpus);
  if (b.guest) {
    row.guestMemoryBytes = b.guest.memTotalBytes - b.guest.memAvailableBytes;
    row.guestMemoryTotalBytes = b.guest.memTotalBytes;
  }
  set("hostMemoryBytes", b.host?.memoryBytes);
  set("hostMemoryLimitBytes", b.host?.memoryLimitBytes);
  set("blockReadBytes", b.host?.blockReadBytes);
  set("blockWriteBytes", b.host?.blockWriteBytes);
  set("netRxBytes", b.network?.rxBytes);
  set("netTxBytes", b.network?.txBytes);
  set("pids", b.host?.pids);
  set("guestTasks", b.guest?.tasks);
  for (const c of b.containers) {
    const before = a.containers.find((x) => x.id === c.id);
    row.containers.push({
      id: c.id,
      ...(before ? { cpuPercent: pct(c.cpuUsageUsec - before.cpuUsageUsec, wall) } : {}),
      memoryBytes: c.memoryBytes,
      ...(c.memoryLimitBytes !== undefined ? { memoryLimitBytes: c.memoryLimitBytes } : {}),
      pids: c.pids,
    });
  }
  return row;
}
