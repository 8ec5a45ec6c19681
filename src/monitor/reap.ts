/**
 * Finding and ending what cocoon started for a VM, by the tag every such process carries
 * (OWNER_ENV in its environment) and by what the monitor recorded. This is what makes
 * "nothing outlives its record" hold after a crash: a VMM whose starter died mid-boot is
 * still found, because it was tagged before it existed.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { readProcStat } from "../host/proc.js";
import { terminatePid, waitPidGone } from "../host/process.js";
import { readMonitorRecords } from "./records.js";
import { OWNER_ENV } from "./spec.js";

export interface TaggedProcess {
  pid: number;
  startTime?: number;
  /** The VM directory it belongs to. */
  vmDir: string;
  /** argv[0]'s base name, for reports. */
  name: string;
}

const TAG_PREFIX = Buffer.from(`${OWNER_ENV}=`);

/** The value of OWNER_ENV in a NUL-separated environ block, if any. */
export function ownerFromEnviron(environ: Buffer): string | undefined {
  let start = 0;
  while (start < environ.length) {
    let end = environ.indexOf(0, start);
    if (end < 0) end = environ.length;
    const entry = environ.subarray(start, end);
    if (entry.subarray(0, TAG_PREFIX.length).equals(TAG_PREFIX)) {
      return entry.subarray(TAG_PREFIX.length).toString("utf8");
    }
    start = end + 1;
  }
  return undefined;
}

/** Live processes tagged with a VM directory under `vmRoot` (`<state>/vm`). Zombies are skipped. */
export async function findTaggedProcesses(vmRoot: string, procRoot = "/proc"): Promise<TaggedProcess[]> {
  const prefix = path.resolve(vmRoot) + path.sep;
  const out: TaggedProcess[] = [];
  for (const entry of await readdir(procRoot)) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const owner = ownerFromEnviron(await readFile(path.join(procRoot, entry, "environ")));
      if (!owner || !(owner + path.sep).startsWith(prefix)) continue;
      const stat = await readProcStat(pid, procRoot);
      if (!stat || stat.state === "Z" || stat.state === "X") continue;
      const cmdline = await readFile(path.join(procRoot, entry, "cmdline"), "utf8").catch(() => "");
      out.push({
        pid,
        startTime: stat.startTime,
        vmDir: owner,
        name: path.basename(cmdline.split("\0")[0] ?? "") || `pid ${pid}`,
      });
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

export interface ReapedProcess {
  pid: number;
  name: string;
}

/**
 * Ends every process of one VM: the monitor (first, so that it does not record the VMM's
 * death as news), the VMM, and anything else tagged with the VM directory (virtiofsd, a VMM
 * whose monitor died). Start times guard every signal against recycled pids.
 */
export async function reapVmProcesses(vmDir: string): Promise<ReapedProcess[]> {
  const reaped: ReapedProcess[] = [];
  const { record } = await readMonitorRecords(vmDir);
  const kill = async (p: { pid: number; startTime?: number | undefined }, name: string): Promise<void> => {
    const stat = await readProcStat(p.pid);
    if (!stat || stat.state === "Z" || (p.startTime !== undefined && stat.startTime !== p.startTime)) return;
    await terminatePid(p.pid, {
      ...(p.startTime !== undefined ? { startTime: p.startTime } : {}),
      steps: [{ signal: "SIGKILL", timeoutMs: 5_000 }],
    });
    reaped.push({ pid: p.pid, name });
  };
  if (record?.monitor) await kill(record.monitor, "monitor");
  if (record?.vmm) await kill(record.vmm, "VMM");
  const resolved = path.resolve(vmDir);
  for (const p of await findTaggedProcesses(path.dirname(resolved))) {
    if (path.resolve(p.vmDir) === resolved) await kill(p, p.name);
  }
  return reaped;
}

/**
 * Waits (briefly) for a VM's monitor to finish once its VMM is gone — it records the exit and
 * leaves — and ends it if it lingers, so a stopped VM leaves no process behind.
 */
export async function awaitMonitorGone(vmDir: string, timeoutMs = 5_000): Promise<void> {
  const { record } = await readMonitorRecords(vmDir);
  if (!record) return;
  const { pid, startTime } = record.monitor;
  if (await waitPidGone(pid, timeoutMs, startTime)) return;
  await terminatePid(pid, {
    ...(startTime !== undefined ? { startTime } : {}),
    steps: [{ signal: "SIGKILL", timeoutMs: 5_000 }],
  });
}
