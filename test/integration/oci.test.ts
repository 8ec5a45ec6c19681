import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { CallerNetwork } from "../helpers/netns.js";
import { busyboxRootfs } from "../helpers/rootfs.js";

/**
 * cocoon-runtime against the runtime spec's lifecycle (runtime.md) and runtime-tools' command
 * line (docs/command-line-interface.md), with real VMs. The test plays conmon: `create` runs
 * under a child subreaper (test/helpers/subreaper.py) that reaps the container pid and
 * reports its exit status, the only way conmon learns it.
 */

const execFileP = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, "../..");
const BIN = path.join(REPO, "bin/cocoon-runtime.js");
const PY = "/usr/bin/python3";

let root: string; // cocoon's state root and everything of this test
let cleanupRoot: () => Promise<void>;
let ociRoot: string;
let env: NodeJS.ProcessEnv;
let rootfs: string;
let n = 0;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function runtime(args: string[], input?: string): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, "--root", ociRoot, ...args], { env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input ?? "");
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function stateOf(id: string): Promise<{ status: string; pid: number; bundle: string }> {
  const r = await runtime(["state", id]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { status: string; pid: number; bundle: string };
}

/** A bundle with the shared busybox rootfs and a config.json running `args`. */
async function bundle(
  args: string[],
  opts: { terminal?: boolean; extra?: (spec: Record<string, unknown>) => void } = {},
): Promise<string> {
  const dir = path.join(root, `b${++n}`);
  await mkdir(dir);
  const spec = {
    ociVersion: "1.0.2",
    process: {
      terminal: opts.terminal ?? false,
      user: { uid: 0, gid: 0 },
      args,
      env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
      cwd: "/",
    },
    root: { path: rootfs, readonly: false },
    hostname: "oci-test",
    linux: { namespaces: [{ type: "pid" }, { type: "mount" }] } as Record<string, unknown>,
  };
  opts.extra?.(spec);
  await writeFile(path.join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

/** `create` under a subreaper, as conmon runs it: its stdio is the container's. */
class Created {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  constructor(
    readonly id: string,
    readonly statusFile: string,
    readonly pidFile: string,
    createArgs: string[],
  ) {
    this.child = spawn(
      PY,
      [path.join(REPO, "test/helpers/subreaper.py"), statusFile, pidFile, ...createArgs],
      {
        env,
      },
    );
    this.child.stdout!.on("data", (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr!.on("data", (d: Buffer) => (this.stderr += d.toString()));
  }

  static async create(id: string, bundleDir: string, extra: string[] = []): Promise<Created> {
    const c = new Created(id, path.join(root, `${id}.status`), path.join(root, `${id}.pid`), [
      process.execPath,
      BIN,
      "--root",
      ociRoot,
      "create",
      "--bundle",
      bundleDir,
      "--pid-file",
      path.join(root, `${id}.pid`),
      ...extra,
      id,
    ]);
    expect(await c.line("create")).toBe("create 0");
    return c;
  }

  /** Waits for the status file's line starting with `prefix`. */
  async line(prefix: string): Promise<string> {
    for (;;) {
      const text = await readFile(this.statusFile, "utf8").catch(() => "");
      const found = text.split("\n").find((l) => l.startsWith(prefix));
      if (found) return found;
      if (this.child.exitCode !== null && !text.includes(prefix)) return `subreaper ended: ${this.stderr}`;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async exitLine(): Promise<string> {
    const l = await this.line("exit");
    await new Promise((r) => (this.child.exitCode === null ? this.child.on("close", r) : r(null)));
    return l;
  }
}

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  ociRoot = path.join(root, "oci");
  env = { ...process.env, COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: "" };
  rootfs = await busyboxRootfs(path.join(root, "rootfs"));
}, 10 * 60_000);

afterEach(async () => {
  // Nothing may outlive a test: no relay, VM, virtiofsd or monitor, no mount, no container left.
  // A container left behind (a test that failed half-way) is reported, then removed, so that
  // one failure does not cascade into the tests after it.
  const left = (await runtime(["list", "-q"])).stdout.split("\n").filter(Boolean);
  for (const id of left) await runtime(["delete", "--force", id]);
  expect(left, "containers left behind").toEqual([]);
  for (let i = 0; i < 100 && (await processesMentioning(root)).length; i++)
    await new Promise((r) => setTimeout(r, 100));
  expect(await processesMentioning(root)).toEqual([]);
  const { stdout } = await execFileP("findmnt", ["-rn", "-o", "TARGET"]);
  expect(stdout.split("\n").filter((t) => t.startsWith(root))).toEqual([]);
});

afterAll(async () => {
  await cleanupRoot?.();
});

describe("cocoon-runtime: the OCI lifecycle on real VMs", () => {
  it("create → created → start → running → exit → stopped → delete, with the error cases", async () => {
    const b = await bundle([
      "sh",
      "-c",
      'echo main-out; echo main-err >&2; read line; echo "got $line"; echo "host=$(hostname)"; exit 5',
    ]);
    // Unknown ids: the words podman relies on.
    for (const args of [
      ["state", "nope"],
      ["start", "nope"],
      ["kill", "nope", "KILL"],
      ["delete", "nope"],
    ]) {
      const r = await runtime(args);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr).toContain("container nope does not exist");
    }
    const c = await Created.create("c1", b);
    expect(c.stdout).toBe(""); // nothing runs before start
    const pid = Number(await readFile(c.pidFile, "utf8"));
    const created = await stateOf("c1");
    expect(created).toMatchObject({ status: "created", pid, bundle: b });
    expect(await processesMentioning(`relay c1`)).toEqual([expect.objectContaining({ pid })]);
    // A second create with the same id fails and leaves the first alone.
    const dup = await runtime(["create", "--bundle", b, "c1"]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toContain("already exists");
    // delete of a created container without --force is an error without effect.
    expect((await runtime(["delete", "c1"])).code).toBe(1);
    expect((await stateOf("c1")).status).toBe("created");

    const started = await runtime(["start", "c1"]);
    expect(started.code, started.stderr).toBe(0);
    expect(await stateOf("c1")).toMatchObject({ status: "running", pid });
    // start of a non-created container: an error, and nothing changes.
    const again = await runtime(["start", "c1"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("not created");
    expect((await stateOf("c1")).status).toBe("running");

    // exec (the inline form), its streams and exit status.
    const ex = await runtime(["exec", "c1", "sh", "-c", "echo exec-out; echo exec-err >&2; exit 4"]);
    expect(ex).toMatchObject({ code: 4, stdout: "exec-out\n", stderr: "exec-err\n" });
    expect(JSON.parse((await runtime(["ps", "--format", "json", "c1"])).stdout)).toEqual([pid]);
    expect((await runtime(["list"])).stdout).toMatch(new RegExp(`^c1\\s+${pid}\\s+running\\s+${b}`, "m"));

    // pause / resume.
    expect((await runtime(["pause", "c1"])).code).toBe(0);
    expect((await stateOf("c1")).status).toBe("paused");
    expect((await runtime(["pause", "c1"])).code).toBe(1);
    expect((await runtime(["resume", "c1"])).code).toBe(0);
    expect((await stateOf("c1")).status).toBe("running");

    // The relay kept create's stdio after create exited: stdin reaches the process, output
    // comes back, and the container pid exits with the process's status.
    c.child.stdin!.end("hello\n");
    expect(await c.exitLine()).toBe("exit 5");
    expect(c.stdout).toBe("main-out\ngot hello\nhost=oci-test\n");
    expect(c.stderr).toBe("main-err\n");
    expect(await stateOf("c1")).toMatchObject({ status: "stopped", pid: 0 });
    // kill of a stopped container: an error without effect.
    const k = await runtime(["kill", "c1", "TERM"]);
    expect(k.code).toBe(1);
    expect(k.stderr).toContain("stopped");
    expect((await runtime(["delete", "c1"])).code).toBe(0);
    expect((await runtime(["state", "c1"])).stderr).toContain("does not exist");
  });

  it("kill of a created container ends it unstarted with 128+signal; start then fails", async () => {
    const c = await Created.create("c2", await bundle(["sh", "-c", "echo never"]));
    expect((await runtime(["kill", "c2", "9"])).code).toBe(0);
    expect(await c.exitLine()).toBe("exit 137");
    expect((await stateOf("c2")).status).toBe("stopped");
    expect((await runtime(["start", "c2"])).code).toBe(1);
    expect(c.stdout).toBe("");
    expect((await runtime(["delete", "c2"])).code).toBe(0);
  });

  it("a detached exec with --process and --pid-file; kill --all of a running container; delete --force", async () => {
    const c = await Created.create("c3", await bundle(["sh", "-c", "echo up; sleep 1000"]));
    expect((await runtime(["start", "c3"])).code).toBe(0);
    const procFile = path.join(root, "exec.json");
    await writeFile(
      procFile,
      JSON.stringify({ args: ["sh", "-c", "echo detached-out; exit 0"], env: ["PATH=/bin"], cwd: "/tmp" }),
    );
    const out = path.join(root, "exec.out");
    const execPid = path.join(root, "exec.pid");
    const sh = await execFileP(
      "sh",
      [
        "-c",
        `exec "$0" "$1" --root "$2" exec --process "$3" --detach --pid-file "$4" c3 >"$5" 2>&1 </dev/null`,
        process.execPath,
        BIN,
        ociRoot,
        procFile,
        execPid,
        out,
      ],
      { env },
    );
    expect(sh.stderr).toBe("");
    expect(Number(await readFile(execPid, "utf8"))).toBeGreaterThan(0);
    // The detached exec's relay writes its output after `exec` returned.
    for (let i = 0; i < 600 && !(await readFile(out, "utf8")).includes("detached-out"); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(await readFile(out, "utf8")).toBe("detached-out\n");

    expect((await runtime(["kill", "--all", "c3", "KILL"])).code).toBe(0);
    expect(await c.exitLine()).toBe("exit 137");
    expect(c.stdout).toBe("up\n");
    expect((await runtime(["delete", "--force", "c3"])).code).toBe(0);
  });

  it("--console-socket: the receiver gets a working pty master, sized, and the exit status", async () => {
    const sock = path.join(root, "console.sock");
    const receiver = spawn(
      PY,
      [
        path.join(REPO, "test/helpers/console-receiver.py"),
        sock,
        "33",
        "99",
        "tty; stty size; echo $((6*7)); exit 3\n",
      ],
      { env },
    );
    let shown = "";
    let recvErr = "";
    receiver.stdout.on("data", (d: Buffer) => (shown += d.toString()));
    receiver.stderr.on("data", (d: Buffer) => (recvErr += d.toString()));
    while (!recvErr.includes("listening")) await new Promise((r) => setTimeout(r, 50));
    const c = await Created.create("c4", await bundle(["sh"], { terminal: true }), [
      "--console-socket",
      sock,
    ]);
    expect(recvErr).toMatch(/name=\/dev\/pts\/\d+/);
    expect((await runtime(["start", "c4"])).code).toBe(0);
    expect(await c.exitLine()).toBe("exit 3");
    await new Promise((r) => (receiver.exitCode === null ? receiver.on("close", r) : r(null)));
    // The guest's shell ran on a terminal of the guest's own, at the size the receiver set.
    expect(shown, JSON.stringify(shown)).toMatch(/\/dev\/pts\/\d+\r\n33 99\r\n42\r\n/);
    expect(c.stdout).toBe("");
    expect((await runtime(["delete", "c4"])).code).toBe(0);
  });

  it("config.json's rlimits, resources, mounts and network namespace reach the container in the VM", async () => {
    // The caller's network (podman's, after CNI), the test's own namespaces.
    const net = await CallerNetwork.create("cco", "10.251.0");
    try {
      // Host files as podman binds them (/etc/hosts read-write, another read-only), and the
      // host directory podman binds at /dev/shm.
      const hostsFile = path.join(root, "hosts-for-c6");
      await writeFile(hostsFile, "127.0.0.1 localhost\n10.251.0.1 peer-by-file\n");
      const roFile = path.join(root, "ro-for-c6");
      await writeFile(roFile, "read-only data\n");
      const shmDir = path.join(root, "shm-for-c6");
      await mkdir(shmDir);
      const b = await bundle(
        [
          "sh",
          "-c",
          [
            "grep 'open files' /proc/self/limits",
            "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max",
            "grep peer-by-file /etc/hosts",
            "cat /etc/cocoon-ro; (echo x > /etc/cocoon-ro) 2>/dev/null || echo ro-refused",
            'awk \'$2 == "/scratch" || $2 == "/dev/shm" { print $2, $3 }\' /proc/mounts',
            "ip -o -4 addr show | awk '{ print $2, $4 }'",
            "ping -c 1 -W 10 10.251.0.1 >/dev/null && echo ping-ok",
          ].join("; "),
        ],
        {
          extra: (spec) => {
            (spec["process"] as Record<string, unknown>)["rlimits"] = [
              { type: "RLIMIT_NOFILE", soft: 1234, hard: 2345 },
            ];
            spec["mounts"] = [
              { destination: "/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] },
              { destination: "/etc/hosts", type: "bind", source: hostsFile, options: ["bind", "rprivate"] },
              { destination: "/etc/cocoon-ro", type: "bind", source: roFile, options: ["rbind", "ro"] },
              { destination: "/dev/shm", type: "bind", source: shmDir, options: ["bind", "nosuid"] },
            ];
            spec["linux"] = {
              namespaces: [{ type: "pid" }, { type: "mount" }, { type: "network", path: net.path }],
              resources: { memory: { limit: 64 * 1024 * 1024 }, pids: { limit: 99 } },
            };
          },
        },
      );
      const c = await Created.create("c6", b);
      expect((await runtime(["start", "c6"])).code).toBe(0);
      expect(await c.exitLine(), c.stderr).toBe("exit 0");
      const lines = c.stdout.split("\n");
      expect(lines[0]).toMatch(/^Max open files\s+1234\s+2345\s+files/);
      expect(lines.slice(1, 3)).toEqual([String(64 * 1024 * 1024), "99"]);
      expect(lines).toContain("10.251.0.1 peer-by-file");
      expect(lines).toContain("read-only data");
      expect(lines).toContain("ro-refused");
      expect(lines).toContain("/scratch tmpfs");
      expect(lines).toContain("/dev/shm tmpfs");
      expect(lines).toContain("eth0 10.251.0.2/24");
      expect(lines).toContain("ping-ok");
      expect((await runtime(["delete", "c6"])).code).toBe(0);
      // The namespace is the caller's: left as it was found, with only its own links.
      expect(await net.links()).toEqual(["lo", "eth0"]);

      // A host directory bound elsewhere than /dev/shm cannot reach a VM: refused, nothing made.
      const refused = await runtime([
        "create",
        "--bundle",
        await bundle(["true"], {
          extra: (spec) => {
            spec["mounts"] = [{ destination: "/data", type: "bind", source: shmDir, options: ["rbind"] }];
          },
        }),
        "c7",
      ]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("bind mounts of host directories are not supported in a VM");
      expect((await runtime(["state", "c7"])).stderr).toContain("does not exist");
    } finally {
      await net.remove();
    }
  });

  it("--log-format json: a failure is one JSON object in the log file", async () => {
    const log = path.join(root, "oci-log");
    const r = await runtime(["--log-format=json", "--log", log, "create", "--bundle", root, "c5"]);
    expect(r.code).toBe(1);
    const obj = JSON.parse(await readFile(log, "utf8")) as Record<string, string>;
    expect(Object.keys(obj).sort()).toEqual(["level", "msg", "time"]);
    expect(obj["level"]).toBe("error");
    expect(obj["msg"]).toContain("config.json");
  });
});
