/**
 * The fakes themselves: the jailer's command line, layout, refusals, pid and environment
 * handling per version, and Firecracker's command line and HTTP-level answers. These tests
 * pin the fakes to the reference notes (firecracker-jailer.md, firecracker-api.md,
 * firecracker-v1.0-observed.md); against real binaries only the checks both can pass run.
 */
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManagedProcess, runCommand } from "../../../src/host/process.js";
import { FirecrackerClient } from "../../../src/vmm/firecracker/client.js";
import { waitForApi } from "../../../src/vmm/firecracker/launch.js";
import { atLeast, parseVersion } from "../../../src/vmm/firecracker/version.js";
import { fakeBinaries } from "../../fakes/firecracker/build.js";
import {
  REAL,
  VERSIONS,
  exists,
  guestKernel,
  leaks,
  removeTmp,
  shortTmp,
  target,
  type Target,
} from "./helpers.js";

describe.each(VERSIONS)("fake jailer and Firecracker %s", (label) => {
  let t: Target;
  const dirs: string[] = [];
  const procs: ManagedProcess[] = [];

  beforeAll(async () => {
    t = await target(label);
  });

  afterEach(async () => {
    for (const p of procs.splice(0))
      if (p.running) await p.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
    for (const dir of dirs.splice(0)) {
      await removeTmp(dir);
    }
  });

  async function tmp(): Promise<string> {
    const d = await shortTmp();
    dirs.push(d);
    await mkdir(path.join(d, "jails"));
    return d;
  }

  const v = () => parseVersion(t.version);
  /** How a jailer fails past argument parsing: abort (SIGABRT) up to 1.7, exit 1 after. */
  const expectJailerFailure = (res: { code: number | null; signal?: string | null }) => {
    if (atLeast(v(), "1.8.0")) expect(res.code).toBe(1);
    else expect(res).toMatchObject({ code: null, signal: "SIGABRT" });
  };
  const jailerArgs = (dir: string, id: string, extra: string[] = []) => [
    "--id",
    id,
    "--exec-file",
    t.firecracker,
    "--uid",
    "0",
    "--gid",
    "0",
    "--chroot-base-dir",
    path.join(dir, "jails"),
    ...extra,
  ];

  it("reports its version", async () => {
    const fc = await runCommand(t.firecracker, ["--version"]);
    expect(fc.stdout).toMatch(new RegExp(`^Firecracker v${t.version.replace(/\./g, "\\.")}`));
    if (t.jailer)
      expect((await runCommand(t.jailer, ["--version"])).stdout).toMatch(/^Jailer v\d+\.\d+\.\d+/);
  });

  it("jailer: refuses the flags v1.0 removed, bad ids, and a leftover jail", async (ctx) => {
    if (!t.jailer) return ctx.skip();
    const dir = await tmp();
    const v10 = !atLeast(v(), "1.5.0");
    // Argument errors exit 1: on stdout in 1.0, on stderr (another format) from 1.5.
    const node = await runCommand(t.jailer, [...jailerArgs(dir, "j1"), "--node", "0"]);
    expect(node.code).toBe(1);
    expect(v10 ? node.stdout : node.stderr).toMatch(
      v10
        ? /^Arguments parsing error: Found argument 'node' which wasn't expected/
        : /^Failed to parse arguments: Found argument 'node' which wasn't expected[^]*\nError: ArgumentParsing\(UnexpectedArgument\("node"\)\)/,
    );
    const seccomp = await runCommand(t.jailer, [...jailerArgs(dir, "j1"), "--seccomp-level", "2"]);
    expect(seccomp.code).toBe(1);
    // Every other error is a panic: up to 1.7 it aborts (SIGABRT).
    const badId = await runCommand(t.jailer, jailerArgs(dir, "bad_id"));
    expectJailerFailure(badId);
    expect(badId.stderr).toMatch(/(Jailer error: )?Invalid instance ID: [Ii]nvalid char \(_\) at position 3/);
    // A first jailer run builds the jail; SIGKILL it and the jail stays behind.
    const first = await ManagedProcess.spawn(t.jailer, [
      ...jailerArgs(dir, "j1"),
      "--",
      "--api-sock",
      "/api.socket",
    ]);
    procs.push(first);
    const root = path.join(dir, "jails", "firecracker", "j1", "root");
    await waitForApi(path.join(root, "api.socket"), { timeoutMs: 10_000, pid: first.pid, spawned: first });
    await first.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
    const again = await runCommand(t.jailer, [...jailerArgs(dir, "j1"), "--", "--api-sock", "/api.socket"], {
      timeoutMs: 10_000,
    });
    expectJailerFailure(again);
    // (1.0's message has a NUL byte after "tun".)
    expect(again.stderr).toMatch(
      /Failed to create \/dev\/net\/tun\0? via mknod inside the jail: File exists \(os error 17\)/,
    );
  });

  it("jailer: refuses an existing pid file (1.7+ writes one on every run)", async (ctx) => {
    if (!t.jailer || !atLeast(v(), "1.7.0")) return ctx.skip();
    const dir = await tmp();
    const root = path.join(dir, "jails", "firecracker", "j6", "root");
    await mkdir(root, { recursive: true });
    await writeFile(path.join(root, "firecracker.pid"), "1");
    const res = await runCommand(t.jailer, [...jailerArgs(dir, "j6"), "--", "--api-sock", "/api.socket"], {
      timeoutMs: 10_000,
    });
    expectJailerFailure(res);
    expect(res.stderr).toMatch(
      /(Jailer error: )?Failed to open file \/firecracker\.pid: File exists \(os error 17\)/,
    );
  });

  it("jailer: builds the real layout, sets limits, clears the environment but FAKE_FC_*, keeps the pid", async (ctx) => {
    if (!t.jailer || t.real) return ctx.skip();
    const dir = await tmp();
    const fc = await ManagedProcess.spawn(
      t.jailer,
      [...jailerArgs(dir, "j2", ["--resource-limit", "no-file=1234"]), "--", "--api-sock", "/api.socket"],
      {
        env: { ...process.env, FAKE_FC_GUEST_DIAL: "", SECRET_VAR: "x" },
      },
    );
    procs.push(fc);
    const root = path.join(dir, "jails", "firecracker", "j2", "root");
    await waitForApi(path.join(root, "api.socket"), { timeoutMs: 10_000, pid: fc.pid, spawned: fc });
    // Plain mode: the jailer exec'd in place, so the spawned pid is Firecracker.
    const cmdline = (await readFile(`/proc/${fc.pid}/cmdline`, "utf8")).split("\0");
    expect(cmdline).toEqual(
      expect.arrayContaining([
        path.join(root, "firecracker"),
        "--id",
        "j2",
        "--start-time-us",
        "--start-time-cpu-us",
        "--parent-cpu-time-us",
        "--api-sock",
        "/api.socket",
      ]),
    );
    const environ = (await readFile(`/proc/${fc.pid}/environ`, "utf8")).split("\0").filter(Boolean);
    expect(environ).toContain(`FAKE_FC_JAIL_ROOT=${root}`);
    expect(environ.some((e) => e.startsWith("SECRET_VAR=") || e.startsWith("PATH="))).toBe(false);
    expect(await readFile(`/proc/${fc.pid}/limits`, "utf8")).toMatch(/Max open files\s+1234\s+1234/);
    expect((await readdir(path.join(root, "dev"))).sort()).toEqual(
      expect.arrayContaining(["kvm", "net", "urandom"]),
    );
    expect(await exists(path.join(root, "run"))).toBe(true);
    expect(await exists(path.join(root, "firecracker.pid"))).toBe(atLeast(v(), "1.7.0"));
    if (atLeast(v(), "1.7.0"))
      expect(Number(await readFile(path.join(root, "firecracker.pid"), "utf8"))).toBe(fc.pid);
    const client = await FirecrackerClient.connect({ socketPath: path.join(root, "api.socket") });
    expect((await client.describeInstance()).body.id).toBe("j2");
    await client.close();
  });

  it("jailer: v1.0 --daemonize cannot setsid as a process-group leader; v1.7+ double-forks", async (ctx) => {
    if (!t.jailer || t.real) return ctx.skip();
    const dir = await tmp();
    const p = await ManagedProcess.spawn(
      t.jailer,
      [...jailerArgs(dir, "j3", ["--daemonize"]), "--", "--api-sock", "/api.socket"],
      { detached: true },
    );
    procs.push(p);
    const status = await p.exited;
    await p.closed;
    const root = path.join(dir, "jails", "firecracker", "j3", "root");
    if (atLeast(v(), "1.7.0")) {
      expect(status.code).toBe(0);
      const pid = Number(
        await readFile(path.join(root, "firecracker.pid"), "utf8").catch(
          async () => (await sleep(200), readFile(path.join(root, "firecracker.pid"), "utf8")),
        ),
      );
      await waitForApi(path.join(root, "api.socket"), { timeoutMs: 10_000, pid });
      process.kill(pid, "SIGKILL");
    } else {
      expect(status).toMatchObject({ code: null, signal: "SIGABRT" }); // a panic that aborts
      expect(p.stderrTail()).toMatch(/setsid: Operation not permitted/);
    }
  });

  it("jailer: writes cgroup values below FAKE_JAILER_CGROUP_ROOT", async (ctx) => {
    if (!t.jailer || t.real) return ctx.skip();
    const dir = await tmp();
    const cg = path.join(dir, "cgroup");
    const p = await ManagedProcess.spawn(
      t.jailer,
      [
        ...jailerArgs(dir, "j4", [
          "--cgroup",
          "cpuset.cpus=0",
          "--cgroup-version",
          "2",
          "--parent-cgroup",
          "cocoon",
        ]),
        "--",
        "--api-sock",
        "/api.socket",
      ],
      {
        env: { ...process.env, FAKE_JAILER_CGROUP_ROOT: cg },
      },
    );
    procs.push(p);
    await waitForApi(path.join(dir, "jails", "firecracker", "j4", "root", "api.socket"), {
      timeoutMs: 10_000,
      pid: p.pid,
      spawned: p,
    });
    expect(await readFile(path.join(cg, "cocoon", "j4", "cpuset.cpus"), "utf8")).toBe("0\n");
    const bad = await runCommand(t.jailer, jailerArgs(dir, "j5", ["--cgroup", "cpus"]));
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/Invalid format for cgroups: cpus/);
  });

  it("firecracker: refuses an existing socket, flags newer than its version, and a bad config file", async () => {
    const dir = await tmp();
    const sock = path.join(dir, "api.sock");
    await writeFile(sock, "");
    const taken = await runCommand(t.firecracker, ["--api-sock", sock], { timeoutMs: 10_000 });
    expect(taken.code).toBe(1);
    // --metrics-path came with 1.2 (a newer Firecracker would start and serve: not run then).
    if (!atLeast(v(), "1.2.0")) {
      const metrics = await runCommand(
        t.firecracker,
        ["--api-sock", path.join(dir, "m.sock"), "--metrics-path", path.join(dir, "m")],
        { timeoutMs: 10_000 },
      );
      expect(metrics.code).toBe(153);
      expect(metrics.stderr).toMatch(/Arguments parsing error: Found argument 'metrics-path'/);
    }
    const cfg = path.join(dir, "vm.json");
    await writeFile(
      cfg,
      JSON.stringify({ "machine-config": { vcpu_count: 1, mem_size_mib: 128, bogus: true } }),
    );
    const bad = await runCommand(t.firecracker, ["--no-api", "--config-file", cfg], { timeoutMs: 10_000 });
    // 1.0 exits with 152, later versions with 1.
    expect(bad.code).toBe(atLeast(v(), "1.5.0") ? 1 : 152);
  });

  it("firecracker: boots from --config-file", async (ctx) => {
    if (t.real) return ctx.skip();
    const dir = await tmp();
    const kernel = await guestKernel(dir);
    const cfg = path.join(dir, "vm.json");
    await writeFile(
      cfg,
      JSON.stringify({
        "boot-source": { kernel_image_path: kernel },
        "machine-config": { vcpu_count: 1, mem_size_mib: 128 },
      }),
    );
    const p = await ManagedProcess.spawn(t.firecracker, [
      "--api-sock",
      path.join(dir, "a.sock"),
      "--config-file",
      cfg,
    ]);
    procs.push(p);
    await waitForApi(path.join(dir, "a.sock"), { timeoutMs: 10_000, spawned: p, pid: p.pid });
    const client = await FirecrackerClient.connect({ socketPath: path.join(dir, "a.sock") });
    expect((await client.describeInstance()).body.state).toBe("Running");
    await client.close();
    await p.terminate();
    // Like Firecracker, the fake leaves its API socket behind when it is killed: whoever
    // restarts it must remove it (the jail/VM cleanups do).
    expect(await leaks(dir)).toEqual({ processes: [], mounts: [], sockets: [path.join(dir, "a.sock")] });
  });

  it("firecracker: HTTP-level refusals (GET with body, empty PUT, too many connections)", async (ctx) => {
    if (t.real) return ctx.skip();
    const dir = await tmp();
    const sock = path.join(dir, "a.sock");
    const p = await ManagedProcess.spawn(t.firecracker, ["--api-sock", sock]);
    procs.push(p);
    await waitForApi(sock, { timeoutMs: 10_000, spawned: p, pid: p.pid });
    const client = new FirecrackerClient({ socketPath: sock });
    expect(JSON.parse((await client.raw("GET", "/", "{}")).text)).toEqual({
      fault_message: "GET request cannot have a body.",
    });
    expect(JSON.parse((await client.raw("PUT", "/actions", "")).text)).toEqual({
      fault_message: "Empty PUT request.",
    });
    await client.close();
    const conns: net.Socket[] = [];
    for (let i = 0; i < 10; i++)
      conns.push(
        await new Promise<net.Socket>((r) => {
          const s = net.connect(sock, () => r(s));
        }),
      );
    const eleventh = await new Promise<string>((resolve) => {
      const s = net.connect(sock);
      let data = "";
      s.on("data", (c: Buffer) => (data += c.toString()));
      s.on("close", () => resolve(data));
    });
    // As observed: no trailing space, Connection: close, no Content-Type, micro-http's spacing.
    expect(eleventh).toBe(
      'HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{ "error": "Too many open connections" }',
    );
    for (const c of conns) c.destroy();
  });
  it("firecracker: answers an oversized body once per KiB, and dies (SIGPIPE, then SIGSYS) when the client hangs up on them", async (ctx) => {
    if (t.real) return ctx.skip(); // it would kill the real one too, but not every time
    const dir = await tmp();
    const sock = path.join(dir, "a.sock");
    const p = await ManagedProcess.spawn(t.firecracker, ["--api-sock", sock]);
    procs.push(p);
    await waitForApi(sock, { timeoutMs: 10_000, spawned: p, pid: p.pid });
    const body = JSON.stringify({ blob: "x".repeat(60_000) });
    const first = await new Promise<string>((resolve, reject) => {
      const s = net.connect(sock, () =>
        s.write(
          `PUT /mmds HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        ),
      );
      let data = "";
      s.on("error", reject);
      s.on("data", (c: Buffer) => {
        data += c.toString("utf8");
        const answer = /^HTTP\/1\.1 400 \r\n[\s\S]*?Content-Length: (\d+)\r\n\r\n/.exec(data);
        if (answer && data.length >= answer[0].length + Number(answer[1])) {
          s.destroy(); // the client leaves after the first answer, as undici does
          resolve(data.slice(0, answer[0].length + Number(answer[1])));
        }
      });
    });
    expect(first).toMatch(
      /\r\n\r\n\{ "error": "Request payload with size 60011 is larger than the limit of 51200 allowed by server\.\nAll previous unanswered requests will be dropped\." \}$/,
    );
    const exit = await p.exited;
    expect(exit.signal).toBe("SIGSYS");
  });
});

describe.skipIf(REAL)("fake Firecracker claiming a version between the two specs (1.7.0)", () => {
  it("accepts what 1.7 added and refuses what came later, like the SDK's derived model", async () => {
    const b = await fakeBinaries("1.7.0");
    const dir = await shortTmp();
    const sock = path.join(dir, "a.sock");
    // Before 1.14 the metrics file must exist.
    await writeFile(path.join(dir, "m.json"), "");
    const p = await ManagedProcess.spawn(b.firecracker, [
      "--api-sock",
      sock,
      "--metrics-path",
      path.join(dir, "m.json"),
    ]);
    try {
      await waitForApi(sock, { timeoutMs: 10_000, spawned: p, pid: p.pid });
      const client = await FirecrackerClient.connect({ socketPath: sock });
      expect(client.version.raw).toBe("1.7.0");
      await client.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128, huge_pages: "None" });
      await expect(
        client.putNetworkInterface({ iface_id: "eth0", host_dev_name: "tap0", mtu: 1500 }),
      ).rejects.toThrow(/NetworkInterface\.mtu was added in Firecracker 1\.16\.0/);
      const raw = await client.raw("PUT", "/network-interfaces/eth0", {
        iface_id: "eth0",
        host_dev_name: "tap0",
        mtu: 1500,
      });
      expect(JSON.parse(raw.text).fault_message).toMatch(/unknown field `mtu`/);
      await client.close();
    } finally {
      await p.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
      await removeTmp(dir);
    }
  });
});

/**
 * The differences between versions that the real binaries showed (firecracker-real-observed.md,
 * sections 3, 4 and 6), answered by the fake claiming each of the observed versions.
 */
describe.skipIf(REAL).each(["1.0.0", "1.5.1", "1.7.0", "1.14.2"])(
  "fake Firecracker claiming %s, as the real one answers",
  (version) => {
    it("texts and rules that changed between versions", async () => {
      const dir = await shortTmp();
      const sock = path.join(dir, "a.sock");
      const fake = (await fakeBinaries("1.16.1")).firecracker;
      const p = await ManagedProcess.spawn(fake, ["--api-sock", sock], {
        env: { ...process.env, FAKE_FC_VERSION: version },
      });
      const client = new FirecrackerClient({ socketPath: sock });
      try {
        await waitForApi(sock, { timeoutMs: 10_000, spawned: p, pid: p.pid });
        const v17 = atLeast(parseVersion(version), "1.7.0");
        const v15 = atLeast(parseVersion(version), "1.5.0");
        const fault = async (method: string, route: string, body?: string) => {
          const res = await client.raw(method, route, body);
          return { status: res.status, deprecated: res.headers.deprecation === "true", text: res.text };
        };
        const serde = (what: string) =>
          JSON.stringify({
            fault_message: `An error occurred when deserializing the json body of a request: ${what}`,
          });

        expect((await fault("PUT", "/machine-config", '{"vcpu_count":33,"mem_size_mib":128}')).text).toBe(
          v17
            ? JSON.stringify({
                fault_message:
                  "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
              })
            : serde(
                "invalid value: vcpu_num, expected number of vCPUs exceeds the maximum limitation at line 1 column 16.",
              ),
        );
        expect((await fault("PUT", "/actions", '{"action_type":"InstanceStart"}')).text).toBe(
          JSON.stringify({
            fault_message: `${v17 ? "Start microvm error: " : ""}Cannot start microvm without kernel configuration.`,
          }),
        );
        expect((await fault("GET", "/balloon")).text).toBe(
          JSON.stringify({ fault_message: `${v17 ? "Balloon config error: " : ""}No balloon device found.` }),
        );
        expect((await fault("GET", "/drives/rootfs")).text).toBe(
          JSON.stringify({ fault_message: "Invalid request method and/or path: GET drives." }),
        );
        const missing = await fault(
          "PUT",
          "/drives/bad",
          '{"drive_id":"bad","path_on_host":"/nonexistent/disk.img","is_root_device":false,"is_read_only":false}',
        );
        expect(missing.text).toBe(
          JSON.stringify({
            fault_message: v17
              ? 'Drive config error: Unable to create the virtio block device: VirtioBackend(BackingFile(Os { code: 2, kind: NotFound, message: "No such file or directory" }, "/nonexistent/disk.img"))'
              : "Invalid block device path: /nonexistent/disk.img",
          }),
        );
        expect((await fault("PUT", "/metrics", '{"metrics_path":"/nonexistent/metrics.fifo"}')).text).toBe(
          JSON.stringify({
            fault_message: `${v17 ? "Metrics error: Cannot initialize the metrics system due to bad user input: " : ""}No such file or directory (os error 2)`,
          }),
        );

        expect((await fault("PUT", "/mmds")).text).toBe(
          JSON.stringify({ fault_message: "Empty PUT request." }),
        );
        expect((await fault("PUT", "/mmds", "[1,2]")).status).toBe(204);
        expect((await fault("PUT", "/mmds", '"s"')).status).toBe(204);
        expect(await fault("GET", "/mmds/latest")).toMatchObject({ status: 200, text: '"s"' });

        const log = path.join(dir, "log");
        await writeFile(log, "");
        const loud = await fault("PUT", "/logger", JSON.stringify({ log_path: log, level: "Loud" }));
        if (v15) expect(loud.text).toMatch(/Invalid LevelFilter at line 1 column \d+\."\}$/);
        else expect(loud.text).toMatch(/unknown variant `Loud`/);
        expect((await fault("PUT", "/logger", JSON.stringify({ log_path: log, level: "Info" }))).status).toBe(
          204,
        );
        const again = await fault("PUT", "/logger", JSON.stringify({ log_path: log, level: "Debug" }));
        expect(again.status).toBe(v15 ? 204 : 400);

        const disk = path.join(dir, "d.img");
        await writeFile(disk, "");
        const noReadOnly = await fault(
          "PUT",
          "/drives/d9",
          JSON.stringify({ drive_id: "d9", path_on_host: disk, is_root_device: false }),
        );
        expect(noReadOnly.status).toBe(v17 ? 204 : 400);

        expect(
          (await fault("PUT", "/vsock", JSON.stringify({ guest_cid: 2, uds_path: path.join(dir, "v.sock") })))
            .status,
        ).toBe(204);

        expect(
          (await fault("PUT", "/network-interfaces/eth0", '{"iface_id":"eth0","host_dev_name":"nosuchtap0"}'))
            .status,
        ).toBe(204);
        const v1 = await fault("PUT", "/mmds/config", '{"network_interfaces":["eth0"]}');
        expect(v1).toMatchObject({ status: 204, deprecated: v15 });
        const unknownIface = await fault("PUT", "/mmds/config", '{"network_interfaces":["eth9"]}');
        expect(unknownIface).toMatchObject({ status: 400, deprecated: v15 });
        expect(
          (await fault("PUT", "/mmds/config", '{"network_interfaces":["eth0"],"version":"V2"}')).deprecated,
        ).toBe(false);
      } finally {
        await client.close();
        await p.terminate();
        await removeTmp(dir);
      }
    });
  },
);
