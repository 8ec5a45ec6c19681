import { readFile, rmdir } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { HostError, errnoCode, messageOf } from "../../errors.js";
import { parseCgroupMounts } from "../../host/cgroups/layout.js";

/**
 * The cgroups the jailer makes for `--cgroup <controller>.<file>=<value>`: with v1 one
 * directory per controller, `<mount of the controller>/<parent>/<id>`; with v2 one,
 * `<unified mount>/<parent>/<id>`. The jailer never removes them, so cocoon does once
 * Firecracker is gone. `<parent>` is `--parent-cgroup`, else the executable's name.
 */
export interface JailerCgroupSpec {
  settings: readonly string[];
  version: 1 | 2;
  parent: string;
  id: string;
}

function controllersOf(settings: readonly string[]): string[] {
  return [...new Set(settings.map((s) => s.slice(0, s.indexOf("."))))];
}

async function mountInfo(): Promise<string> {
  try {
    return await readFile("/proc/self/mountinfo", "utf8");
  } catch (err) {
    throw new HostError("ERR_HOST_PROBE", `cannot read /proc/self/mountinfo: ${messageOf(err)}`);
  }
}

/** Each controller's mount point ("" when this host has no such hierarchy). */
async function mountPoints(spec: JailerCgroupSpec): Promise<Map<string, string>> {
  const mounts = parseCgroupMounts(await mountInfo());
  const out = new Map<string, string>();
  if (spec.version === 1) {
    for (const c of controllersOf(spec.settings))
      out.set(c, mounts.find((m) => m.fsType === "cgroup" && m.superOptions.includes(c))?.mountPoint ?? "");
    return out;
  }
  const unified = mounts.find((m) => m.fsType === "cgroup2")?.mountPoint;
  const offered = unified
    ? (await readFile(path.join(unified, "cgroup.controllers"), "utf8").catch(() => "")).split(/\s+/)
    : [];
  for (const c of controllersOf(spec.settings)) out.set(c, unified && offered.includes(c) ? unified : "");
  return out;
}

/**
 * Refuses, before launching, a controller this host does not offer: the real jailer aborts on
 * it (`Jailer error: Controller cpu is unavailable`) after Firecracker's launch was committed to.
 */
export async function checkJailerCgroups(spec: JailerCgroupSpec): Promise<void> {
  if (spec.settings.length === 0) return;
  const missing = [...(await mountPoints(spec))].filter(([, m]) => m === "").map(([c]) => c);
  if (missing.length === 0) return;
  throw new HostError(
    "ERR_CGROUP",
    `the jailer cannot use the cgroup v${spec.version} controller${missing.length > 1 ? "s" : ""} ${missing.join(", ")}: this host does not offer ${missing.length > 1 ? "them" : "it"}${spec.version === 2 ? " in the unified hierarchy (cgroup.controllers)" : " (no such hierarchy is mounted)"}`,
    {
      details: { missing, cgroupVersion: spec.version },
      hint:
        spec.version === 2
          ? "on a cgroup v1 or hybrid host use jailer cgroupVersion 1, or enable the controller in the unified hierarchy"
          : "mount the controller's hierarchy, or leave the setting out",
    },
  );
}

/** The directories the jailer made (or would make) for `spec` on this host. */
export async function jailerCgroupDirs(spec: JailerCgroupSpec): Promise<string[]> {
  if (spec.settings.length === 0) return [];
  const points = [...new Set((await mountPoints(spec)).values())].filter((m) => m !== "");
  return points.map((m) => path.join(m, spec.parent, spec.id));
}

/**
 * Removes the jailer's cgroups once Firecracker has exited, then the parent directories it
 * made when nothing else is left in them (another VM's cgroup keeps them).
 */
export async function removeJailerCgroups(spec: JailerCgroupSpec): Promise<void> {
  for (const dir of await jailerCgroupDirs(spec)) {
    await removeCgroupDir(dir);
    let parent = path.dirname(dir);
    for (let depth = spec.parent.split("/").length; depth > 0; depth--) {
      try {
        await rmdir(parent);
      } catch (err) {
        const code = errnoCode(err);
        if (code !== "ENOENT") break; // ENOTEMPTY / EBUSY: still in use
      }
      parent = path.dirname(parent);
    }
  }
}

/** rmdir with a short retry: a cgroup stays busy until its last task has been reaped. */
async function removeCgroupDir(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const code = errnoCode(err);
      if (code === "ENOENT") return;
      if (code !== "EBUSY" || attempt >= 50)
        throw new HostError("ERR_CGROUP", `cannot remove the jailer's cgroup ${dir}: ${messageOf(err)}`, {
          cause: err,
        });
      await sleep(20);
    }
  }
}
