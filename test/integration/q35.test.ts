import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AgentClient, waitForAgent } from "../../src/agent/client.js";
import type { AgentChannel } from "../../src/hypervisor/hypervisor.js";
import { QemuHypervisor } from "../../src/hypervisor/qemu/driver.js";
import { filesUnder, guestAssets, processesMentioning, qemuConfig, testRoot } from "../helpers/env.js";

const BOOT_TIMEOUT = 120_000;

let root: string;
let cleanupRoot: () => Promise<void>;
const started: QemuHypervisor[] = [];

beforeAll(async () => {
  await guestAssets();
}, 20 * 60_000);

beforeEach(async () => {
  ({ root, cleanup: cleanupRoot } = await testRoot());
});

afterEach(async () => {
  for (const hv of started.splice(0)) await hv.cleanup().catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

describe("QEMU q35 machine on a real VM (TCG)", () => {
  it("boots with PCI devices, answers, hot-plugs a SCSI disk the guest sees, and stops leaving nothing", async () => {
    const hv = new QemuHypervisor();
    const vmDir = path.join(root, "vm", "q35");
    await hv.createVM({
      id: "q35",
      config: await qemuConfig({ hypervisorMachineType: "q35" }),
      paths: { vmDir, jailerBase: path.join(root, "jail") },
      guestReady: async (channel: AgentChannel, signal: AbortSignal) =>
        void (await waitForAgent(channel, { timeoutMs: BOOT_TIMEOUT, signal })),
    });
    started.push(hv);
    await hv.startVM(BOOT_TIMEOUT);

    const agent = await AgentClient.connect(hv.agentChannel(), { timeoutMs: 10_000 });
    expect(await agent.call("health.check", {})).toEqual({ status: "SERVING" });
    // The root disk is a virtio-blk PCI device on q35, not virtio-mmio.
    const devices = (await agent.call("storage.listBlockDevices", {})).devices;
    expect(devices.map((d) => d.name)).toEqual(["vda"]);

    const disk = path.join(root, "disk.img");
    await writeFile(disk, "");
    execFileSync("truncate", ["-s", "16M", disk]);
    const attached = await hv.hotplugAddDevice({ type: "block", id: "data", path: disk });
    expect(attached).toMatchObject({ type: "block", guestPath: "0:0:0:0" });
    let seen;
    for (let i = 0; i < 100 && !seen; i++) {
      seen = (await agent.call("storage.listBlockDevices", {})).devices.find(
        (d) => d.scsiAddress === "0:0:0:0",
      );
      if (!seen) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen).toMatchObject({ sizeBytes: 16 * 1024 * 1024 });
    await hv.hotplugRemoveDevice(attached);
    await agent.close();

    await hv.stopVM();
    expect(hv.getPids()).toEqual([]);
    await hv.cleanup();
    expect(existsSync(vmDir)).toBe(false);
    expect(await filesUnder(path.join(root, "vm"))).toEqual([]);
  });
});
