import { readdir, readFile } from "node:fs/promises";
import { HostError, errnoCode, messageOf } from "../../errors.js";
import { runChecked } from "../../host/process.js";

/**
 * Firecracker's threads by name (firecracker-test-framework.md §2): the VMM thread is named
 * `firecracker`, the API server `fc_api`, each vCPU `fc_vcpu N` (older releases: `fc_vcpuN`).
 * Pinning uses util-linux's `taskset` (Node has no sched_setaffinity).
 */

export interface ThreadInfo {
  tid: number;
  name: string;
}

/** The threads of `pid` from /proc/<pid>/task/*\/comm (threads that exit meanwhile are skipped). */
export async function listThreads(pid: number, procRoot = "/proc"): Promise<ThreadInfo[]> {
  let tids: string[];
  try {
    tids = await readdir(`${procRoot}/${pid}/task`);
  } catch (err) {
    if (errnoCode(err) === "ENOENT")
      throw new HostError("ERR_NOT_FOUND", `no process ${pid}`, { details: { pid } });
    throw new HostError("ERR_HOST_PROBE", `cannot list the threads of ${pid}: ${messageOf(err)}`, {
      cause: err,
    });
  }
  const out: ThreadInfo[] = [];
  for (const t of tids) {
    try {
      out.push({
        tid: Number(t),
        name: (await readFile(`${procRoot}/${pid}/task/${t}/comm`, "utf8")).trim(),
      });
    } catch {
      // the thread ended between readdir and readFile
    }
  }
  return out.sort((a, b) => a.tid - b.tid);
}

const VCPU_RE = /^fc_vcpu ?(\d+)$/;

/** vCPU index → thread id. */
export async function vcpuThreads(pid: number, procRoot?: string): Promise<Map<number, number>> {
  const map = new Map<number, number>();
  for (const t of await listThreads(pid, procRoot)) {
    const m = VCPU_RE.exec(t.name);
    if (m) map.set(Number(m[1]), t.tid);
  }
  return map;
}

/** The thread running Firecracker's VMM loop: the main thread when it carries the name, else the first `firecracker`. */
export async function vmmThread(pid: number, procRoot?: string): Promise<number | undefined> {
  const threads = await listThreads(pid, procRoot);
  const main = threads.find((t) => t.tid === pid && t.name.startsWith("firecracker"));
  return (main ?? threads.find((t) => t.name.startsWith("firecracker")))?.tid;
}

export async function apiThread(pid: number, procRoot?: string): Promise<number | undefined> {
  return (await listThreads(pid, procRoot)).find((t) => t.name === "fc_api")?.tid;
}

/** Restricts thread `tid` to `cpus` (taskset -p -c). */
export async function setAffinity(tid: number, cpus: readonly number[]): Promise<void> {
  if (!cpus.length || cpus.some((c) => !Number.isInteger(c) || c < 0)) {
    throw new HostError("ERR_INVALID_ARGUMENT", `invalid CPU list ${JSON.stringify(cpus)}`);
  }
  await runChecked("taskset", ["-p", "-c", cpus.join(","), String(tid)], { timeoutMs: 10_000 });
}

/** The CPUs a thread may run on, from /proc/<tid>/status. */
export async function getAffinity(tid: number): Promise<number[]> {
  const status = await readFile(`/proc/${tid}/status`, "utf8");
  const line = /^Cpus_allowed_list:\s*(.*)$/m.exec(status)?.[1] ?? "";
  const out: number[] = [];
  for (const part of line.split(",").filter(Boolean)) {
    const [a, b] = part.split("-").map(Number);
    for (let c = a!; c <= (b ?? a!); c++) out.push(c);
  }
  return out;
}
