import { readFile } from "node:fs/promises";
import { HostError, errnoCode, messageOf } from "../errors.js";

/** The files host probes read; every probe takes them so tests can feed crafted copies. */
export interface ProcPaths {
  meminfo: string;
  cpuinfo: string;
  /** Directory holding `<pid>/stat`. */
  procRoot: string;
}

export const DEFAULT_PROC_PATHS: ProcPaths = {
  meminfo: "/proc/meminfo",
  cpuinfo: "/proc/cpuinfo",
  procRoot: "/proc",
};

async function readProbe(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw new HostError("ERR_HOST_PROBE", `cannot read ${file}: ${messageOf(err)}`, {
      cause: err,
      details: { file },
    });
  }
}

/** Parses `MemTotal:  <n> kB` out of meminfo text; malformed lines are skipped. */
export function parseMemTotalKb(text: string, source = "meminfo"): number {
  for (const line of text.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (parts.length < 3 || parts[0] !== "MemTotal:" || parts[2] !== "kB") continue;
    if (!/^\d+$/.test(parts[1] ?? "")) continue;
    return Number(parts[1]);
  }
  throw new HostError("ERR_HOST_PROBE", `no MemTotal line in ${source}`, { details: { file: source } });
}

/** Host memory in kB, from /proc/meminfo. */
export async function hostMemoryKb(meminfoPath = DEFAULT_PROC_PATHS.meminfo): Promise<number> {
  return parseMemTotalKb(await readProbe(meminfoPath), meminfoPath);
}

/**
 * Whether cpuinfo's flags line lists `hypervisor` (this host is itself a VM). Only the first
 * flags line is read: every CPU has the same flags. No flags line at all is an error.
 */
export function parseRunningOnVmm(text: string, source = "cpuinfo"): boolean {
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 2 || !fields[0]?.startsWith("flags")) continue;
    return fields.slice(1).includes("hypervisor");
  }
  throw new HostError("ERR_HOST_PROBE", `no "flags" line in ${source}`, { details: { file: source } });
}

export async function runningOnVmm(cpuinfoPath = DEFAULT_PROC_PATHS.cpuinfo): Promise<boolean> {
  return parseRunningOnVmm(await readProbe(cpuinfoPath), cpuinfoPath);
}

export interface ProcStat {
  pid: number;
  comm: string;
  /** R, S, D, Z, T... */
  state: string;
  ppid: number;
  /** Clock ticks after boot; with the pid it identifies a process across pid reuse. */
  startTime: number;
}

/** Parses /proc/<pid>/stat. The command name may hold spaces and parentheses. */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open === -1 || close === -1 || close < open) throw new Error("malformed stat line");
  const pid = Number(text.slice(0, open).trim());
  const comm = text.slice(open + 1, close);
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const state = rest[0];
  const ppid = Number(rest[1]);
  const startTime = Number(rest[19]);
  if (!state || !Number.isFinite(pid) || !Number.isFinite(ppid) || !Number.isFinite(startTime)) {
    throw new Error("malformed stat line");
  }
  return { pid, comm, state, ppid, startTime };
}

/** The stat of a live (non-zombie) process, or undefined when it is gone. */
export async function readProcStat(
  pid: number,
  procRoot = DEFAULT_PROC_PATHS.procRoot,
): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`${procRoot}/${pid}/stat`, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT" || errnoCode(err) === "ESRCH") return undefined;
    throw new HostError("ERR_HOST_PROBE", `cannot read ${procRoot}/${pid}/stat: ${messageOf(err)}`, {
      cause: err,
    });
  }
  try {
    return parseProcStat(text);
  } catch {
    return undefined;
  }
}

/**
 * True when `pid` is alive and, if `startTime` is given, is still the same process (a pid
 * can be reused after the original exits). Zombies count as dead.
 */
export async function isProcessAlive(pid: number, startTime?: number, procRoot?: string): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const st = await readProcStat(pid, procRoot);
  if (!st || st.state === "Z" || st.state === "X") return false;
  return startTime === undefined || st.startTime === startTime;
}

/**
 * The host's TSC frequency in kHz, from the first "cpu MHz" line of cpuinfo, when the TSC
 * ticks at a constant rate (flag constant_tsc). Under TCG a guest reads the host TSC, and a
 * guest kernel that cannot calibrate it (no HPET or PM timer on microvm, PIT calibration
 * racing a busy host) hangs in its delay loop: passing this as tsc_early_khz avoids that.
 */
export function parseTscKhz(cpuinfo: string): number | undefined {
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes("constant_tsc")) return undefined;
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1];
  if (!mhz) return undefined;
  const khz = Math.round(Number(mhz) * 1000);
  return Number.isFinite(khz) && khz > 0 ? khz : undefined;
}

export async function hostTscKhz(cpuinfoPath = DEFAULT_PROC_PATHS.cpuinfo): Promise<number | undefined> {
  try {
    return parseTscKhz(await readFile(cpuinfoPath, "utf8"));
  } catch {
    return undefined;
  }
}
