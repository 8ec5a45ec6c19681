/**
 * The Firecracker hypervisor driver (the `Hypervisor` interface) against Firecracker and its
 * jailer: the fakes of each version, or real binaries (COCOON_FC_BIN / COCOON_JAILER_BIN).
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { emptyHypervisorConfig, type HypervisorConfig } from "../../../src/hypervisor/config.js";
import { FirecrackerHypervisor, UNIX_PATH_MAX } from "../../../src/hypervisor/firecracker/driver.js";
import type { CreateVmOptions } from "../../../src/hypervisor/hypervisor.js";
import { newHypervisor } from "../../../src/hypervisor/registry.js";
import "../../../src/hypervisor/drivers.js";
import { isProcessAlive } from "../../../src/host/proc.js";
import { mountsUnder, unmountAllUnder } from "../../../src/host/mount.js";
import { runChecked } from "../../../src/host/process.js";
import { FirecrackerClient } from "../../../src/vmm/firecracker/client.js";
import { silentLogger } from "../../../src/log.js";
import { Store } from "../../../src/store/store.js";
import { RuntimePaths } from "../../../src/store/paths.js";
import {
  VERSIONS,
  exists,
  guestKernel,
  guestRootfs,
  leaks,
  processesMentioning,
  removeTmp,
  kvmDeviceFor,
  shortTmp,
  skipUnlessBootable,
  target,
  type Target,
  echoReady,
} from "./helpers.js";

describe.each(VERSIONS)("Firecracker driver against %s", (label) => {
  let t: Target;
  const dirs: string[] = [];
  const drivers: FirecrackerHypervisor[] = [];

  beforeAll(async () => {
    t = await target(label);
  });

  afterEach(async () => {
    for (const d of drivers.splice(0)) {
      await d.cleanup();
      // The jail and the VM directory are gone.
      const created = (() => {
        try {
          return d.paths;
        } catch {
          return undefined;
        }
      })();
      if (created) expect(await exists(created.jailDir)).toBe(false);
    }
    for (const dir of dirs.splice(0)) {
      // Checked before, asserted after the removal: a failed check must not leave the directory.
      const left = await leaks(dir);
      await removeTmp(dir);
      expect(left).toEqual({ processes: [], mounts: [], sockets: [] });
    }
  });

  async function setup(o: { jailed?: boolean; id?: string; image?: boolean; debug?: boolean } = {}) {
    const dir = await shortTmp();
    dirs.push(dir);
    const config: HypervisorConfig = {
      ...emptyHypervisorConfig(),
      hypervisorPath: t.firecracker,
      jailerPath: (o.jailed ?? true) && t.jailer ? t.jailer : "",
      kernelPath: await guestKernel(dir),
      imagePath: o.image === false ? "" : await guestRootfs(dir),
      initrdPath: o.image === false ? await guestRootfs(dir, "initrd.img") : "",
      numVCPUs: 2,
      memorySize: 256,
      kernelParams: [
        { key: "quiet", value: "" },
        { key: "root", value: "/dev/vda" },
      ],
      debug: o.debug ?? false,
    };
    const paths = {
      vmDir: path.join(dir, "run", "vm", o.id ?? "sb1"),
      jailerBase: path.join(dir, "lib", "jails"),
    };
    await mkdir(paths.jailerBase, { recursive: true });
    const options: CreateVmOptions = { id: o.id ?? "sb1", config, paths };
    return { dir, config, paths, options };
  }

  function driver(stopTimeoutMs?: number): FirecrackerHypervisor {
    const d = new FirecrackerHypervisor(
      { logger: silentLogger() },
      {
        ...(stopTimeoutMs !== undefined ? { stopTimeoutMs } : {}),
        ...(kvmDeviceFor(t) ? { kvmDevice: kvmDeviceFor(t)! } : {}),
      },
    );
    drivers.push(d);
    return d;
  }

  it("is registered for the firecracker type and reports its capabilities", () => {
    const paths = new RuntimePaths({
      stateRoot: "/tmp/x/run",
      libRoot: "/tmp/x/lib",
      assetsDir: "/tmp/x/assets",
    });
    const hv = newHypervisor("firecracker", { logger: silentLogger(), store: new Store(paths) });
    expect(hv).toBeInstanceOf(FirecrackerHypervisor);
    expect(hv.capabilities()).toEqual({
      blockDeviceHotplug: true,
      fsSharing: false,
      networkDeviceHotplug: false,
      multiQueue: false,
    });
  });

  it("boots with queued devices, the drive pool, Firecracker's kernel params and a hybrid-vsock agent channel", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options, dir } = await setup();
    const d = driver();
    await d.createVM({ ...options, guestReady: echoReady });
    const data = await guestRootfs(dir, "data.img");
    await d.addDevice({ type: "block", id: "data-1", path: data, readOnly: true });
    await d.addDevice({ type: "net", id: "eth0", tapName: "tapfc0", mac: "06:00:AC:10:00:02" });
    await d.addDevice({ type: "vsock", guestCid: 42 });
    await d.startVM(20_000);
    const client = await FirecrackerClient.connect({ socketPath: d.paths.socketPath });
    try {
      const cfg = (await client.getVmConfig()).body as unknown as Record<string, unknown> & {
        drives: { drive_id: string; is_read_only: boolean; is_root_device: boolean; path_on_host: string }[];
        "boot-source": { boot_args: string };
      };
      expect(cfg.drives.map((x) => x.drive_id)).toEqual([
        "rootfs",
        ...Array.from({ length: 8 }, (_, i) => `drive_${i}`),
        "data_1",
      ]);
      expect(cfg.drives[0]).toMatchObject({ is_read_only: true, is_root_device: false });
      expect(cfg.drives.find((x) => x.drive_id === "data_1")).toMatchObject({ is_read_only: true });
      const args = cfg["boot-source"].boot_args;
      for (const p of [
        "pci=off",
        "reboot=k",
        "panic=1",
        "iommu=off",
        "8250.nr_uarts=0",
        "net.ifnames=0",
        "random.trust_cpu=on",
        "acpi=off",
        "quiet",
      ]) {
        expect(args.split(" ")).toContain(p);
      }
      // The configured root= overrides the seed's virtio-blk default in place.
      expect(args).toMatch(/^root=\/dev\/vda rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4 /);
      expect(cfg.vsock).toMatchObject({ guest_cid: 42 });
      expect(cfg["network-interfaces"]).toEqual([
        expect.objectContaining({
          iface_id: "eth0",
          host_dev_name: "tapfc0",
          guest_mac: "06:00:AC:10:00:02",
        }),
      ]);
      expect((await client.describeInstance()).body.state).toBe("Running");
      if (t.jailer) {
        // Firecracker sees jail paths.
        expect(cfg.drives[0]!.path_on_host).toBe("/rootfs");
      }
    } finally {
      await client.close();
    }
    const channel = d.agentChannel();
    expect(channel).toEqual({ kind: "hvsock", path: path.join(d.paths.root, "v.sock"), port: 1024 });
    const threads = await d.getThreadIDs();
    expect([...threads.vcpus.keys()].sort()).toEqual([0, 1]);
    expect(d.getPids()).toHaveLength(1);
    await d.check();
  });

  it("hotplugs a block device by swapping a placeholder's backing file, and unplugs it", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options, dir } = await setup();
    const d = driver();
    await d.createVM(options);
    await d.startVM(20_000);
    const disk = await guestRootfs(dir, "hot.img");
    const attached = await d.hotplugAddDevice({ type: "block", id: "hot", path: disk });
    expect(attached).toMatchObject({ index: 0, guestPath: "/dev/vdb" });
    const second = await d.hotplugAddDevice({ type: "block", id: "hot2", path: disk, index: 5 });
    expect(second).toMatchObject({ index: 5, guestPath: "/dev/vdg" });
    expect(d.save().blockIndexMap).toEqual([0, 5]);
    const client = await FirecrackerClient.connect({ socketPath: d.paths.socketPath });
    const drive0 = async () =>
      (
        (await client.getVmConfig()).body as unknown as {
          drives: { drive_id: string; path_on_host: string }[];
        }
      ).drives.find((x) => x.drive_id === "drive_0")!;
    try {
      expect((await drive0()).path_on_host).toMatch(/hotplug\/drive_0$/);
      await d.hotplugRemoveDevice({ type: "block", id: "hot", path: disk });
      expect((await drive0()).path_on_host).toMatch(/\/drive_0$/);
      expect((await drive0()).path_on_host).not.toMatch(/hotplug/);
    } finally {
      await client.close();
    }
    await expect(
      d.hotplugAddDevice({ type: "net", id: "n", tapName: "t", mac: "06:00:00:00:00:01" }),
    ).rejects.toThrow(/cannot hotplug net/);
    await expect(d.hotplugRemoveDevice({ type: "block", id: "nope", path: disk })).rejects.toThrow(
      /not attached/,
    );
    for (let i = 0; i < 7; i++) await d.hotplugAddDevice({ type: "block", id: `fill${i}`, path: disk });
    await expect(d.hotplugAddDevice({ type: "block", id: "one-too-many", path: disk })).rejects.toThrow(
      /all 8 Firecracker drive slots are in use/,
    );
  });

  it("refuses a hotplug the jailed Firecracker cannot see (bind mount after start), leaving nothing mounted", async (ctx) => {
    skipUnlessBootable(t, ctx);
    // A disk on another filesystem than the jail cannot be hard-linked: it would be bind-mounted.
    const elsewhere = await mkdtemp("/dev/shm/cfc-").catch(() => undefined);
    if (!t.jailer || process.getuid?.() !== 0 || !elsewhere) return ctx.skip();
    try {
      const { options, dir } = await setup();
      if ((await stat(elsewhere)).dev === (await stat(dir)).dev) return ctx.skip();
      const d = driver();
      await d.createVM(options);
      await d.startVM(20_000);
      const disk = path.join(elsewhere, "hot.img");
      await writeFile(disk, "not empty");
      const err = await d.hotplugAddDevice({ type: "block", id: "hot", path: disk }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "ERR_NOT_SUPPORTED" });
      expect((err as Error).message).toMatch(/does not see it at \/hotplug\/drive_0/);
      expect(d.save().blockIndexMap).toEqual([]);
      expect(await mountsUnder(dir)).toEqual([]);
      // A disk on the jail's filesystem is hard-linked, and Firecracker sees it.
      const near = await guestRootfs(dir, "near.img");
      expect(await d.hotplugAddDevice({ type: "block", id: "near", path: near })).toMatchObject({ index: 0 });
    } finally {
      await rm(elsewhere, { recursive: true, force: true });
    }
  });

  it("pauses, saves into the jail and the template paths, resumes", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options, dir } = await setup();
    const d = driver();
    const tpl = {
      ...options,
      config: {
        ...options.config,
        bootToBeTemplate: true,
        memoryPath: path.join(dir, "tpl", "mem"),
        devicesStatePath: path.join(dir, "tpl", "state"),
      },
    };
    await d.createVM(tpl);
    await d.startVM(20_000);
    await expect(d.saveVM()).rejects.toThrow(/must be paused/);
    await d.pauseVM();
    await d.saveVM();
    expect(await exists(path.join(dir, "tpl", "mem"))).toBe(true);
    expect(await exists(path.join(dir, "tpl", "state"))).toBe(true);
    await d.resumeVM();
    await d.check();
  });

  it("stops with SIGTERM, and escalates to SIGKILL when Firecracker ignores it", async (ctx) => {
    if (t.real) return ctx.skip();
    const { options } = await setup({ jailed: false });
    const d = driver(300);
    await d.createVM(options);
    process.env.FAKE_FC_IGNORE_SIGTERM = "1";
    try {
      await d.startVM(20_000);
    } finally {
      delete process.env.FAKE_FC_IGNORE_SIGTERM;
    }
    const pid = d.getPids()[0]!;
    const t0 = Date.now();
    await d.stopVM();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(await isProcessAlive(pid)).toBe(false);
    expect(d.getPids()).toEqual([]);
    await d.stopVM(); // again: nothing to do
  });

  it("hands a running VM to another driver instance through save/load", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options, dir } = await setup();
    const first = driver();
    await first.createVM(options);
    await first.startVM(20_000);
    const disk = await guestRootfs(dir, "hot.img");
    await first.hotplugAddDevice({ type: "block", id: "hot", path: disk });
    const state = JSON.parse(JSON.stringify(first.save())) as ReturnType<typeof first.save>;
    first.disconnect();

    const second = driver();
    second.load(state);
    expect(second.getPids()).toEqual(first.getPids());
    await second.check();
    await second.pauseVM();
    await second.resumeVM();
    await second.hotplugRemoveDevice({ type: "block", id: "hot", path: disk });
    expect((await second.getThreadIDs()).vcpus.size).toBe(2);
    const pid = second.getPids()[0]!;
    await second.stopVM();
    expect(await isProcessAlive(pid)).toBe(false);
    await second.cleanup();
    expect(await exists(second.paths.jailDir)).toBe(false);
    expect(() => second.load({ ...state, driver: { ...state.driver, slots: "nope" } })).toThrow(
      /driver state is invalid at slots/,
    );
  });

  it("boots from an initrd (no rootfs drive, no root= defaults)", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options } = await setup({ image: false });
    const d = driver();
    await d.createVM({ ...options, config: { ...options.config, kernelParams: [] } });
    await d.startVM(20_000);
    const client = await FirecrackerClient.connect({ socketPath: d.paths.socketPath });
    try {
      const cfg = (await client.getVmConfig()).body as unknown as {
        drives: { drive_id: string }[];
        "boot-source": { boot_args: string; initrd_path: string | null };
      };
      expect(cfg.drives[0]!.drive_id).toBe("drive_0");
      expect(cfg["boot-source"].initrd_path).toBeTruthy();
      expect(cfg["boot-source"].boot_args).not.toMatch(/root=/);
    } finally {
      await client.close();
    }
  });

  it("refuses a configuration whose API socket path exceeds the unix socket limit", async () => {
    const { options, dir } = await setup();
    const d = driver();
    const deep = path.join(dir, "x".repeat(60), "y".repeat(40));
    const err = await d
      .createVM({ ...options, paths: { ...options.paths, jailerBase: deep } })
      .catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("ERR_INVALID_CONFIG");
    expect((err as Error).message).toMatch(new RegExp(`unix sockets allow at most ${UNIX_PATH_MAX}`));
    expect((err as { hint?: string }).hint).toMatch(/shorter/);
  });

  it("refuses to start over a jail whose Firecracker is still running", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options } = await setup();
    const a = driver();
    await a.createVM(options);
    await a.startVM(20_000);
    const b = driver();
    await b.createVM(options);
    const err = await b.startVM(5_000).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("ERR_ALREADY_EXISTS");
    await a.check(); // untouched
  });

  it("fails a boot whose guest never gets ready, with a timeout, and leaves nothing running", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options } = await setup();
    const d = driver();
    await d.createVM({
      ...options,
      guestReady: (_c, signal) =>
        new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")))),
    });
    const err = await d.startVM(1_500).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("ERR_VMM_TIMEOUT");
    expect(d.getPids()).toEqual([]);
  });

  it("reports a Firecracker that dies at once, with its output", async (ctx) => {
    if (t.real) return ctx.skip();
    const { options, dir } = await setup({ jailed: false });
    const d = driver();
    // A Firecracker whose API socket path already exists refuses to start.
    await d.createVM(options);
    const bogus = path.join(dir, "not-firecracker.sh");
    await writeFile(
      bogus,
      "#!/bin/sh\necho 'Firecracker v1.0.0' ; [ \"$1\" = --version ] && exit 0; echo boom >&2; exit 3\n",
      { mode: 0o755 },
    );
    const e = new FirecrackerHypervisor({ logger: silentLogger() });
    drivers.push(e);
    await e.createVM({
      ...options,
      id: "sb2",
      paths: { ...options.paths, vmDir: path.join(dir, "run", "vm", "sb2") },
      config: { ...options.config, hypervisorPath: bogus },
    });
    const err = await e.startVM(5_000).catch((x: unknown) => x);
    expect((err as { code?: string }).code).toBe("ERR_VMM_START");
    expect((err as Error).message).toMatch(/boom/);
  });

  it("cleans up twice, unmounting and removing the jail and the VM directory", async (ctx) => {
    skipUnlessBootable(t, ctx);
    const { options, dir } = await setup();
    // Bind mounts made after the jailer started reach Firecracker only through a shared jail base.
    const base = options.paths.jailerBase;
    await runChecked("mount", ["--bind", base, base]);
    await runChecked("mount", ["--make-rshared", base]);
    try {
      const d = driver();
      await d.createVM({
        ...options,
        config: { ...options.config, hypervisorParams: [{ key: "jail_resources", value: "bind" }] },
      });
      await d.startVM(20_000);
      const disk = await guestRootfs(dir, "hot.img");
      await d.hotplugAddDevice({ type: "block", id: "hot", path: disk, readOnly: true });
      expect((await leaks(dir)).mounts.length).toBeGreaterThan(0); // kernel, rootfs, hotplugged disk
      // A read-only bind: writes through the jail path fail, the source is untouched.
      const hot = path.join(d.paths.root, "hotplug", "drive_0");
      await expect(writeFile(hot, "x")).rejects.toThrow(/read-only/i);
      const { jailDir } = d.paths;
      await d.cleanup();
      await d.cleanup();
      expect(await exists(jailDir)).toBe(false);
      expect(await exists(options.paths.vmDir)).toBe(false);
      expect((await stat(disk)).size).toBe(1024 * 1024);
      expect(await processesMentioning(dir)).toEqual([]);
      expect(await readFile(options.config.kernelPath)).toBeTruthy();
    } finally {
      await unmountAllUnder(base, { lazy: true });
    }
  });
});
