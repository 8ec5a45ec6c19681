import { readFile } from "node:fs/promises";
import path from "node:path";
import { HostError, messageOf } from "../errors.js";
import { runChecked } from "./process.js";

/**
 * Mounts through util-linux's `mount` and `umount` (Node has no mount(2)); never through a
 * shell. Listing reads /proc/self/mountinfo directly.
 */

export interface MountEntry {
  id: number;
  parentId: number;
  /** Where it is mounted (octal escapes such as \040 decoded). */
  target: string;
  /** The root of the mount within its filesystem (a bind mount of a file shows the file). */
  root: string;
  options: string[];
  /** "shared:N", "master:N", ... (empty: private). */
  propagation: string[];
  fsType: string;
  source: string;
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/<pid>/mountinfo text. */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const dash = line.indexOf(" - ");
    if (dash === -1) continue;
    const left = line.slice(0, dash).split(" ");
    const right = line.slice(dash + 3).split(" ");
    if (left.length < 6 || right.length < 2) continue;
    out.push({
      id: Number(left[0]),
      parentId: Number(left[1]),
      root: unescapeMountPath(left[3] ?? ""),
      target: unescapeMountPath(left[4] ?? ""),
      options: (left[5] ?? "").split(","),
      propagation: left.slice(6),
      fsType: right[0] ?? "",
      source: unescapeMountPath(right[1] ?? ""),
    });
  }
  return out;
}

export async function readMounts(mountInfo = "/proc/self/mountinfo"): Promise<MountEntry[]> {
  try {
    return parseMountInfo(await readFile(mountInfo, "utf8"));
  } catch (err) {
    throw new HostError("ERR_HOST_PROBE", `cannot read ${mountInfo}: ${messageOf(err)}`, { cause: err });
  }
}

function isUnder(target: string, dir: string): boolean {
  const rel = path.relative(dir, target);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** Mount points at or below `dir`, deepest first (the order to unmount them in). */
export async function mountsUnder(dir: string, mountInfo?: string): Promise<MountEntry[]> {
  const abs = path.resolve(dir);
  const all = await readMounts(mountInfo);
  return all
    .filter((m) => isUnder(m.target, abs))
    .sort((a, b) => b.target.split("/").length - a.target.split("/").length || b.id - a.id);
}

/** The mount that holds `p` (the longest mount point that is a prefix of it). */
export async function mountOf(p: string, mountInfo?: string): Promise<MountEntry | undefined> {
  const abs = path.resolve(p);
  let best: MountEntry | undefined;
  for (const m of await readMounts(mountInfo)) {
    if (isUnder(abs, m.target) && (!best || m.target.length >= best.target.length)) best = m;
  }
  return best;
}

/**
 * Bind-mounts `source` on `target` (which must exist: a file for a file, a directory for a
 * directory) and makes it a slave, so mounts made later below the source propagate in but
 * nothing propagates back out. With `readOnly` the bind is remounted read-only: a plain
 * "bind,ro" is ignored by older kernels and util-linux, the remount is not.
 */
export async function bindMount(
  source: string,
  target: string,
  options: { readOnly?: boolean } = {},
): Promise<void> {
  await runChecked("mount", ["--bind", "--", source, target], { timeoutMs: 30_000 });
  try {
    await runChecked("mount", ["--make-slave", "--", target], { timeoutMs: 30_000 });
    if (options.readOnly) await remountReadOnly(target);
  } catch (err) {
    await unmount(target, { lazy: true }).catch(() => undefined);
    throw err;
  }
}

export async function remountReadOnly(target: string): Promise<void> {
  await runChecked("mount", ["-o", "remount,bind,ro", "--", target], { timeoutMs: 30_000 });
}

/** Unmounts `target`; `lazy` detaches it even while busy (MNT_DETACH, as the seed does). */
export async function unmount(target: string, options: { lazy?: boolean } = {}): Promise<void> {
  await runChecked("umount", [...(options.lazy ? ["--lazy"] : []), "--", target], { timeoutMs: 30_000 });
}

/** Unmounts everything at or below `dir`, deepest first; returns what was unmounted. */
export async function unmountAllUnder(dir: string, options: { lazy?: boolean } = {}): Promise<string[]> {
  const done: string[] = [];
  for (const m of await mountsUnder(dir)) {
    await unmount(m.target, options);
    done.push(m.target);
  }
  return done;
}
