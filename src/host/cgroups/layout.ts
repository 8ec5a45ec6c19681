import { access, readFile } from "node:fs/promises";
import path from "node:path";
import { HostError, messageOf } from "../../errors.js";

/** The controllers cocoon limits or reads for a sandbox. */
export const SANDBOX_CONTROLLERS = ["cpu", "cpuacct", "cpuset", "memory", "pids", "blkio"] as const;
export type SandboxController = (typeof SANDBOX_CONTROLLERS)[number];

/** One mounted v1 hierarchy (it may carry several controllers, e.g. `cpu,cpuacct`). */
export interface V1Hierarchy {
  mountPoint: string;
  controllers: string[];
  /** The calling process's cgroup in this hierarchy, as a path under the mount point. */
  ownDir: string;
}

/**
 * How this host's cgroups are arranged. `v2`: one unified hierarchy holding the controllers;
 * `v1`: per-controller hierarchies (hybrid hosts also mount an empty unified one, which
 * cocoon leaves alone since no controller lives there).
 */
export type CgroupLayout =
  | { version: 2; mountPoint: string; ownDir: string; controllers: string[] }
  | { version: 1; hierarchies: V1Hierarchy[]; hybrid: boolean };

interface MountEntry {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** Parses /proc/self/mountinfo lines for cgroup file systems. */
export function parseCgroupMounts(mountinfo: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of mountinfo.split("\n")) {
    const dash = line.indexOf(" - ");
    if (dash < 0) continue;
    const left = line.slice(0, dash).split(" ");
    const right = line.slice(dash + 3).split(" ");
    const fsType = right[0] ?? "";
    if (fsType !== "cgroup" && fsType !== "cgroup2") continue;
    out.push({
      root: left[3] ?? "/",
      mountPoint: (left[4] ?? "").replace(/\\040/g, " "),
      fsType,
      superOptions: (right[2] ?? "").split(","),
    });
  }
  return out;
}

/** Parses /proc/<pid>/cgroup: hierarchy controllers ("" for v2) → cgroup path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (m) out.set(m[2]!, m[3]!);
  }
  return out;
}

/** The directory of `cgroupPath` under a mount whose root is `mountRoot`. */
function dirUnder(mountPoint: string, mountRoot: string, cgroupPath: string): string {
  const rel =
    mountRoot !== "/" && cgroupPath.startsWith(mountRoot) ? cgroupPath.slice(mountRoot.length) : cgroupPath;
  return path.join(mountPoint, rel).replace(/(.)\/+$/, "$1");
}

/** Works the layout out from the two /proc files (pure: tests feed it fixtures). */
export function layoutFrom(
  mountinfo: string,
  procCgroup: string,
  v2Controllers: string[],
): CgroupLayout | undefined {
  const mounts = parseCgroupMounts(mountinfo);
  const own = parseProcCgroup(procCgroup);
  const v1: V1Hierarchy[] = [];
  for (const m of mounts.filter((x) => x.fsType === "cgroup")) {
    const controllers = m.superOptions.filter((o) => (SANDBOX_CONTROLLERS as readonly string[]).includes(o));
    if (!controllers.length) continue;
    const key = [...own.keys()].find((k) => k.split(",").some((c) => controllers.includes(c)));
    v1.push({
      mountPoint: m.mountPoint,
      controllers,
      ownDir: dirUnder(m.mountPoint, m.root, own.get(key ?? "") ?? "/"),
    });
  }
  const unified = mounts.find((x) => x.fsType === "cgroup2");
  if (v1.length) return { version: 1, hierarchies: v1, hybrid: unified !== undefined };
  if (!unified) return undefined;
  return {
    version: 2,
    mountPoint: unified.mountPoint,
    ownDir: dirUnder(unified.mountPoint, unified.root, own.get("") ?? "/"),
    controllers: v2Controllers,
  };
}

/** Reads this host's layout; undefined when no cgroup file system is mounted. */
export async function detectCgroupLayout(): Promise<CgroupLayout | undefined> {
  try {
    const mountinfo = await readFile("/proc/self/mountinfo", "utf8");
    const procCgroup = await readFile("/proc/self/cgroup", "utf8");
    const unified = parseCgroupMounts(mountinfo).find((m) => m.fsType === "cgroup2");
    const controllers = unified
      ? (await readFile(path.join(unified.mountPoint, "cgroup.controllers"), "utf8").catch(() => ""))
          .trim()
          .split(/\s+/)
          .filter(Boolean)
      : [];
    return layoutFrom(mountinfo, procCgroup, controllers);
  } catch (err) {
    throw new HostError("ERR_HOST_PROBE", `cannot read the cgroup layout: ${messageOf(err)}`);
  }
}

/** Which of cocoon's controllers a sandbox can use on this layout, and why not the others. */
export interface ControllerReport {
  version: 1 | 2 | undefined;
  hybrid: boolean;
  usable: SandboxController[];
  missing: SandboxController[];
  /** Set when cgroups cannot be written at all (not root, read-only mount). */
  problem?: string;
}

/** v2 names the block I/O controller `io` and folds cpuacct into `cpu`. */
function v2Has(controllers: string[], c: SandboxController): boolean {
  if (c === "blkio") return controllers.includes("io");
  if (c === "cpuacct") return controllers.includes("cpu");
  return controllers.includes(c);
}

export async function controllerReport(layout?: CgroupLayout): Promise<ControllerReport> {
  const l = layout ?? (await detectCgroupLayout());
  if (!l)
    return {
      version: undefined,
      hybrid: false,
      usable: [],
      missing: [...SANDBOX_CONTROLLERS],
      problem: "no cgroup file system is mounted",
    };
  const has = (c: SandboxController): boolean =>
    l.version === 2 ? v2Has(l.controllers, c) : l.hierarchies.some((h) => h.controllers.includes(c));
  const usable = SANDBOX_CONTROLLERS.filter(has);
  const missing = SANDBOX_CONTROLLERS.filter((c) => !has(c));
  const probeDir = l.version === 2 ? l.ownDir : l.hierarchies[0]!.ownDir;
  // W_OK on a cgroup directory: whether mkdir (a child cgroup) is allowed here.
  const writable = await access(probeDir, 2).then(
    () => true,
    () => false,
  );
  return {
    version: l.version,
    hybrid: l.version === 1 && l.hybrid,
    usable,
    missing,
    ...(writable
      ? {}
      : { problem: `${probeDir} is not writable (cocoon must run as root to manage cgroups)` }),
  };
}
