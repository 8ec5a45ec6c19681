/**
 * The fake jailer. A Node program cannot exec(2) itself into another program, and the real
 * jailer keeps its pid across the exec into Firecracker (firecracker-jailer.md §4), so the fake
 * is two parts: a /bin/sh launcher (written by build.ts) runs this planner, which parses the
 * flags of the jailer version it claims, builds the real jail, and prints a small shell script
 * that the launcher then `exec`s. That script ends in a chain of util-linux programs that each
 * exec in place (setsid, nsenter, prlimit, setpriv, env) and finally the Firecracker copy inside
 * the jail, so pids behave as with the real jailer:
 * - no flag: same pid as the spawned jailer; the pid file only since 1.7;
 * - --daemonize: 1.0 calls setsid and keeps the pid (refused for a process-group leader);
 *   1.7+ double-forks: the spawned process exits 0 and Firecracker has another pid;
 * - --new-pid-ns: `unshare --pid --fork`; Firecracker is pid 1 of a new namespace, the pid file
 *   holds its host pid, and the spawned process exits 0.
 * What it cannot do: chroot and pivot_root (the fake Firecracker gets the jail root in
 * FAKE_FC_JAIL_ROOT and resolves every path in it), mount namespaces, and
 * device nodes when mknod is not permitted (plain files then). Environment: like the real one
 * it clears the environment, except FAKE_FC_* variables, which it passes on. Cgroups are real
 * (see makeCgroups), unless FAKE_JAILER_CGROUP_ROOT redirects them.
 *
 * Version: FAKE_JAILER_VERSION, else FAKE_FC_VERSION, else the version baked in at build time,
 * else 1.16.1.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { parseCgroupMounts } from "../../../src/host/cgroups/layout.js";
import { compareVersions, tryParseVersion } from "../../../src/vmm/firecracker/version.js";

/** Set by build.ts (esbuild define) in per-version builds; absent when run from source. */
declare const __FAKE_BAKED_VERSION__: string | undefined;
function bakedVersion(): string | undefined {
  return typeof __FAKE_BAKED_VERSION__ === "string" ? __FAKE_BAKED_VERSION__ : undefined;
}

class JailerFailure extends Error {
  constructor(
    message: string,
    readonly variant: string,
    readonly parse = false,
  ) {
    super(message);
  }
}

interface JailerArgs {
  id: string;
  execFile: string;
  uid: number;
  gid: number;
  chrootBaseDir: string;
  netns?: string;
  daemonize: boolean;
  newPidNs: boolean;
  cgroups: string[];
  resourceLimits: string[];
  cgroupVersion: 1 | 2;
  parentCgroup?: string;
  extra: string[];
}

const VALUE_FLAGS = new Set([
  "id",
  "exec-file",
  "uid",
  "gid",
  "chroot-base-dir",
  "netns",
  "cgroup",
  "resource-limit",
  "cgroup-version",
  "parent-cgroup",
]);
const BOOL_FLAGS = new Set(["daemonize", "new-pid-ns", "version", "help"]);
const MULTI = new Set(["cgroup", "resource-limit"]);

function parseArgs(argv: string[], version: string): JailerArgs | "version" | "help" {
  const dashdash = argv.indexOf("--");
  const own = dashdash === -1 ? argv : argv.slice(0, dashdash);
  const extra = dashdash === -1 ? [] : argv.slice(dashdash + 1);
  const values = new Map<string, string[]>();
  for (let i = 0; i < own.length; i++) {
    const arg = own[i]!;
    if (arg === "-h" && compareVersions(version, "1.9.0") >= 0) return "help";
    if (!arg.startsWith("--"))
      throw new JailerFailure(
        `Found argument '${arg}' which wasn't expected, or isn't valid in this context.`,
        `UnexpectedArgument(${JSON.stringify(arg)})`,
        true,
      );
    const name = arg.slice(2);
    if (BOOL_FLAGS.has(name)) {
      values.set(name, ["true"]);
      continue;
    }
    if (!VALUE_FLAGS.has(name))
      throw new JailerFailure(
        `Found argument '${name}' which wasn't expected, or isn't valid in this context.`,
        `UnexpectedArgument(${JSON.stringify(name)})`,
        true,
      );
    const value = own[i + 1];
    if (value === undefined)
      throw new JailerFailure(
        `The argument '${name}' requires a value, but none was supplied`,
        `MissingValue(${JSON.stringify(name)})`,
        true,
      );
    if (values.has(name) && !MULTI.has(name))
      throw new JailerFailure(
        `The argument '${name}' was provided more than once.`,
        `DuplicateArgument(${JSON.stringify(name)})`,
        true,
      );
    values.set(name, [...(values.get(name) ?? []), value]);
    i++;
  }
  if (values.has("version")) return "version";
  if (values.has("help")) return "help";
  const one = (n: string) => values.get(n)?.[0];
  for (const required of ["id", "exec-file", "uid", "gid"]) {
    if (!values.has(required))
      throw new JailerFailure(
        `Argument '${required}' required, but not found.`,
        `MissingArgument(${JSON.stringify(required)})`,
        true,
      );
  }
  const num = (n: string): number => {
    const v = one(n)!;
    if (!/^\d+$/.test(v) || Number(v) > 0xffffffff)
      throw new JailerFailure(`Invalid ${n}: ${v}`, n === "uid" ? "Uid" : "Gid");
    return Number(v);
  };
  const cgroupVersion = one("cgroup-version") ?? "1";
  if (cgroupVersion !== "1" && cgroupVersion !== "2")
    throw new JailerFailure(`Invalid cgroup version: ${cgroupVersion}`, "CgroupInvalidVersion");
  return {
    id: one("id")!,
    execFile: one("exec-file")!,
    uid: num("uid"),
    gid: num("gid"),
    chrootBaseDir: one("chroot-base-dir") ?? "/srv/jailer",
    ...(one("netns") ? { netns: one("netns")! } : {}),
    daemonize: values.has("daemonize"),
    newPidNs: values.has("new-pid-ns"),
    cgroups: values.get("cgroup") ?? [],
    resourceLimits: values.get("resource-limit") ?? [],
    cgroupVersion: cgroupVersion === "2" ? 2 : 1,
    ...(one("parent-cgroup") ? { parentCgroup: one("parent-cgroup")! } : {}),
    extra,
  };
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function canonical(p: string, kind: "file" | "directory"): string {
  let real: string;
  try {
    real = realpathSync(p);
  } catch (err) {
    throw new JailerFailure(`Failed to canonicalize path ${p}: ${osError(err)}`, "Canonicalize");
  }
  const st = statSync(real);
  if (kind === "file" && !st.isFile()) throw new JailerFailure(`${real} is not a file`, "NotAFile");
  if (kind === "directory" && !st.isDirectory())
    throw new JailerFailure(`${real} is not a directory`, "NotADirectory");
  return real;
}

function osError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const table: Record<string, [string, number]> = {
    ENOENT: ["No such file or directory", 2],
    EEXIST: ["File exists", 17],
    EPERM: ["Operation not permitted", 1],
    EACCES: ["Permission denied", 13],
  };
  const t = e.code ? table[e.code] : undefined;
  return t ? `${t[0]} (os error ${t[1]})` : e.message;
}

function mknod(
  target: string,
  major: number,
  minor: number,
  uid: number,
  gid: number,
  fatal: boolean,
  label: string,
): string | undefined {
  const r = spawnSync("mknod", ["-m", "600", target, "c", String(major), String(minor)], {
    encoding: "utf8",
  });
  if (r.status === 0) {
    chownSync(target, uid, gid);
    return undefined;
  }
  if (existsSync(target) || /File exists/.test(r.stderr)) {
    const msg = `Failed to create ${label} via mknod inside the jail: File exists (os error 17)`;
    if (fatal) throw new JailerFailure(msg, "MknodDev");
    return msg;
  }
  // Not permitted (no CAP_MKNOD): stand in with a plain file so the layout is complete.
  writeFileSync(target, "", { mode: 0o600 });
  chownSync(target, uid, gid);
  return undefined;
}

function misc(name: string): number | undefined {
  try {
    for (const line of readFileSync("/proc/misc", "utf8").split("\n")) {
      const [minor, dev] = line.trim().split(/\s+/);
      if (dev === name) return Number(minor);
    }
  } catch {
    // no /proc/misc
  }
  return undefined;
}

/** What the real jailer says is wrong with an id (1.0 starts the sentence in lower case). */
function instanceIdProblem(id: string, version: string): string {
  const length = [...id].length;
  if (length < 1 || length > 64) return `Invalid len (${length});  the length must be between 1 and 64`;
  const chars = [...id];
  const at = chars.findIndex((c) => !/^[\p{L}\p{N}-]$/u.test(c));
  const what = `char (${chars[at]}) at position ${at}`;
  return compareVersions(version, "1.5.0") < 0 ? `invalid ${what}` : `Invalid ${what}`;
}

/**
 * The jailer's cgroups, made as the real one makes them (and, like it, never removed): v1 one
 * directory per controller, `<its mount>/<parent>/<id>`, a new cpuset level inheriting
 * cpuset.cpus/mems from its parent; v2 one directory in the unified hierarchy. A controller the
 * host does not offer aborts the jailer. Returns the directories to join. With
 * FAKE_JAILER_CGROUP_ROOT the values are written below that directory instead, and nothing
 * is joined (for runs that must not touch the host's cgroups).
 */
function makeCgroups(
  cgroups: { file: string; value: string }[],
  version: 1 | 2,
  parent: string,
  id: string,
): string[] {
  if (cgroups.length === 0) return [];
  const fakeRoot = process.env.FAKE_JAILER_CGROUP_ROOT;
  if (fakeRoot) {
    const dir = path.join(fakeRoot, parent, id);
    mkdirSync(dir, { recursive: true });
    for (const c of cgroups) writeFileSync(path.join(dir, c.file), `${c.value}\n`);
    return [];
  }
  const mounts = parseCgroupMounts(readFileSync("/proc/self/mountinfo", "utf8"));
  const unified = mounts.find((m) => m.fsType === "cgroup2")?.mountPoint;
  const offered = unified
    ? readFileSync(path.join(unified, "cgroup.controllers"), "utf8").trim().split(/\s+/)
    : [];
  const dirs = new Set<string>();
  for (const c of cgroups) {
    const controller = c.file.slice(0, c.file.indexOf("."));
    const mountPoint =
      version === 1
        ? mounts.find((m) => m.fsType === "cgroup" && m.superOptions.includes(controller))?.mountPoint
        : unified && offered.includes(controller)
          ? unified
          : undefined;
    if (!mountPoint)
      throw new JailerFailure(`Controller ${controller} is unavailable`, "CgroupControllerUnavailable");
    let dir = mountPoint;
    for (const level of [...parent.split("/"), id]) {
      dir = path.join(dir, level);
      if (existsSync(dir)) continue;
      mkdirSync(dir);
      if (version === 1 && controller === "cpuset")
        for (const f of ["cpuset.cpus", "cpuset.mems"])
          writeFileSync(
            path.join(dir, f),
            readFileSync(path.join(path.dirname(dir), f), "utf8").trim() || "\n",
          );
    }
    writeFileSync(path.join(dir, c.file), c.value);
    dirs.add(dir);
  }
  return [...dirs];
}

function plan(a: JailerArgs, version: string, selfPid: number): string {
  if (!/^[\p{L}\p{N}-]{1,64}$/u.test(a.id))
    throw new JailerFailure(`Invalid instance ID: ${instanceIdProblem(a.id, version)}`, "InvalidInstanceId");
  const execFile = canonical(a.execFile, "file");
  const execName = path.basename(execFile);
  if (
    compareVersions(version, "1.2.0") >= 0 &&
    compareVersions(version, "1.13.0") < 0 &&
    !execName.includes("firecracker")
  ) {
    throw new JailerFailure(
      `Invalid filename. The filename of \`--exec-file\` option must contain "firecracker": ${execName}`,
      "ExecFileName",
    );
  }
  const base = canonical(a.chrootBaseDir, "directory");
  if (
    a.parentCgroup !== undefined &&
    (path.isAbsolute(a.parentCgroup) || a.parentCgroup.split("/").some((c) => c === "." || c === ".."))
  ) {
    throw new JailerFailure(`Invalid parent cgroup: ${a.parentCgroup}`, "CgroupInvalidParentPath");
  }
  const cgroups = a.cgroups.map((c) => {
    const m = /^([a-z_]+)\.([a-z_.]+)=(.+)$/.exec(c);
    if (!m || m[2]!.split(".").some((x) => x === ""))
      throw new JailerFailure(`Invalid format for cgroups: ${c}`, "CgroupFormat");
    return { file: `${m[1]}.${m[2]}`, value: m[3]! };
  });
  const limits: string[] = [];
  let noFile = "2048";
  for (const r of a.resourceLimits) {
    const m = /^([a-z-]+)=(.*)$/.exec(r);
    if (!m || (m[1] !== "fsize" && m[1] !== "no-file"))
      throw new JailerFailure(`Invalid resource argument: ${m?.[1] ?? r}`, "ResLimitArgument");
    if (!/^\d+$/.test(m[2]!))
      throw new JailerFailure(`Invalid limit value for resource: ${m[1]}: ${m[2]}`, "ResLimitValue");
    if (m[1] === "fsize") limits.push(`--fsize=${m[2]}:${m[2]}`);
    else noFile = m[2]!;
  }
  limits.push(`--nofile=${noFile}:${noFile}`);

  // Cgroups come first: a controller that is not there aborts before any jail is built.
  const cgroupDirs = makeCgroups(cgroups, a.cgroupVersion, a.parentCgroup ?? execName, a.id);
  const jailDir = path.join(base, execName, a.id);
  const root = path.join(jailDir, "root");
  mkdirSync(root, { recursive: true });
  // The binary is copied, never linked; 1.15+ refuses a destination with more than one link.
  const dest = path.join(root, execName);
  if (compareVersions(version, "1.15.0") >= 0 && existsSync(dest) && lstatSync(dest).nlink > 1) {
    throw new JailerFailure(`Detected hard link at: ${dest}`, "HardLink");
  }
  copyFileSync(execFile, dest);
  chmodSync(dest, statSync(execFile).mode & 0o7777);
  if (compareVersions(version, "1.15.0") >= 0) chownSync(dest, a.uid, a.gid);

  if (a.netns !== undefined) {
    try {
      closeSync(openSync(a.netns, constants.O_RDONLY));
    } catch (err) {
      throw new JailerFailure(`Failed to join network namespace: ${osError(err)}`, "SetNetNs");
    }
  }
  for (const d of [root, path.join(root, "dev"), path.join(root, "dev/net"), path.join(root, "run")]) {
    mkdirSync(d, { recursive: true, mode: 0o700 });
    chmodSync(d, 0o700);
    chownSync(d, a.uid, a.gid);
  }
  mknod(path.join(root, "dev/net/tun"), 10, 200, a.uid, a.gid, true, "/dev/net/tun");
  mknod(path.join(root, "dev/kvm"), 10, 232, a.uid, a.gid, true, "/dev/kvm");
  const warn = mknod(path.join(root, "dev/urandom"), 1, 9, a.uid, a.gid, false, "/dev/urandom");
  if (warn) process.stderr.write(`${warn}. MMDS version 2 will not be available to use.\n`);
  const uffd = compareVersions(version, "1.5.0") >= 0 ? misc("userfaultfd") : undefined;
  if (uffd !== undefined)
    mknod(path.join(root, "dev/userfaultfd"), 10, uffd, a.uid, a.gid, true, "/dev/userfaultfd");

  const pidFile = path.join(root, `${execName}.pid`);
  const writesPidFile = a.newPidNs || compareVersions(version, "1.7.0") >= 0;
  if (writesPidFile && existsSync(pidFile)) {
    // Named as seen from inside the jail, after dev/ and run/ were built.
    throw new JailerFailure(`Failed to open file /${execName}.pid: File exists (os error 17)`, "FileOpen");
  }

  const env = Object.entries(process.env)
    .filter(([k]) => k.startsWith("FAKE_FC_"))
    .map(([k, v]) => `${k}=${v ?? ""}`);
  env.push(`FAKE_FC_JAIL_ROOT=${root}`);
  const nowUs = process.hrtime.bigint() / 1000n;
  const cpuUs = Math.round(process.cpuUsage().user + process.cpuUsage().system);
  const fcArgs = [
    "--id",
    a.id,
    "--start-time-us",
    String(nowUs),
    "--start-time-cpu-us",
    String(cpuUs),
    "--parent-cpu-time-us",
    "0",
    ...a.extra,
  ];
  const chain: string[] = [];
  // Like the real jailer, Firecracker gets a mount namespace of its own whose mounts are
  // slaves of the host's: on a host with private mounts, a bind mount made in the jail after
  // this point is not seen by Firecracker (hard links are). Needs root, as the real one does.
  if (process.getuid!() === 0) chain.push("unshare", "--mount", "--propagation", "slave", "--");
  if (a.netns !== undefined) chain.push("nsenter", `--net=${a.netns}`, "--");
  chain.push("prlimit", ...limits, "--");
  if (a.uid !== process.getuid!() || a.gid !== process.getgid!())
    chain.push("setpriv", `--reuid=${a.uid}`, `--regid=${a.gid}`, "--clear-groups", "--");
  chain.push("env", "-i", ...env, dest, ...fcArgs);
  const chainText = chain.map(q).join(" ");
  const lines = [`cd ${q(root)} || exit 1`];
  // Joins the cgroups before exec (Firecracker keeps this pid, and children inherit them).
  for (const dir of cgroupDirs) lines.push(`printf %s "$$" > ${q(path.join(dir, "cgroup.procs"))} || exit 1`);

  if (a.newPidNs) {
    // Firecracker becomes pid 1 of a new pid namespace; this process writes its host pid and exits 0.
    const bg = a.daemonize
      ? `setsid unshare --pid --fork ${chainText} </dev/null >/dev/null 2>&1 &`
      : `unshare --pid --fork ${chainText} &`;
    lines.push(
      bg,
      "u=$!",
      "i=0",
      'while :; do c=$(cat /proc/$u/task/$u/children 2>/dev/null); c=${c%% *}; [ -n "$c" ] && break; i=$((i+1)); [ $i -gt 1000 ] && { echo "Failed to clone into a new pid namespace" >&2; exit 1; }; sleep 0.005; done',
      `set -C; printf %s "$c" > ${q(pidFile)} || exit 1`,
      "exit 0",
    );
  } else if (a.daemonize && compareVersions(version, "1.7.0") >= 0) {
    // Double fork: the grandchild writes its pid, sends stdio to /dev/null and execs Firecracker.
    lines.push(
      `( exec setsid /bin/sh -c 'set -C; printf %s "$$" > "$0" || exit 1; exec </dev/null >/dev/null 2>&1; exec "$@"' ${q(pidFile)} ${chainText} & )`,
      "exit 0",
    );
  } else {
    if (writesPidFile) {
      // The pid the launcher has now is the pid Firecracker will have (exec keeps it).
      writeFileSync(pidFile, String(selfPid), { flag: "wx" });
    }
    if (a.daemonize) {
      // 1.0: setsid() in process, which a process-group leader cannot do.
      const stat = readFileSync(`/proc/${selfPid}/stat`, "utf8");
      const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
      if (pgrp === selfPid)
        throw new JailerFailure(
          "Failed to daemonize: setsid: Operation not permitted (os error 1)",
          "SetSid",
        );
      lines.push("exec </dev/null >/dev/null 2>&1", `exec setsid ${chainText}`);
    } else {
      lines.push(`exec ${chainText}`);
    }
  }
  return lines.join("\n") + "\n";
}

function main(): void {
  const version =
    process.env.FAKE_JAILER_VERSION || process.env.FAKE_FC_VERSION || bakedVersion() || "1.16.1";
  if (!tryParseVersion(version)) {
    process.stderr.write(`fake jailer: invalid version "${version}"\n`);
    process.exit(1);
  }
  const old = compareVersions(version, "1.7.0") < 0;
  try {
    const args = parseArgs(process.argv.slice(2), version);
    // The launcher executes whatever this prints, so informational output is a script too.
    if (args === "version" || args === "help") {
      const text =
        args === "version" ? `Jailer v${version}` : "Jailer (cocoon fake): see docs/firecracker.md";
      process.stdout.write(`printf '%s\\n' ${q(text)}\nexit 0\n`);
      process.exit(0);
    }
    process.stdout.write(plan(args, version, Number(process.env.FAKE_JAILER_PID ?? process.ppid)));
    process.exit(0);
  } catch (err) {
    if (!(err instanceof JailerFailure)) throw err;
    if (err.parse) {
      // Argument errors: 1.0 prints them on stdout; from 1.5 (clap's successor) on stderr.
      if (compareVersions(version, "1.5.0") < 0) {
        process.stdout.write(`Arguments parsing error: ${err.message}\n\nFor more information try --help.\n`);
      } else {
        process.stderr.write(
          `Failed to parse arguments: ${err.message}\nError: ArgumentParsing(${err.variant})\n`,
        );
      }
      process.exit(1);
    }
    if (compareVersions(version, "1.8.0") < 0) {
      // Up to 1.7 every other error is a panic that aborts (SIGABRT, no exit code). The launcher
      // runs the plan in its own pid, so the plan prints the panic and aborts itself.
      const panic = old
        ? `thread 'main' panicked at 'Jailer error: ${err.message}', src/jailer/src/main.rs:435:27`
        : `thread 'main' panicked at src/jailer/src/main.rs:379:27:\nJailer error: ${err.message}`;
      process.stdout.write(`printf '%s\\n' ${q(panic)} >&2\nkill -ABRT $$\n`);
      process.exit(0);
    }
    process.stderr.write(`${err.message}\nError: ${err.variant}(${JSON.stringify(err.message)})\n`);
    process.exit(1);
  }
}

main();
