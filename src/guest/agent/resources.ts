import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Handlers } from "./dispatch.js";

const CPU_DIR = "/sys/devices/system/cpu";
const MEMORY_DIR = "/sys/devices/system/memory";

async function readTrim(file: string): Promise<string | undefined> {
  return readFile(file, "utf8").then(
    (t) => t.trim(),
    () => undefined,
  );
}

/** Writes `value` to every listed sysfs `file` whose current content is `offValue`. */
async function onlineAll(
  dirs: string[],
  file: string,
  offValue: string,
  onValue: string,
  failures: string[],
): Promise<number> {
  let n = 0;
  for (const dir of dirs) {
    const f = path.join(dir, file);
    if ((await readTrim(f)) !== offValue) continue;
    try {
      await writeFile(f, onValue);
      n++;
    } catch (err) {
      failures.push(`${f}: ${(err as Error).message}`);
    }
  }
  return n;
}

async function entries(dir: string, pattern: RegExp): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[]))
    .filter((e) => pattern.test(e))
    .map((e) => path.join(dir, e));
}

/** Online CPUs from /sys/devices/system/cpu/online ("0-1,3"). */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.split(",").filter(Boolean)) {
    const [a, b] = part.split("-").map(Number) as [number, number | undefined];
    n += (b ?? a) - a + 1;
  }
  return n;
}

async function meminfo(key: string): Promise<number> {
  const text = (await readTrim("/proc/meminfo")) ?? "";
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
}
const memTotalBytes = (): Promise<number> => meminfo("MemTotal");

/** Busy CPU time (everything but idle and iowait) from the first line of /proc/stat, in µs. */
export function busyUsec(procStat: string, ticksPerSecond = 100): number {
  const f = (procStat.split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const busy = f.reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0);
  return Math.round((busy * 1e6) / ticksPerSecond);
}

/** Resource control: the agent's side of a live resize. */
export const resourceHandlers: Handlers = {
  "resources.online": async ({ movableMemory }) => {
    const failures: string[] = [];
    const onlinedCpus = await onlineAll(await entries(CPU_DIR, /^cpu\d+$/), "online", "0", "1", failures);
    const onlinedMemoryBlocks = await onlineAll(
      await entries(MEMORY_DIR, /^memory\d+$/),
      "state",
      "offline",
      movableMemory ? "online_movable" : "online",
      failures,
    );
    return {
      onlineCpus: countCpuList((await readTrim(path.join(CPU_DIR, "online"))) ?? "0"),
      memTotalBytes: await memTotalBytes(),
      onlinedCpus,
      onlinedMemoryBlocks,
      failures,
    };
  },
  "resources.usage": async () => ({
    onlineCpus: countCpuList((await readTrim(path.join(CPU_DIR, "online"))) ?? "0"),
    cpuUsageUsec: busyUsec((await readTrim("/proc/stat")) ?? ""),
    memTotalBytes: await memTotalBytes(),
    memAvailableBytes: await meminfo("MemAvailable"),
    tasks: (await readdir("/proc")).filter((e) => /^\d+$/.test(e)).length,
  }),
};
