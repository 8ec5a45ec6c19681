import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readlink, stat } from "node:fs/promises";
import { afterEach, beforeEach, describe, expect, it, type TestContext } from "vitest";
import type { AcrnHypervisor } from "../../../src/hypervisor/acrn/acrn.js";
import { AcrnUuidPool } from "../../../src/hypervisor/acrn/uuid-pool.js";
import { isProcessAlive } from "../../../src/host/proc.js";
import { createNetns, deleteNetns } from "../../../src/network/tap.js";
import { acrnFixture, listTree, type AcrnFixture } from "../../fakes/acrn/fixture.js";

// The ACRN driver on the sandbox network model, against the fake acrn-dm: acrn-dm runs in the
// sandbox's network namespace (nsenter), with a virtio-net NIC per tap; a namespace it cannot
// join fails the start before acrn-dm runs. Making namespaces needs root.

let fx: AcrnFixture;
const drivers: AcrnHypervisor[] = [];
const namespaces: string[] = [];
beforeEach(async () => {
  fx = await acrnFixture();
});
afterEach(async () => {
  for (const d of drivers.splice(0)) await d.cleanup();
  for (const ns of namespaces.splice(0)) await deleteNetns(ns);
  await fx.cleanup();
});

function driver(): AcrnHypervisor {
  const d = fx.driver({ stopTimeoutMs: 2_000 });
  drivers.push(d);
  return d;
}

async function netns(ctx: TestContext): Promise<string> {
  if (process.getuid?.() !== 0) ctx.skip();
  const name = `cacn-${randomBytes(3).toString("hex")}`;
  const p = await createNetns(name);
  namespaces.push(name);
  return p;
}

const netnsOf = (pid: number) => readlink(`/proc/${pid}/ns/net`);
const busyUuids = () => new AcrnUuidPool(fx.store).busy();

describe("ACRN driver in a sandbox network namespace", () => {
  it("runs acrn-dm in the namespace, with the NIC the sandbox gave it, and refuses NIC hotplug", async (ctx) => {
    const nsPath = await netns(ctx);
    const d = driver();
    await d.createVM(fx.createOptions("net1", fx.config(), { netnsPath: nsPath }));
    await d.addDevice({ type: "net", id: "tap0-cocoon", tapName: "tap0_cocoon", mac: "02:00:ca:fe:00:01" });
    await d.startVM(20_000);
    const [pid] = d.getPids();
    expect(await netnsOf(pid!)).toBe(`net:[${(await stat(nsPath)).ino}]`);
    expect(await netnsOf(pid!)).not.toBe(await netnsOf(process.pid));
    // The fake acrn-dm ran (and accepted) exactly the acrn-dm argv, under the pid the driver tracks.
    const runs = await fx.invocations("acrn-dm");
    expect(runs).toHaveLength(1);
    expect(runs[0]!.pid).toBe(pid);
    expect(runs[0]!.argv).toEqual(d.commandLine().slice(1));
    expect(runs[0]!.argv).toContain("17,virtio-net,tap0_cocoon,mac=02:00:ca:fe:00:01");
    await expect(
      d.hotplugAddDevice({ type: "net", id: "n1", tapName: "tap1_cocoon", mac: "02:00:ca:fe:00:02" }),
    ).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    await d.check();
    await d.stopVM();
    expect(await isProcessAlive(pid!)).toBe(false);
    await d.cleanup();
    expect(existsSync(fx.paths.vmDir("net1"))).toBe(false);
    expect(await busyUuids()).toEqual([]);
  });

  it.each([
    ["does not exist", () => `/var/run/netns/cocoon-missing-${randomBytes(3).toString("hex")}`],
    ["is a plain file", () => fx.file("stale-netns", 0)],
  ])("refuses a namespace that %s before acrn-dm runs or its VM directory is made", async (_what, ns) => {
    const nsPath = await ns();
    const d = driver();
    await d.createVM(fx.createOptions("net2", fx.config(), { netnsPath: nsPath }));
    await d.addDevice({ type: "net", id: "tap0-cocoon", tapName: "tap0_cocoon", mac: "02:00:ca:fe:00:01" });
    const err = await d.startVM(5_000).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ERR_INVALID_ARGUMENT", details: { netns: nsPath } });
    expect((err as Error).message).toContain(nsPath);
    expect(await fx.invocations("acrn-dm")).toEqual([]);
    expect(existsSync(fx.paths.vmDir("net2"))).toBe(false);
    expect(d.getPids()).toEqual([]);
    await d.cleanup();
    expect(await busyUuids()).toEqual([]);
  });

  it("leaves nothing behind when acrn-dm fails inside the namespace", async (ctx) => {
    const nsPath = await netns(ctx);
    fx.env.FAKE_ACRN_DM_FAIL = "Failed to create the VM: File exists";
    const d = driver();
    await d.createVM(fx.createOptions("net3", fx.config(), { netnsPath: nsPath }));
    await d.addDevice({ type: "net", id: "tap0-cocoon", tapName: "tap0_cocoon", mac: "02:00:ca:fe:00:01" });
    const err = await d.startVM(10_000).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ERR_VMM_START" });
    expect((err as Error).message).toMatch(/Failed to create the VM/);
    const runs = await fx.invocations("acrn-dm");
    expect(runs).toHaveLength(1);
    expect(await isProcessAlive(runs[0]!.pid)).toBe(false);
    expect(d.getPids()).toEqual([]);
    await d.cleanup();
    expect(existsSync(fx.paths.vmDir("net3"))).toBe(false);
    expect(await listTree(fx.fakeState)).toEqual([]);
    expect(await busyUuids()).toEqual([]);
  });
});
