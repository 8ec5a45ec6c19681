import { execFile, spawn } from "node:child_process";
import { mkdir, readdir, rmdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { busyboxTarball } from "../helpers/rootfs.js";

/**
 * Debian's podman 4.3 (with conmon) running containers in cocoon VMs through
 * `--runtime cocoon-runtime`, with podman's storage, run directory and cocoon-runtime's root
 * under the test's directory (nothing of the machine's podman state is touched). No registry:
 * the image is a busybox rootfs tar given to `podman import`. Every container runs with
 * `--network none`: podman's default bridge would add a bridge and firewall rules to the
 * machine's own namespace (a network namespace path is covered by oci.test.ts).
 */

const execFileP = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, "../..");
const IMAGE = "localhost/cocoon-busybox:latest";

let root: string;
let cleanupRoot: () => Promise<void>;
let env: NodeJS.ProcessEnv;
let runtimePath: string;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * podman's cgroupfs manager puts conmon in `libpod_parent/conmon` of every cgroup hierarchy and
 * leaves both behind: the test removes those it made (the ones absent before it ran).
 */
async function libpodCgroups(): Promise<string[]> {
  const base = "/sys/fs/cgroup";
  const found: string[] = [];
  for (const top of [base, ...(await readdir(base).catch(() => [])).map((c) => path.join(base, c))]) {
    const parent = path.join(top, "libpod_parent");
    const inner = await readdir(parent, { withFileTypes: true }).catch(() => undefined);
    if (!inner) continue;
    for (const e of inner) if (e.isDirectory()) found.push(path.join(parent, e.name));
    found.push(parent);
  }
  return found;
}
let cgroupsBefore: Set<string>;

function podman(args: string[], runtime = runtimePath): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(
      "podman",
      [
        "--root",
        path.join(root, "storage"),
        "--runroot",
        path.join(root, "run"),
        "--tmpdir",
        path.join(root, "tmp"),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        "--runtime",
        runtime,
        ...args,
      ],
      { env, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

beforeAll(async () => {
  cgroupsBefore = new Set(await libpodCgroups());
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  // podman names the runtime by its file name. conmon gives the runtime a minimal environment,
  // so cocoon's settings go through containers.conf's conmon_env_vars to `create`, which records
  // them for the later commands (podman runs those with only PATH). podman runs `state` without
  // --root, so cocoon-runtime uses its default root: the containers' ids are podman's random ones.
  await mkdir(path.join(root, "bin"));
  runtimePath = path.join(root, "bin/cocoon-runtime");
  await symlink(path.join(REPO, "bin/cocoon-runtime.js"), runtimePath);
  const conf = path.join(root, "containers.conf");
  const vars = [
    `PATH=${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
    `COCOON_ROOT=${root}/cocoon`,
    `COCOON_ASSETS=${ASSETS_DIR}`,
    "COCOON_CONFIG=",
  ];
  await writeFile(
    conf,
    [
      "[engine]",
      `runtime_supports_json = ["cocoon-runtime"]`,
      `conmon_env_vars = ${JSON.stringify(vars)}`,
      "",
    ].join("\n"),
  );
  env = { ...process.env, CONTAINERS_CONF: conf };
  const tar = await busyboxTarball(path.join(root, "rootfs"), path.join(root, "busybox.tar"));
  const imp = await podman(["import", tar, IMAGE]);
  expect(imp.code, imp.stderr).toBe(0);
}, 10 * 60_000);

afterEach(async () => {
  // No VM, monitor, relay, virtiofsd or conmon left, no mount under the test's directory.
  // Relays run under cocoon-runtime's default root, so they are found by their command line.
  const leaked = async () => [
    ...(await processesMentioning(root)).filter((p) => !p.cmdline.startsWith("podman")),
    ...(await processesMentioning("cocoon-runtime.js --root /run/cocoon-runtime relay")),
  ];
  for (let i = 0; i < 100 && (await leaked()).length; i++) await new Promise((r) => setTimeout(r, 100));
  expect(await leaked()).toEqual([]);
  const { stdout } = await execFileP("findmnt", ["-rn", "-o", "TARGET"]);
  expect(stdout.split("\n").filter((t) => t.startsWith(`${root}/cocoon`))).toEqual([]);
  expect((await podman(["ps", "-aq"])).stdout).toBe("");
});

afterAll(async () => {
  if (root) await podman(["rm", "-af"]);
  await cleanupRoot?.();
  // Deepest first: a parent goes once its conmon child has.
  for (const dir of await libpodCgroups())
    if (!cgroupsBefore.has(dir)) await rmdir(dir).catch(() => undefined);
  expect((await libpodCgroups()).filter((d) => !cgroupsBefore.has(d))).toEqual([]);
});

describe("podman 4.3 --runtime cocoon-runtime", () => {
  it("run --rm prints the output and exits with the container's status", async () => {
    const r = await podman(["run", "--rm", "--network", "none", IMAGE, "sh", "-c", "echo hi; exit 3"]);
    expect(r.stdout).toBe("hi\n");
    expect(r.code, r.stderr).toBe(3);
  });

  it("podman's rlimits and files reach the guest: runc needs --ulimit on this host, cocoon-runtime does not", async () => {
    const script = [
      "grep 'open files' /proc/self/limits",
      'echo "$(cat /etc/hostname)"', // podman writes it without a final newline
      "grep -c localhost /etc/hosts",
      "test -f /run/.containerenv && echo containerenv",
      "cat /sys/fs/cgroup/pids.max",
    ].join("; ");
    const args = ["run", "--rm", "--network", "none", IMAGE, "sh", "-c", script];
    // podman's default rlimits (nofile 1048576, nproc 32768) are above this host's hard limits:
    // runc itself cannot set them on the host...
    const withRunc = await podman(args, "runc");
    expect(withRunc.code).not.toBe(0);
    expect(withRunc.stderr).toMatch(/rlimit/i);
    const limited = [
      "run",
      "--rm",
      "--network",
      "none",
      "--ulimit",
      "nofile=4096:4096",
      "--ulimit",
      "nproc=4096:4096",
    ];
    const runcLimited = await podman(
      [...limited, IMAGE, "sh", "-c", "grep 'open files' /proc/self/limits"],
      "runc",
    );
    expect(runcLimited.code, runcLimited.stderr).toBe(0);
    expect(runcLimited.stdout).toMatch(/^Max open files\s+4096\s+4096/);
    // ...while in a VM the guest sets them: the same defaults, unchanged, and no flag needed.
    const r = await podman(args);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines, r.stdout).toHaveLength(6);
    expect(lines[0]).toMatch(/^Max open files\s+1048576\s+1048576/);
    expect(lines[1]).toMatch(/^[0-9a-f]{12}$/); // podman's hostname: the container id's start
    expect(Number(lines[2])).toBeGreaterThan(0);
    expect(lines[3]).toBe("containerenv");
    expect(lines[4]).toBe("2048"); // podman's default pids limit, applied in the guest
  });

  it("run -d, exec, stop, rm", async () => {
    const run = await podman(["run", "-d", "--name", "svc", "--network", "none", IMAGE, "sleep", "1000"]);
    expect(run.code, run.stderr).toBe(0);
    const ps = await podman(["ps", "--format", "{{.Names}} {{.Status}}"]);
    expect(ps.stdout).toMatch(/^svc Up/);
    const ex = await podman(["exec", "svc", "sh", "-c", "echo in-$(hostname); exit 4"]);
    expect(ex.stdout).toMatch(/^in-/);
    expect(ex.code).toBe(4);
    const stop = await podman(["stop", "-t", "2", "svc"]);
    expect(stop.code, stop.stderr).toBe(0);
    const inspect = await podman(["inspect", "--format", "{{.State.Status}}", "svc"]);
    expect(inspect.stdout.trim()).toBe("exited");
    const rm = await podman(["rm", "svc"]);
    expect(rm.code, rm.stderr).toBe(0);
  });

  it("run -it gets a terminal (under script)", async () => {
    const cmd = [
      "podman",
      "--root",
      path.join(root, "storage"),
      "--runroot",
      path.join(root, "run"),
      "--tmpdir",
      path.join(root, "tmp"),
      "--storage-driver",
      "vfs",
      "--cgroup-manager",
      "cgroupfs",
      "--events-backend",
      "file",
      "--runtime",
      runtimePath,
      "run",
      "-it",
      "--rm",
      "--network",
      "none",
      IMAGE,
      "sh",
      "-c",
      // One argument: `script -c` hands the line to a host shell, which must not split it.
      "'test -t 0 && echo is-a-tty; tty; exit 2'",
    ].join(" ");
    const r = await new Promise<Result>((resolve) => {
      const child = spawn("script", ["-qefc", cmd, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
    expect(r.stdout, JSON.stringify(r)).toContain("is-a-tty");
    expect(r.stdout).toMatch(/\/dev\/pts\/\d+/);
    expect(r.code, r.stdout + r.stderr).toBe(2);
  });
});
