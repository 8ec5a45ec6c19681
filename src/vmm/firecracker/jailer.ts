import path from "node:path";
import { ConfigError } from "../../errors.js";
import { runCommand } from "../../host/process.js";
import { atLeast, parseVersion, type FcVersion } from "./version.js";

/**
 * The jailer's command line and the layout it builds (firecracker-jailer.md). Pure functions
 * plus `binaryVersion`; the jail's files are managed by jail.ts.
 */

export interface JailerOptions {
  /** VM id: letters, digits and '-', 1–64 characters (the jailer's rule). */
  id: string;
  /** The Firecracker binary; its file name becomes a path component of the jail. */
  execFile: string;
  uid: number;
  gid: number;
  /** Default /srv/jailer (the jailer's own default). */
  chrootBaseDir?: string;
  /** A network namespace handle, e.g. /var/run/netns/NAME. */
  netns?: string;
  daemonize?: boolean;
  newPidNs?: boolean;
  /** `<file>=<value>` cgroup settings, e.g. "cpuset.cpus=0". */
  cgroups?: string[];
  cgroupVersion?: 1 | 2;
  parentCgroup?: string;
  resourceLimits?: { fsize?: number; noFile?: number };
  /** Firecracker's own flags, passed after `--` (never `--id`: the jailer adds it). */
  firecrackerArgs?: string[];
}

export const DEFAULT_CHROOT_BASE = "/srv/jailer";

const JAILER_ID_RE = /^[A-Za-z0-9-]{1,64}$/;

function invalid(message: string, details: Record<string, unknown> = {}): ConfigError {
  return new ConfigError("ERR_INVALID_CONFIG", message, { details });
}

/** Refuses an id the jailer would refuse (it is stricter than cocoon's ids: no '_' or '.'). */
export function checkJailerId(id: string): string {
  if (!JAILER_ID_RE.test(id)) {
    throw invalid(
      `"${id}" cannot be a jailer id: use 1-64 letters, digits or '-' (the jailer refuses '_', '.' and others)`,
      { id },
    );
  }
  return id;
}

/**
 * The jailer argv for the version the jailer binary reports. The seed also passed `--node` and
 * `--seccomp-level`; jailer v1.0 removed both (NUMA placement is `--cgroup cpuset.mems=…`,
 * seccomp is Firecracker's own default), so they are never sent.
 */
export function buildJailerArgs(o: JailerOptions, jailerVersion: FcVersion): string[] {
  checkJailerId(o.id);
  const execName = path.basename(o.execFile);
  if (
    atLeast(jailerVersion, "1.2.0") &&
    !atLeast(jailerVersion, "1.13.0") &&
    !execName.includes("firecracker")
  ) {
    throw invalid(
      `jailer ${jailerVersion.raw} needs an exec file whose name contains "firecracker" (got ${execName})`,
      { execFile: o.execFile },
    );
  }
  for (const [name, v] of [
    ["uid", o.uid],
    ["gid", o.gid],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
      throw invalid(`jailer ${name} must be a 32-bit unsigned integer, got ${String(v)}`);
  }
  if (
    o.parentCgroup !== undefined &&
    (path.isAbsolute(o.parentCgroup) || o.parentCgroup.split("/").some((c) => c === "." || c === ".."))
  ) {
    throw invalid(
      `the jailer's parent cgroup must be a relative path without "." or "..": ${o.parentCgroup}`,
    );
  }
  const fcArgs = o.firecrackerArgs ?? [];
  if (fcArgs.includes("--id"))
    throw invalid("do not pass --id to Firecracker under the jailer: the jailer passes its own --id");
  const args = ["--id", o.id, "--exec-file", o.execFile, "--uid", String(o.uid), "--gid", String(o.gid)];
  if (o.chrootBaseDir !== undefined) args.push("--chroot-base-dir", o.chrootBaseDir);
  if (o.netns !== undefined) args.push("--netns", o.netns);
  if (o.daemonize) args.push("--daemonize");
  if (o.newPidNs) args.push("--new-pid-ns");
  for (const c of o.cgroups ?? []) {
    if (!/^[a-z_]+\.[a-z_.]+=.+$/.test(c))
      throw invalid(`a jailer cgroup setting must look like <controller>.<file>=<value>: "${c}"`);
    args.push("--cgroup", c);
  }
  if (o.cgroupVersion !== undefined) args.push("--cgroup-version", String(o.cgroupVersion));
  if (o.parentCgroup !== undefined) args.push("--parent-cgroup", o.parentCgroup);
  const rl = o.resourceLimits ?? {};
  if (rl.fsize !== undefined) args.push("--resource-limit", `fsize=${rl.fsize}`);
  if (rl.noFile !== undefined) args.push("--resource-limit", `no-file=${rl.noFile}`);
  if (fcArgs.length) args.push("--", ...fcArgs);
  return args;
}

/** Where the jailer puts things, on the host (firecracker-jailer.md §2). */
export interface JailLayout {
  /** `<base>/<exec_file_name>/<id>`: remove it to re-jail the same id. */
  jailDir: string;
  /** `<jailDir>/root`: Firecracker's `/`. */
  root: string;
  /** `<root>/<exec_file_name>.pid`. */
  pidFile: string;
  execName: string;
}

export function jailLayout(chrootBase: string, execFile: string, id: string): JailLayout {
  const execName = path.basename(execFile);
  const jailDir = path.join(chrootBase, execName, id);
  const root = path.join(jailDir, "root");
  return { jailDir, root, pidFile: path.join(root, `${execName}.pid`), execName };
}

/** A path as Firecracker sees it (inside the jail) → the same file on the host. */
export function hostPathOf(root: string, jailedPath: string): string {
  return path.join(root, path.resolve("/", jailedPath));
}

/** Whether this jailer writes `<exec>.pid`: always since 1.7, only with --new-pid-ns before. */
export function writesPidFile(jailerVersion: FcVersion, o: Pick<JailerOptions, "newPidNs">): boolean {
  return o.newPidNs === true || atLeast(jailerVersion, "1.7.0");
}

/**
 * Whether the process cocoon spawns becomes Firecracker (the jailer execs in place). Not with
 * --new-pid-ns (Firecracker is a cloned child), nor with --daemonize since 1.7 (double fork).
 */
export function spawnedPidIsFirecracker(
  jailerVersion: FcVersion,
  o: Pick<JailerOptions, "newPidNs" | "daemonize">,
): boolean {
  if (o.newPidNs) return false;
  return !(o.daemonize && atLeast(jailerVersion, "1.7.0"));
}

/** Asks a jailer or Firecracker binary its version (`--version`). */
export async function binaryVersion(file: string, what: "Firecracker" | "Jailer"): Promise<FcVersion> {
  const res = await runCommand(file, ["--version"], { timeoutMs: 10_000 });
  if (res.code !== 0) {
    throw new ConfigError(
      "ERR_ASSET_INVALID",
      `${file} --version failed (${res.code ?? res.signal}): ${res.stderr.trim().slice(0, 300)}`,
      {
        details: { file },
      },
    );
  }
  const m = new RegExp(`${what}\\s+v?(\\d+\\.\\d+\\.\\d+\\S*)`, "i").exec(res.stdout);
  return parseVersion(m?.[1] ?? res.stdout, what);
}
