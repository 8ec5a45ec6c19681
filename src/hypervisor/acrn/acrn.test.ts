import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acrnFixture, type AcrnFixture } from "../../../test/fakes/acrn/fixture.js";
import { ACRN_UUIDS } from "../../vmm/acrn/uuids.js";
import type { HypervisorConfig } from "../config.js";
import { newHypervisor } from "../registry.js";
import "./register.js";
import { AcrnHypervisor } from "./acrn.js";
import { AcrnUuidPool } from "./uuid-pool.js";

// Driver behaviour that needs no running acrn-dm. Launch, stop and hotplug against the fake
// tools are in test/contract/acrn.

let fx: AcrnFixture;
beforeEach(async () => (fx = await acrnFixture()));
afterEach(() => fx.cleanup());

async function created(id = "s1", config: HypervisorConfig = fx.config()): Promise<AcrnHypervisor> {
  const d = fx.driver();
  await d.createVM(fx.createOptions(id, config));
  return d;
}

const busy = () => new AcrnUuidPool(fx.store).busy();

describe("ACRN driver without a VMM", () => {
  it("is what the registry builds for acrn", () => {
    expect(newHypervisor("acrn", { logger: pino({ level: "silent" }), store: fx.store })).toBeInstanceOf(
      AcrnHypervisor,
    );
  });

  it("takes a UUID at create and builds the acrn-dm command line with it", async () => {
    const a = await created("s1");
    const b = await created("s2");
    expect((await busy()).map((e) => [e.uuid, e.owner])).toEqual([
      [ACRN_UUIDS[0], "s1"],
      [ACRN_UUIDS[1], "s2"],
    ]);
    const argv = b.commandLine();
    expect(argv.slice(0, 3)).toEqual([fx.config().hypervisorPath, "-U", ACRN_UUIDS[1]]);
    expect(argv.at(-1)).toBe("sandbox-s2");
    expect(argv).toContain(`4,virtio-blk,${fx.image},ro`);
    const bootargs = argv[argv.indexOf("-B") + 1]!;
    expect(bootargs).toMatch(/ panic=1 maxcpus=1$/);
    await a.cleanup();
    await b.cleanup();
    expect(await busy()).toEqual([]);
  });

  it("puts configured kernel parameters last", async () => {
    const d = await created("s1", fx.config({ kernelParams: [{ key: "agent.log", value: "debug" }] }));
    const argv = d.commandLine();
    expect(argv[argv.indexOf("-B") + 1]).toMatch(/ panic=1 maxcpus=1 agent\.log=debug$/);
    await d.cleanup();
  });

  it.each<[string, Partial<HypervisorConfig>, string, RegExp]>([
    [
      "a SCSI block driver",
      { blockDeviceDriver: "virtio-scsi" },
      "ERR_INVALID_CONFIG",
      /only the virtio-blk/,
    ],
    ["a shared filesystem", { sharedFS: "virtio-fs" }, "ERR_INVALID_CONFIG", /not supported by ACRN/],
    ["vsock", { useVSock: true }, "ERR_INVALID_CONFIG", /vsock is not supported by ACRN/],
    [
      "an initrd instead of an image",
      { imagePath: "", initrdPath: "/boot/initrd" },
      "ERR_INVALID_CONFIG",
      /disk image/,
    ],
    ["two PCI bridges", { defaultBridges: 2 }, "ERR_INVALID_CONFIG", /default_bridges must be 1/],
    [
      "two vCPUs with ACRN's default maximum of one",
      { numVCPUs: 2 },
      "ERR_INVALID_CONFIG",
      /maximum vCPUs \(1\)/,
    ],
    ["a missing acrn-dm", { hypervisorPath: "/nonexistent/acrn-dm" }, "ERR_HOST_MISSING_TOOL", /acrn-dm/],
    ["a missing acrnctl", { hypervisorCtlPath: "/nonexistent/acrnctl" }, "ERR_HOST_MISSING_TOOL", /acrnctl/],
    ["a missing kernel", { kernelPath: "/nonexistent/vmlinuz" }, "ERR_ASSET_INVALID", /no such file/],
    ["a missing image", { imagePath: "/nonexistent/rootfs.img" }, "ERR_ASSET_INVALID", /no such file/],
    [
      "a hypervisor parameter ACRN does not take",
      { hypervisorParams: [{ key: "machine", value: "q35" }] },
      "ERR_INVALID_CONFIG",
      /machine=q35/,
    ],
  ])("refuses %s at create and holds no UUID", async (_what, overrides, code, message) => {
    const d = fx.driver();
    await expect(d.createVM(fx.createOptions("s1", fx.config(overrides)))).rejects.toMatchObject({
      code,
      message: expect.stringMatching(message),
    });
    expect(await busy()).toEqual([]);
  });

  it("refuses an image path acrn-dm would split on its comma, and frees the UUID", async () => {
    const d = fx.driver();
    const config = fx.config({ imagePath: await fx.file("a,b.img") });
    await expect(d.createVM(fx.createOptions("s1", config))).rejects.toMatchObject({
      code: "ERR_INVALID_CONFIG",
      message: expect.stringContaining("cannot contain ','"),
    });
    expect(await busy()).toEqual([]);
  });

  it("refuses a VM directory whose sockets would not fit a unix socket path, and frees the UUID", async () => {
    const d = fx.driver();
    const options = fx.createOptions("s1", fx.config());
    options.paths.vmDir = `/${"d".repeat(100)}`;
    await expect(d.createVM(options)).rejects.toMatchObject({
      code: "ERR_INVALID_CONFIG",
      message: expect.stringContaining("107 bytes"),
    });
    expect(await busy()).toEqual([]);
  });

  it("says which operations ACRN does not support", async () => {
    const d = await created();
    for (const op of [() => d.pauseVM(), () => d.resumeVM(), () => d.saveVM()]) {
      await expect(op()).rejects.toMatchObject({
        code: "ERR_NOT_SUPPORTED",
        message: expect.stringMatching(/not supported by ACRN$/),
      });
    }
    await expect(
      d.addDevice({ type: "fs", tag: "t", hostPath: "/x", fsType: "virtio-fs" }),
    ).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: "sharing a host directory (virtio-fs, 9p) is not supported by ACRN",
    });
    await expect(d.addDevice({ type: "vsock", guestCid: 3 })).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: "vsock is not supported by ACRN",
    });
    await expect(d.addDevice({ type: "vfio", id: "v", bdf: "0000:01:00.0" })).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
    });
    await expect(
      d.addDevice({ type: "vhost-user", id: "v", kind: "blk", socketPath: "/s" }),
    ).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    await d.cleanup();
  });

  it("keeps the boot-time size when asked to resize, and says so in the result", async () => {
    const d = await created();
    expect(await d.resizeMemory(4096, 128, false)).toEqual({ memoryMB: 512 });
    expect(await d.resizeVCPUs(4)).toEqual({ oldVCPUs: 1, newVCPUs: 1 });
    await expect(d.resizeVCPUs(-1)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await d.cleanup();
  });

  it("refuses hotplug before the VM runs and cold plugs after create only", async () => {
    const d = fx.driver();
    await expect(
      d.addDevice({ type: "net", id: "n", tapName: "tap0", mac: "02:00:00:00:00:01" }),
    ).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    await d.createVM(fx.createOptions("s1", fx.config()));
    await expect(d.hotplugAddDevice({ type: "block", id: "b", path: fx.image })).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
    });
    await d.cleanup();
  });

  it("refuses a cold-plugged device acrn-dm would reject, without keeping it", async () => {
    const d = await created();
    await expect(
      d.addDevice({ type: "net", id: "n", tapName: "eth0", mac: "02:00:00:00:00:01" }),
    ).rejects.toMatchObject({
      code: "ERR_INVALID_CONFIG",
      message: expect.stringContaining("tap* or vmnet*"),
    });
    await d.addDevice({ type: "net", id: "n", tapName: "tap0", mac: "02:00:00:00:00:01", model: "tap" });
    await d.addDevice({
      type: "serial",
      id: "s",
      name: "debug",
      socketPath: `${fx.paths.vmDir("s1")}/debug.sock`,
    });
    await d.addDevice({ type: "image", path: fx.image });
    await expect(d.addDevice({ type: "image", path: "/other.img" })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
    });
    const argv = d.commandLine();
    expect(argv).toContain("17,virtio-net,tap0,mac=02:00:00:00:00:01");
    expect(argv).toContain(`18,virtio-console,socket:debug=${fx.paths.vmDir("s1")}/debug.sock`);
    await d.cleanup();
  });

  it("launches acrn-dm inside the sandbox's network namespace with its NICs (golden argv)", async () => {
    const d = fx.driver();
    const nsPath = "/var/run/netns/cocoon-ab12cd34-s1";
    await d.createVM(fx.createOptions("s1", fx.config(), { netnsPath: nsPath }));
    // What the sandbox layer hands over: one tap per interface mirrored in the namespace.
    await d.addDevice({ type: "net", id: "tap0-cocoon", tapName: "tap0_cocoon", mac: "02:00:CA:FE:00:01" });
    await d.addDevice({ type: "net", id: "tap1-cocoon", tapName: "tap1_cocoon", mac: "02:00:ca:fe:00:02" });
    const vmDir = fx.paths.vmDir("s1");
    const bootargs = d.commandLine()[d.commandLine().indexOf("-B") + 1]!;
    // prettier-ignore
    const acrnDm = [
      fx.config().hypervisorPath,
      "-U", ACRN_UUIDS[0], "-A", "-m", "512M",
      "-s", "0:0,hostbridge",
      "-s", "1:0,lpc", "-l", "com1,stdio",
      "-s", `3,virtio-console,@socket:console0=${vmDir}/console.sock`,
      "-s", `4,virtio-blk,${fx.image},ro`,
      ...[5, 6, 7, 8, 9, 10, 11, 12].flatMap((slot) => ["-s", `${slot},virtio-blk,nodisk`]),
      ...[0, 1, 2, 3].flatMap((i) => ["-s", `${13 + i},virtio-console,socket:cocoon.agent.${i}=${vmDir}/agent.${i}.sock`]),
      "-s", "17,virtio-net,tap0_cocoon,mac=02:00:ca:fe:00:01",
      "-s", "18,virtio-net,tap1_cocoon,mac=02:00:ca:fe:00:02",
      "-k", fx.kernel, "-B", bootargs,
      "sandbox-s1",
    ];
    expect(d.commandLine()).toEqual(acrnDm);
    expect(d.launchCommand()).toEqual({ file: "nsenter", args: [`--net=${nsPath}`, "--", ...acrnDm] });
    await d.cleanup();
  });

  it("launches acrn-dm directly without a namespace", async () => {
    const d = await created("s1");
    expect(d.launchCommand()).toEqual({ file: fx.config().hypervisorPath, args: d.commandLine().slice(1) });
    await d.cleanup();
  });

  it("refuses NIC hotplug with ERR_NOT_SUPPORTED in any state, as its capabilities say", async () => {
    const d = await created("s1");
    expect(d.capabilities().networkDeviceHotplug).toBe(false);
    const nic = { type: "net" as const, id: "n", tapName: "tap1_cocoon", mac: "02:00:00:00:00:02" };
    await expect(d.hotplugAddDevice(nic)).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    await expect(d.hotplugRemoveDevice(nic)).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    await d.cleanup();
  });

  it("reports capabilities for the block-device flow", () => {
    expect(fx.driver().capabilities()).toEqual({
      blockDeviceHotplug: true,
      fsSharing: false,
      networkDeviceHotplug: false,
      multiQueue: false,
    });
  });

  it("gives the console and agent sockets in the VM directory", async () => {
    const d = await created();
    expect(await d.getVMConsole()).toBe(`${fx.paths.vmDir("s1")}/console.sock`);
    const vmDir = fx.paths.vmDir("s1");
    expect(d.agentChannel()).toEqual({
      kind: "serial",
      paths: [0, 1, 2, 3].map((i) => `${vmDir}/agent.${i}.sock`),
    });
    const argv = d.commandLine();
    for (const i of [0, 1, 2, 3])
      expect(argv).toContain(`${13 + i},virtio-console,socket:cocoon.agent.${i}=${vmDir}/agent.${i}.sock`);
    expect(d.getPids()).toEqual([]);
    await expect(d.check()).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    expect(await d.getThreadIDs()).toEqual({ vcpus: new Map() });
    await d.cleanup();
  });

  it("saves its UUID and lets another driver adopt the VM without taking a new one", async () => {
    const a = await created();
    const saved = a.save();
    expect(saved).toMatchObject({
      type: "acrn",
      pid: 0,
      blockIndexMap: [],
      driver: { uuid: ACRN_UUIDS[0], vmName: "sandbox-s1", vmState: "created" },
    });
    const b = fx.driver();
    b.load(JSON.parse(JSON.stringify(saved)));
    await b.createVM(fx.createOptions("s1", fx.config()));
    expect(await busy()).toHaveLength(1);
    expect(b.commandLine()).toContain(ACRN_UUIDS[0]);
    await b.cleanup();
    expect(await busy()).toEqual([]);
    await a.cleanup(); // idempotent: the UUID is already free
    expect(await busy()).toEqual([]);
  });

  it("refuses a saved state that is not ACRN's or is malformed", () => {
    const d = fx.driver();
    const base = { pid: 0, blockIndexMap: [], hotpluggedVCPUs: 0, hotpluggedMemoryMB: 0 };
    expect(() => d.load({ ...base, type: "qemu", driver: {} })).toThrow(
      expect.objectContaining({ code: "ERR_STATE_CORRUPT" }),
    );
    expect(() =>
      d.load({
        ...base,
        type: "acrn",
        driver: {
          version: 1,
          vmState: "running",
          uuid: "not-a-uuid",
          vmName: "x",
          vmDir: "/x",
          blockSlots: [],
          serialSockets: [],
        },
      }),
    ).toThrow(
      expect.objectContaining({ code: "ERR_STATE_CORRUPT", message: expect.stringContaining("uuid") }),
    );
    expect(() =>
      d.load({
        ...base,
        type: "acrn",
        blockIndexMap: [9],
        driver: {
          version: 1,
          vmState: "running",
          vmName: "x",
          vmDir: "/x",
          blockSlots: [],
          serialSockets: [],
        },
      }),
    ).toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
  });

  it("cleans up idempotently, freeing the UUID of a VM that never started", async () => {
    const d = await created();
    await d.cleanup();
    await d.cleanup();
    expect(await busy()).toEqual([]);
    await fx.driver().cleanup(); // a driver that created nothing
  });
});
