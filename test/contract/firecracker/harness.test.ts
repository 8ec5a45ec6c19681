/**
 * The MicroVM harness against Firecracker and its jailer (the fakes of each version, or real
 * binaries): jailed spawn and pid discovery, configuration, boot, the post-boot refusals,
 * drive patching, snapshots and restore, vsock, logger/metrics FIFOs, MMDS, balloon, pinning,
 * kill (also in a new pid namespace) and a cleanup that leaves nothing behind.
 */
import { chmod, mkdir, readFile, readdir, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { isProcessAlive } from "../../../src/host/proc.js";
import { FirecrackerApiError } from "../../../src/vmm/firecracker/errors.js";
import { MicroVM, type MicroVMOptions } from "../../../src/vmm/firecracker/microvm.js";
import { MmdsGuestClient } from "../../../src/vmm/firecracker/mmds.js";
import { metric, parseLogLine } from "../../../src/vmm/firecracker/telemetry.js";
import { getAffinity, listThreads, vcpuThreads } from "../../../src/vmm/firecracker/threads.js";
import { atLeast, parseVersion } from "../../../src/vmm/firecracker/version.js";
import {
  VERSIONS,
  exists,
  guestKernel,
  guestRootfs,
  leaks,
  removeTmp,
  microVmOptions,
  shortTmp,
  skipUnlessBootable,
  target,
  type Target,
} from "./helpers.js";

describe.each(VERSIONS)("MicroVM harness against %s", (label) => {
  let t: Target;
  const dirs: string[] = [];
  const vms: MicroVM[] = [];

  beforeAll(async () => {
    t = await target(label);
  });

  afterEach(async () => {
    for (const vm of vms.splice(0)) {
      await vm.cleanup();
      // The resource directory and the jail (when one was made) are gone.
      expect(await exists(vm.path)).toBe(false);
      if (vm.firecrackerPid !== undefined) expect(await exists(path.dirname(vm.chroot))).toBe(false);
    }
    for (const dir of dirs.splice(0)) {
      // Checked before, asserted after the removal: a failed check must not leave the directory.
      const left = await leaks(dir);
      await removeTmp(dir);
      expect(left).toEqual({ processes: [], mounts: [], sockets: [] });
    }
  });

  async function newVm(o: Partial<MicroVMOptions> = {}): Promise<{ vm: MicroVM; dir: string }> {
    const dir = await shortTmp();
    dirs.push(dir);
    const vm = await MicroVM.create({ ...microVmOptions(t, dir), ...o });
    await mkdir(o.chrootBaseDir ?? path.join(dir, "jails"), { recursive: true });
    vm.kernelFile = await guestKernel(dir);
    vm.rootfsFile = await guestRootfs(dir);
    vms.push(vm);
    return { vm, dir };
  }

  const v = () => parseVersion(t.version);
  const jailedOnly = () => !t.jailer;

  it("spawns through the jailer and finds Firecracker's pid the way this version needs", async (ctx) => {
    if (jailedOnly()) return ctx.skip();
    const { vm } = await newVm({ jailer: { daemonize: true } });
    await vm.spawn();
    const pid = vm.firecrackerPid!;
    expect(await isProcessAlive(pid)).toBe(true);
    const pidFile = vm.pidFile!;
    if (atLeast(v(), "1.7.0")) {
      // 1.7+: --daemonize double-forks; the pid file names Firecracker, not the spawned jailer.
      expect(Number(await readFile(pidFile, "utf8"))).toBe(pid);
      expect(vm.spawnedProcess!.pid).not.toBe(pid);
      expect((await vm.spawnedProcess!.exited).code).toBe(0);
    } else {
      // 1.0: --daemonize is setsid() in place: the spawned jailer became Firecracker, no pid file.
      expect(vm.spawnedProcess!.pid).toBe(pid);
      expect(await exists(pidFile)).toBe(false);
    }
    // The real chroot layout.
    const root = vm.chroot;
    expect(root).toBe(
      path.join(path.dirname(path.dirname(vm.chroot)), path.basename(path.dirname(vm.chroot)), "root"),
    );
    for (const f of ["firecracker", "dev/kvm", "dev/net/tun", "dev/urandom", "run/firecracker.socket"])
      expect(await exists(path.join(root, f))).toBe(true);
    expect((await stat(path.join(root, "firecracker"))).nlink).toBe(1);
    expect(await vm.state()).toBe("Not started");
  });

  it("boots, then refuses a drive PUT after boot and accepts a PATCH that swaps the backing file", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { vm, dir } = await newVm();
    await vm.spawn();
    await vm.basicConfig({
      vcpuCount: 2,
      memSizeMib: 256,
      bootArgs: "console=ttyS0 reboot=k panic=1 pci=off",
    });
    const scratch = await guestRootfs(dir, "scratch.img");
    await vm.addDrive("scratch", scratch);
    await vm.start();
    const err = await vm.addDrive("late", scratch).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FirecrackerApiError);
    expect((err as FirecrackerApiError).status).toBe(400);
    if (!t.real || !atLeast(v(), "1.16.0")) {
      expect((err as FirecrackerApiError).faultMessage).toMatch(
        atLeast(v(), "1.16.0")
          ? /PCI is not enabled/
          : /^The requested operation is not supported after starting the microVM\.$/,
      );
    }
    const other = await guestRootfs(dir, "other.img");
    await vm.patchDrive("scratch", other);
    const cfg = (await vm.client.getVmConfig()).body as {
      drives: { drive_id: string; path_on_host: string }[];
    };
    const patched = cfg.drives.find((d) => d.drive_id === "scratch")!;
    expect(patched.path_on_host).toMatch(/other\.img$/);
    await expect(vm.client.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128 })).rejects.toThrow(
      /not supported after starting the microVM/,
    );
  });

  it("captures the serial console of an unjailed VM", async (ctx) => {
    if (t.real) return ctx.skip();
    const { vm } = await newVm();
    await vm.spawn({ jailed: false });
    await vm.basicConfig({ bootArgs: "console=ttyS0" });
    await vm.start();
    expect(await vm.consoleData()).toMatch(/Linux version .*\n.*Command line: console=ttyS0/);
  });

  it("refuses a snapshot while running, then snapshots (full and diff) when paused, and restores", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { vm, dir } = await newVm();
    await vm.spawn();
    await vm.basicConfig({ trackDirtyPages: true });
    await vm.addVsock(3);
    await vm.start();
    const running = await vm.client
      .createSnapshot({ snapshot_path: "/vmstate", mem_file_path: "/mem" })
      .catch((e: unknown) => e);
    expect(running).toBeInstanceOf(FirecrackerApiError);
    expect((running as FirecrackerApiError).faultMessage).toBe(
      "Cannot save the microVM state: Operation not allowed: save/restore unavailable while running",
    );
    const full = await vm.snapshotFull();
    expect(await vm.state()).toBe("Paused");
    expect((await stat(full.mem)).size).toBe(256 * 1024 * 1024);
    expect(await exists(full.vmstate)).toBe(true);
    const diff = await vm.snapshotDiff();
    expect(diff.type).toBe("Diff");
    await vm.resume();
    await vm.kill();

    // Restore into a fresh process, same id and paths.
    const { vm: restored } = await newVm({ id: vm.id, chrootBaseDir: path.join(dir, "jails2") });
    await restored.spawn();
    await restored.restoreFromSnapshot(full, { resume: true });
    expect(await restored.state()).toBe("Running");
  });

  it("restores with the Uffd backend where the version has it", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { vm, dir } = await newVm();
    await vm.spawn();
    await vm.basicConfig({ memSizeMib: 128 });
    await vm.start();
    const snap = await vm.snapshotFull();
    await vm.kill();
    const { vm: fresh } = await newVm({ id: vm.id, chrootBaseDir: path.join(dir, "jails3") });
    await fresh.spawn();
    const uffdSock = path.join(dir, "uffd.sock");
    const got: string[] = [];
    const handler = net.createServer((s) => s.on("data", (c: Buffer) => got.push(c.toString())));
    await new Promise<void>((r) => handler.listen(uffdSock, () => r()));
    try {
      if (!atLeast(v(), "1.1.0")) {
        await expect(
          fresh.restoreFromSnapshot(snap, { backend: "Uffd", uffdSocket: uffdSock }),
        ).rejects.toThrow(/Uffd backend was added in 1\.1\.0/);
        return;
      }
      if (t.real) return; // a real restore would wait for page faults to be served
      await fresh.restoreFromSnapshot(snap, { backend: "Uffd", uffdSocket: uffdSock });
      expect(await fresh.state()).toBe("Paused");
      await new Promise((r) => setTimeout(r, 50));
      const regions = JSON.parse(got.join("")) as { size: number; page_size: number }[];
      expect(regions[0]).toMatchObject({ size: 128 * 1024 * 1024, page_size: 4096 });
    } finally {
      handler.close();
    }
  });

  it("a failed snapshot load makes Firecracker exit", async () => {
    const { vm } = await newVm();
    await vm.spawn();
    const err = await vm.client
      .loadSnapshot(
        atLeast(v(), "1.1.0")
          ? { snapshot_path: "/nonexistent", mem_backend: { backend_type: "File", backend_path: "/mem" } }
          : { snapshot_path: "/nonexistent", mem_file_path: "/mem" },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FirecrackerApiError);
    expect((err as FirecrackerApiError).faultMessage).toMatch(
      atLeast(v(), "1.7.0")
        ? /^Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: No such file or directory/
        : atLeast(v(), "1.5.0")
          ? /^Load microVM snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: No such file or directory/
          : /^Load microVM snapshot error: Cannot perform open on the snapshot backing file/,
    );
    const deadline = Date.now() + 5_000;
    while ((await isProcessAlive(vm.firecrackerPid!)) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(await isProcessAlive(vm.firecrackerPid!)).toBe(false);
  });

  it("speaks hybrid vsock: CONNECT/OK with echo, and guest-initiated connections on <uds>_<port>", async (ctx) => {
    if (t.real) return ctx.skip(); // needs a guest program listening and dialing
    const { vm } = await newVm();
    await vm.spawn({ env: { ...process.env, FAKE_FC_GUEST_DIAL: "5000" } });
    await vm.basicConfig();
    const uds = await vm.addVsock(7);
    const dialed = new Promise<string>((resolve) => {
      void vm.vsockListen(5000, (sock) => sock.once("data", (c: Buffer) => resolve(c.toString())));
    });
    await expect(vm.vsockConnect(1024, { timeoutMs: 200, attemptTimeoutMs: 100 })).rejects.toThrow(
      /no guest program accepted vsock port 1024/,
    );
    await vm.start();
    const { socket, hostPort } = await vm.vsockConnect(1024);
    expect(hostPort).toBeGreaterThanOrEqual(2 ** 30);
    socket.write("ping\n");
    const echo = await new Promise<string>((resolve) =>
      socket.once("data", (c: Buffer) => resolve(c.toString())),
    );
    expect(echo).toBe("ping\n");
    socket.destroy();
    expect(await dialed).toBe("hello from cid 7 port 5000\n");
    expect(uds.endsWith("v.sock")).toBe(true);
  });

  it("reads the logger FIFO and flushes metrics through the metrics FIFO", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { vm } = await newVm();
    await vm.spawn({ logLevel: "Debug" });
    await vm.waitForLog(`Running Firecracker v${t.version}`);
    await vm.basicConfig();
    await vm.start();
    const line = await vm.waitForLog('request on "/actions"');
    const rec = parseLogLine(line)!;
    expect(rec.instanceId).toBe(vm.id);
    expect(rec.level).toBe("INFO");
    const m = await vm.flushMetrics();
    expect(m.utc_timestamp_ms).toBeGreaterThan(0);
    expect(metric(m, "put_api_requests", "actions_count")).toBeGreaterThanOrEqual(1);
    for (const group of [
      "api_server",
      "block",
      "get_api_requests",
      "latencies_us",
      "logger",
      "vcpu",
      "vmm",
      "vsock",
    ])
      expect(m).toHaveProperty(group);
  });

  it("configures MMDS (V1 and V2), stores data, and serves the guest side with session tokens", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { vm, dir } = await newVm();
    await vm.spawn({ env: { ...process.env, FAKE_FC_MMDS_GUEST: "1" } });
    await vm.basicConfig();
    await expect(vm.configureMmds({ version: "V2", networkInterfaces: [] })).rejects.toThrow(
      /The list of network interface IDs that allow forwarding MMDS requests is empty\./,
    );
    await vm.addNetIface({ createTap: false, tapName: `t${vm.id.slice(-6)}` });
    await vm.configureMmds({ version: "V2" });
    const file = path.join(dir, "meta.json");
    await writeFile(file, JSON.stringify({ latest: { "meta-data": { id: "abc" } } }));
    await vm.putMmdsFromFile(file);
    await vm.client.patchMmds({ latest: { "meta-data": { zone: "z1" } } });
    expect((await vm.client.getMmds()).body).toEqual({ latest: { "meta-data": { id: "abc", zone: "z1" } } });
    await vm.start();
    if (t.real) return;
    const guest = new MmdsGuestClient({ version: "V2", socketPath: `${vm.apiSocketPath}.mmds` });
    const noToken = new MmdsGuestClient({ version: "V1", socketPath: `${vm.apiSocketPath}.mmds` });
    try {
      expect(await guest.getJson("/latest/meta-data")).toEqual({ id: "abc", zone: "z1" });
      expect((await guest.get("/latest/meta-data")).body).toBe("id\nzone");
      expect((await noToken.get("/latest/meta-data")).status).toBe(401);
    } finally {
      await guest.close();
      await noToken.close();
    }
  });

  it("adds a balloon with statistics and changes its target after boot", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { vm } = await newVm();
    await vm.spawn();
    await vm.basicConfig({ memSizeMib: 256 });
    await vm.addBalloon({ amountMib: 0, statsPollingIntervalS: 1 });
    await expect(vm.balloonStats()).rejects.toThrow(/not supported before starting/);
    await vm.start();
    await vm.client.patchBalloon({ amount_mib: 64 });
    const stats = await vm.balloonStats();
    expect(stats.target_mib).toBe(64);
    if (!t.real) expect(stats.actual_pages).toBe(64 * 256);
  });

  it("pins the VMM, API and vCPU threads by name", async (ctx) => {
    skipUnlessBootable(t, ctx);
    if (os.cpus().length < 1) return ctx.skip();
    const { vm } = await newVm();
    await vm.spawn();
    await vm.basicConfig({ vcpuCount: 2 });
    await vm.start();
    const pid = vm.firecrackerPid!;
    const vcpus = await vcpuThreads(pid);
    expect([...vcpus.keys()].sort()).toEqual([0, 1]);
    expect(await vm.pinVcpu(1, 0)).toBe(true);
    expect(await getAffinity(vcpus.get(1)!)).toEqual([0]);
    expect(await vm.pinVmm(0)).toBe(true);
    expect(await vm.pinApi(0)).toBe(true);
    const api = (await listThreads(pid)).find((th) => th.name === "fc_api")!;
    expect(await getAffinity(api.tid)).toEqual([0]);
    expect(await vm.pinVcpu(5, 0)).toBe(false);
  });

  it("kills a Firecracker the jailer started in a new pid namespace, found through the pid file", async (ctx) => {
    if (jailedOnly()) return ctx.skip();
    const { vm } = await newVm({ jailer: { newPidNs: true, daemonize: false } });
    await vm.spawn();
    const pid = vm.firecrackerPid!;
    expect(Number(await readFile(vm.pidFile!, "utf8"))).toBe(pid);
    expect(vm.spawnedProcess!.pid).not.toBe(pid);
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    expect(/^NSpid:\s+\d+\s+1$/m.test(status)).toBe(true); // pid 1 of its own namespace
    await vm.kill();
    expect(await isProcessAlive(pid)).toBe(false);
  });

  it("refuses to jail an id whose jail is in use, and re-jails over a stale one", async (ctx) => {
    if (jailedOnly()) return ctx.skip();
    const { vm, dir } = await newVm({ id: "same-id" });
    await vm.spawn();
    const twin = await MicroVM.create({
      id: "same-id",
      firecrackerPath: t.firecracker,
      jailerPath: t.jailer!,
      resourceDir: path.join(dir, "res2"),
      chrootBaseDir: path.join(dir, "jails"),
    });
    vms.push(twin);
    const err = await twin.spawn().catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("ERR_ALREADY_EXISTS");
    expect((err as Error).message).toMatch(/already exists and a Firecracker is running in it/);
    await vm.kill();
    // The jail is now stale (files, device nodes, maybe a pid file): spawning again removes it first.
    await twin.spawn();
    expect(await twin.state()).toBe("Not started");
  });

  it("creates the tap in the VM's network namespace, with the guest MAC derived from the guest IP", async (ctx) => {
    if (process.getuid?.() !== 0 || jailedOnly()) return ctx.skip();
    const ns = `cfc${Math.random().toString(16).slice(2, 8)}`;
    const { createNetns, deleteNetns, linkExists } = await import("../../../src/network/tap.js");
    await createNetns(ns);
    try {
      const { vm } = await newVm({ netns: ns });
      await vm.spawn();
      const iface = await vm.addNetIface({
        index: 3,
        rxRateLimiter: { bandwidth: { size: 1_000_000, refill_time: 100 } },
      });
      expect(iface).toMatchObject({
        ifaceId: "eth3",
        tapName: "tap3",
        guestIp: "192.168.3.2",
        guestMac: "06:00:C0:A8:03:02",
      });
      expect(await linkExists("tap3", ns)).toBe(true);
      await vm.cleanup();
      expect(await linkExists("tap3", ns)).toBe(false);
    } finally {
      await deleteNetns(ns);
    }
  });

  it("refuses to start without KVM, saying so, before asking Firecracker", async () => {
    const { vm, dir } = await newVm({ kvmDevice: "/nonexistent/kvm" });
    await vm.spawn({ jailed: false });
    await vm.basicConfig();
    const err = await vm.start().catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "ERR_VMM_START",
      message: "Firecracker cannot boot a guest: /nonexistent/kvm does not exist: this host has no KVM",
    });
    expect((err as { hint?: string }).hint).toMatch(/kvm group/);
    expect(await vm.state()).toBe("Not started");
    expect(await exists(path.join(dir, "res"))).toBe(true);
  });

  it("reports what a Firecracker without KVM says: v1.0's panic from its log, later versions' refusal", async (ctx) => {
    if (t.real) return ctx.skip(); // a real Firecracker cannot be shown a missing /dev/kvm here
    const { vm } = await newVm();
    await vm.spawn({ jailed: false, env: { ...process.env, FAKE_FC_KVM_DEVICE: "/nonexistent/kvm" } });
    await vm.basicConfig();
    const err = await vm.start().catch((e: unknown) => e);
    if (atLeast(v(), "1.5.0")) {
      expect(err).toBeInstanceOf(FirecrackerApiError);
      expect((err as FirecrackerApiError).faultMessage).toMatch(/Error creating KVM object/);
    } else {
      // The client saw only the connection close; the message is Firecracker's panic line.
      expect(err).toMatchObject({ code: "ERR_VMM_EXITED" });
      expect((err as Error).message).toMatch(
        /^Firecracker died during InstanceStart: .*Firecracker panicked at 'Error creating the Kvm object: Error\(2\)'/,
      );
      expect((err as { hint?: string }).hint).toMatch(/\/dev\/kvm/);
    }
  });

  it("removes the cgroups the jailer made (v1) in cleanup, and refuses a controller the host lacks", async (ctx) => {
    const cpuset = "/sys/fs/cgroup/cpuset";
    if (jailedOnly() || process.getuid?.() !== 0 || !(await exists(path.join(cpuset, "cgroup.procs"))))
      return ctx.skip(); // needs the jailer, root and a cgroup v1 cpuset hierarchy
    const { vm } = await newVm({
      jailer: { cgroups: ["cpuset.cpus=0", "cpuset.mems=0"], cgroupVersion: 1 },
    });
    await vm.spawn();
    const dir = path.join(cpuset, "firecracker", vm.id);
    expect(await readFile(path.join(dir, "cpuset.cpus"), "utf8")).toBe("0\n");
    expect(await readFile(`/proc/${vm.firecrackerPid!}/cgroup`, "utf8")).toMatch(
      new RegExp(`:cpuset:/firecracker/${vm.id}$`, "m"),
    );
    await vm.cleanup();
    expect(await exists(dir)).toBe(false);

    // A controller the host does not offer: refused before the jailer runs (it would abort).
    const other = await newVm({ jailer: { cgroups: ["bogus.weight=100"], cgroupVersion: 2 } });
    const err = await other.vm.spawn().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ERR_CGROUP" });
    expect((err as Error).message).toMatch(/cgroup v2 controller bogus/);
    expect(await exists(path.join(other.dir, "jails", "firecracker", other.vm.id))).toBe(false);
  });

  it("runs Firecracker as the jailer's uid/gid", async (ctx) => {
    skipUnlessBootable(t, ctx);
    if (jailedOnly() || process.getuid?.() !== 0) return ctx.skip();
    const { vm, dir } = await newVm({ jailer: { uid: 1234, gid: 1234 } });
    // The fake cannot chroot: the uid must be able to reach the jail through the test directory.
    await chmod(dir, 0o755);
    await vm.spawn();
    expect(await readFile(`/proc/${vm.firecrackerPid}/status`, "utf8")).toMatch(/^Uid:\s+1234\s/m);
    expect((await stat(vm.chroot)).uid).toBe(1234);
    await vm.basicConfig({ addRootDevice: false });
    await vm.start();
    expect((await vm.flushMetrics()).utc_timestamp_ms).toBeGreaterThan(0);
  });

  it("cleans up everything, twice", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { vm, dir } = await newVm();
    await vm.spawn();
    await vm.basicConfig();
    await vm.start();
    const chroot = vm.chroot;
    await vm.cleanup();
    await vm.cleanup();
    expect(await exists(path.dirname(chroot))).toBe(false);
    expect(await exists(vm.path)).toBe(false);
    expect(await leaks(dir)).toEqual({ processes: [], mounts: [], sockets: [] });
    const left = await readdir(dir);
    expect(left.filter((f) => f === "res")).toEqual(["res"]); // the parent dirs are the test's own
  });
});
