/**
 * Firecracker on the sandbox network model: the VMM runs in the sandbox's network namespace
 * (jailed: the jailer's --netns; unjailed: nsenter), opens its taps there by name, and a
 * namespace or interface it cannot use fails the start cleanly. Against the fakes of each
 * version, or real binaries (COCOON_FC_BIN / COCOON_JAILER_BIN). Making namespaces needs root.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readlink, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { pino, type Logger } from "pino";
import { afterEach, beforeAll, describe, expect, it, type TestContext } from "vitest";
import { emptyHypervisorConfig, type HypervisorConfig } from "../../../src/hypervisor/config.js";
import { FirecrackerHypervisor } from "../../../src/hypervisor/firecracker/driver.js";
import type { CreateVmOptions } from "../../../src/hypervisor/hypervisor.js";
import { isProcessAlive } from "../../../src/host/proc.js";
import { silentLogger } from "../../../src/log.js";
import { createNetns, deleteNetns, linkExists } from "../../../src/network/tap.js";
import { FirecrackerClient } from "../../../src/vmm/firecracker/client.js";
import { MicroVM } from "../../../src/vmm/firecracker/microvm.js";
import {
  VERSIONS,
  exists,
  guestKernel,
  guestRootfs,
  kvmDeviceFor,
  microVmOptions,
  leaks,
  removeTmp,
  shortTmp,
  skipUnlessBootable,
  target,
  type Target,
} from "./helpers.js";

const isRoot = process.getuid?.() === 0;

/** A logger whose records the test can read (the driver logs the pid it launched). */
function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: "info" },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { logger, lines };
}

/** The network namespace a process is in, as "net:[inode]". */
function netnsOf(pid: number): Promise<string> {
  return readlink(`/proc/${pid}/ns/net`);
}

/** The same for a namespace handle (/var/run/netns/NAME). */
async function netnsOfHandle(handle: string): Promise<string> {
  return `net:[${(await stat(handle)).ino}]`;
}

describe.each(VERSIONS)("Firecracker in a sandbox network namespace, against %s", (label) => {
  let t: Target;
  const dirs: string[] = [];
  const namespaces: string[] = [];
  const drivers: FirecrackerHypervisor[] = [];
  const vms: MicroVM[] = [];

  beforeAll(async () => {
    t = await target(label);
  });

  afterEach(async () => {
    for (const d of drivers.splice(0)) await d.cleanup();
    for (const vm of vms.splice(0)) await vm.cleanup();
    for (const ns of namespaces.splice(0)) await deleteNetns(ns);
    for (const dir of dirs.splice(0)) {
      const left = await leaks(dir);
      await removeTmp(dir);
      expect(left).toEqual({ processes: [], mounts: [], sockets: [] });
    }
  });

  async function netns(): Promise<{ name: string; path: string }> {
    const name = `cfcn-${randomBytes(3).toString("hex")}`;
    const p = await createNetns(name);
    namespaces.push(name);
    return { name, path: p };
  }

  /** Skips what this target cannot run: jailed without a jailer, namespaces without root. */
  function needs(ctx: TestContext, o: { jailed: boolean; root: boolean }): void {
    if (o.jailed && !t.jailer) ctx.skip();
    if (o.root && !isRoot) ctx.skip();
  }

  async function setup(o: { jailed: boolean; netnsPath?: string; firecracker?: string; jailer?: string }) {
    const dir = await shortTmp();
    dirs.push(dir);
    const config: HypervisorConfig = {
      ...emptyHypervisorConfig(),
      hypervisorPath: o.firecracker ?? t.firecracker,
      jailerPath: o.jailed ? (o.jailer ?? t.jailer!) : "",
      kernelPath: await guestKernel(dir),
      imagePath: await guestRootfs(dir),
      numVCPUs: 1,
      memorySize: 128,
    };
    const paths = { vmDir: path.join(dir, "run", "vm", "sb1"), jailerBase: path.join(dir, "lib", "jails") };
    await mkdir(paths.jailerBase, { recursive: true });
    const options: CreateVmOptions = {
      id: "sb1",
      config,
      paths,
      ...(o.netnsPath !== undefined ? { netnsPath: o.netnsPath } : {}),
    };
    const d = new FirecrackerHypervisor(
      { logger: silentLogger() },
      { stopTimeoutMs: 2_000, ...(kvmDeviceFor(t) ? { kvmDevice: kvmDeviceFor(t)! } : {}) },
    );
    drivers.push(d);
    return { dir, options, d };
  }

  it.for([false, true])(
    "launches Firecracker (jailed: %s) inside the namespace, where it opens its tap by name",
    async (jailed, ctx) => {
      needs(ctx, { jailed, root: true });
      const ns = await netns();
      const dir = await shortTmp();
      dirs.push(dir);
      // The launch helper the driver uses, through the harness: no guest boot needed.
      const vm = await MicroVM.create({ ...microVmOptions(t, dir), netns: ns.name });
      await mkdir(path.join(dir, "jails"), { recursive: true });
      vms.push(vm);
      await vm.spawn({ jailed });
      const pid = vm.firecrackerPid!;
      expect(await netnsOf(pid)).toBe(await netnsOfHandle(ns.path));
      expect(await netnsOf(pid)).not.toBe(await netnsOf(process.pid));
      await vm.client.putNetworkInterface({ iface_id: "eth0", host_dev_name: "tapns0" });
      if (t.real) {
        // A real Firecracker (root) opens the tap with TUNSETIFF, which makes it where it runs:
        // in the namespace, not on the host.
        expect(await linkExists("tapns0", ns.name)).toBe(true);
        expect(await linkExists("tapns0")).toBe(false);
      }
    },
  );

  it.for([false, true])(
    "boots a sandbox's VM (jailed: %s) in its namespace, with its NIC, and refuses NIC hotplug",
    async (jailed, ctx) => {
      needs(ctx, { jailed, root: true });
      skipUnlessBootable(t, ctx);
      const ns = await netns();
      const { d, options } = await setup({ jailed, netnsPath: ns.path });
      await d.createVM(options);
      await d.addDevice({ type: "net", id: "tap0-cocoon", tapName: "tap0_cocoon", mac: "02:00:ca:fe:00:01" });
      await d.startVM(20_000);
      const pid = d.getPids()[0]!;
      expect(await netnsOf(pid)).toBe(await netnsOfHandle(ns.path));
      const client = await FirecrackerClient.connect({ socketPath: d.paths.socketPath });
      try {
        const cfg = (await client.getVmConfig()).body as unknown as {
          "network-interfaces": { iface_id: string; host_dev_name: string; guest_mac: string | null }[];
        };
        expect(cfg["network-interfaces"]).toEqual([
          expect.objectContaining({
            iface_id: "tap0_cocoon",
            host_dev_name: "tap0_cocoon",
            guest_mac: expect.stringMatching(/^02:00:ca:fe:00:01$/i),
          }),
        ]);
      } finally {
        await client.close();
      }
      expect(d.capabilities().networkDeviceHotplug).toBe(false);
      await expect(
        d.hotplugAddDevice({ type: "net", id: "n1", tapName: "tap1_cocoon", mac: "02:00:ca:fe:00:02" }),
      ).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
      await d.check(); // still running
    },
  );

  it("refuses a NIC hotplug with ERR_NOT_SUPPORTED before the VM runs too, and says so in its capabilities", async () => {
    const { d, options } = await setup({ jailed: false });
    await d.createVM(options);
    expect(d.capabilities().networkDeviceHotplug).toBe(false);
    const nic = { type: "net" as const, id: "n1", tapName: "tap1_cocoon", mac: "02:00:ca:fe:00:02" };
    await expect(d.hotplugAddDevice(nic)).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: expect.stringMatching(/cannot hotplug net devices/),
    });
    await expect(d.hotplugRemoveDevice(nic)).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
  });

  it.for<[boolean, string, RegExp]>([
    [false, "a path that does not exist", /does not exist/],
    [true, "a path that does not exist", /does not exist/],
    [false, "a plain file (a namespace whose mount is gone)", /not a namespace handle/],
    [true, "a plain file (a namespace whose mount is gone)", /not a namespace handle/],
  ])(
    "refuses (jailed: %s) %s as the namespace before anything is spawned or built",
    async ([jailed, what, message], ctx) => {
      needs(ctx, { jailed, root: false });
      const dir = await shortTmp();
      dirs.push(dir);
      // Stand-ins that leave a mark if run (jailer --version included); named so the jailer accepts them.
      const marker = path.join(dir, "spawned");
      const spy = async (name: string, real: string) => {
        const file = path.join(dir, "bin", name);
        await mkdir(path.dirname(file), { recursive: true });
        await writeFile(file, `#!/bin/sh\ntouch ${marker}\nexec ${real} "$@"\n`, { mode: 0o755 });
        return file;
      };
      const nsPath = what.startsWith("a plain file")
        ? path.join(dir, "stale-netns")
        : `/var/run/netns/cocoon-missing-${randomBytes(3).toString("hex")}`;
      if (what.startsWith("a plain file")) await writeFile(nsPath, "");
      const { d, options } = await setup({
        jailed,
        netnsPath: nsPath,
        firecracker: await spy("firecracker", t.firecracker),
        ...(jailed ? { jailer: await spy("jailer", t.jailer!) } : {}),
      });
      await d.createVM(options);
      await d.addDevice({ type: "net", id: "eth0", tapName: "tap0_cocoon", mac: "02:00:ca:fe:00:01" });
      const err = await d.startVM(5_000).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "ERR_INVALID_ARGUMENT", details: { netns: nsPath } });
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message).toContain(nsPath);
      expect(await exists(marker)).toBe(false);
      expect(await exists(d.paths.jailDir)).toBe(false);
      expect(await exists(options.paths.vmDir)).toBe(false);
      expect(d.getPids()).toEqual([]);
    },
  );

  it.for([false, true])(
    "stops Firecracker (jailed: %s) when it refuses a network interface, leaving nothing behind",
    async (jailed, ctx) => {
      needs(ctx, { jailed, root: false });
      // In a namespace of its own where one can be made: a real Firecracker makes the tap it opens.
      const ns = isRoot ? await netns() : undefined;
      const { d, options, dir } = await setup({ jailed, ...(ns ? { netnsPath: ns.path } : {}) });
      const log = capturingLogger();
      await d.createVM({ ...options, logger: log.logger });
      // Two NICs on one tap: every Firecracker version refuses the second PUT /network-interfaces.
      await d.addDevice({ type: "net", id: "eth0", tapName: "tapdup0", mac: "02:00:ca:fe:00:01" });
      await d.addDevice({ type: "net", id: "eth1", tapName: "tapdup0", mac: "02:00:ca:fe:00:02" });
      const err = await d.startVM(10_000).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "ERR_VMM_API" });
      expect((err as Error).message).toMatch(/tapdup0|Resource busy|already in use/);
      expect(d.getPids()).toEqual([]);
      // The Firecracker that refused is gone (a jailed one's command line does not name `dir`).
      const launched = log.lines.find((l) => l.msg === "Firecracker launched") as
        { pid: number; argv: string[] } | undefined;
      expect(launched?.pid).toBeGreaterThan(0);
      expect(await isProcessAlive(launched!.pid)).toBe(false);
      if (ns && jailed) {
        // The jailer joins the namespace itself; nothing wraps it.
        expect(launched!.argv[0]).toBe(options.config.jailerPath);
        expect(launched!.argv.join(" ")).toContain(`--netns ${ns.path} `);
      } else if (ns) {
        expect(launched!.argv.slice(0, 4)).toEqual(["nsenter", `--net=${ns.path}`, "--", t.firecracker]);
      }
      // Nothing runs and nothing listens; the jail and the VM directory go with cleanup.
      const left = await leaks(dir);
      expect(left.processes).toEqual([]);
      expect(left.mounts).toEqual([]);
      expect(left.sockets).toEqual([]);
      const { jailDir } = d.paths;
      await d.cleanup();
      expect(await exists(jailDir)).toBe(false);
      expect(await exists(options.paths.vmDir)).toBe(false);
      if (ns) expect(await linkExists("tapdup0", ns.name)).toBe(false);
    },
  );
});
