import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AgentClient, waitForAgent } from "../../src/agent/client.js";
import { chooseAccelerator } from "../../src/host/accel.js";
import type { AgentChannel } from "../../src/hypervisor/hypervisor.js";
import { QemuHypervisor } from "../../src/hypervisor/qemu/driver.js";
import type { HypervisorConfig } from "../../src/hypervisor/config.js";
import { filesUnder, guestAssets, processesMentioning, qemuConfig, testRoot } from "../helpers/env.js";

const BOOT_TIMEOUT = 90_000;

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
  // Whatever a test left running is stopped here, so one failure does not leak VMs.
  for (const hv of started.splice(0)) await hv.cleanup().catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function createVm(id: string, config: HypervisorConfig, withAgent = true): Promise<QemuHypervisor> {
  const hv = new QemuHypervisor();
  await hv.createVM({
    id,
    config,
    paths: { vmDir: path.join(root, "vm", id), jailerBase: path.join(root, "jail") },
    ...(withAgent
      ? {
          guestReady: async (channel: AgentChannel, signal: AbortSignal) =>
            void (await waitForAgent(channel, { timeoutMs: BOOT_TIMEOUT, signal })),
        }
      : {}),
  });
  started.push(hv);
  return hv;
}

function monotonicMs(ns: string): number {
  return Number(BigInt(ns) / 1_000_000n);
}

describe("QEMU driver on a real VM (TCG)", () => {
  it("boots, answers, pauses and resumes, hot-plugs a disk the guest sees, and stops leaving nothing", async () => {
    const hv = await createVm("life", await qemuConfig());
    await hv.startVM(BOOT_TIMEOUT);
    const vmDir = path.join(root, "vm", "life");
    expect(hv.getPids()).toHaveLength(1);
    const threads = await hv.getThreadIDs();
    expect([...threads.vcpus.keys()]).toEqual([0]);

    const agent = await AgentClient.connect(hv.agentChannel(), { timeoutMs: 10_000 });
    expect(await agent.call("health.check", {})).toEqual({ status: "SERVING" });
    expect((await agent.call("agent.version", {})).protocol).toBe(1);

    // Paused: the guest answers nothing and its monotonic clock stands still.
    const before = await agent.call("guest.clock", {});
    await hv.pauseVM();
    await expect(agent.call("health.check", {}, { timeoutMs: 1_500 })).rejects.toMatchObject({
      code: "ERR_AGENT_TIMEOUT",
    });
    await new Promise((r) => setTimeout(r, 1_000));
    await hv.resumeVM();
    const after = await agent.call("guest.clock", {});
    // 2.5 s of host time passed; the guest saw only the time it was running.
    expect(monotonicMs(after.monotonicNs) - monotonicMs(before.monotonicNs)).toBeLessThan(2_000);
    expect(await agent.call("health.check", {})).toEqual({ status: "SERVING" });

    // Hot-plug a 32 MiB disk: the guest lists it at the SCSI address the driver reports.
    const disk = path.join(root, "disk.img");
    await writeFile(disk, "");
    execFileSync("truncate", ["-s", "32M", disk]);
    const attached = await hv.hotplugAddDevice({ type: "block", id: "data", path: disk });
    expect(attached).toMatchObject({ type: "block", guestPath: "0:0:0:0" });
    let seen;
    for (let i = 0; i < 50 && !seen; i++) {
      seen = (await agent.call("storage.listBlockDevices", {})).devices.find(
        (d) => d.scsiAddress === "0:0:0:0",
      );
      if (!seen) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen).toMatchObject({ sizeBytes: 32 * 1024 * 1024, readOnly: false });
    await hv.hotplugRemoveDevice(attached);
    expect((await agent.call("storage.listBlockDevices", {})).devices.map((d) => d.name)).toEqual(["vda"]);
    await agent.close();

    await hv.stopVM();
    expect(hv.getPids()).toEqual([]);
    await hv.cleanup();
    await hv.cleanup(); // idempotent
    expect(existsSync(vmDir)).toBe(false);
    expect(await filesUnder(path.join(root, "vm"))).toEqual([]);
  });

  it("lets a second driver instance (another cocoon process) drive a VM from persisted state", async () => {
    const config = await qemuConfig();
    const first = await createVm("shared", config);
    await first.startVM(BOOT_TIMEOUT);
    const saved = JSON.parse(JSON.stringify(first.save()));
    first.disconnect();

    const second = await createVm("shared", config, false);
    second.load(saved);
    await second.check();
    await second.pauseVM();
    await second.resumeVM();
    await waitForAgent(second.agentChannel(), { timeoutMs: 10_000 });
    await second.stopVM();
    expect(await processesMentioning(root)).toEqual([]);
  });

  it("refuses a missing kernel before spawning anything", async () => {
    const hv = await createVm(
      "nokernel",
      await qemuConfig({ kernelPath: path.join(root, "no-such-vmlinuz") }),
    );
    await expect(hv.startVM(BOOT_TIMEOUT)).rejects.toMatchObject({
      code: "ERR_ASSET_INVALID",
      message: `invalid kernel asset at ${path.join(root, "no-such-vmlinuz")}: no such file`,
    });
    expect(existsSync(path.join(root, "vm", "nokernel"))).toBe(false);
  });

  it("reports a kernel panic as such and cleans up", async () => {
    const hv = await createVm(
      "panic",
      await qemuConfig({ kernelParams: [{ key: "init", value: "/no/such/init" }] }),
    );
    const err = await hv.startVM(BOOT_TIMEOUT).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: "ERR_GUEST_PANIC",
      message: expect.stringContaining("Kernel panic - not syncing"),
    });
    expect(existsSync(path.join(root, "vm", "panic"))).toBe(false);
  });

  it("notices QEMU killed with SIGKILL while running", async () => {
    const hv = await createVm("killed", await qemuConfig());
    await hv.startVM(BOOT_TIMEOUT);
    const [pid] = hv.getPids();
    process.kill(pid!, "SIGKILL");
    await new Promise((r) => setTimeout(r, 300));
    await expect(hv.check()).rejects.toMatchObject({ code: "ERR_VMM_EXITED" });
    expect(hv.exitStatus()).toEqual({ code: null, signal: "SIGKILL" });
    await hv.stopVM();
    await hv.cleanup();
    expect(existsSync(path.join(root, "vm", "killed"))).toBe(false);
  });

  it("fails a start that does not reach the agent in time, with the reason, and leaves nothing", async () => {
    const hv = await createVm("slow", await qemuConfig());
    await expect(hv.startVM(400)).rejects.toMatchObject({
      code: "ERR_VMM_TIMEOUT",
      message: expect.stringContaining("did not come up in time"),
    });
    expect(existsSync(path.join(root, "vm", "slow"))).toBe(false);
  });

  it("explains a forced KVM boot on a PVM host", async (ctx) => {
    const accel = await chooseAccelerator("kvm");
    if (!accel.pvmHost || !accel.kvmUsable) {
      ctx.skip(); // only a PVM host hangs a normal guest kernel under KVM
      return;
    }
    const hv = await createVm("pvm", await qemuConfig({ accelerator: "kvm" }));
    const err = await hv.startVM(8_000).then(
      () => undefined,
      (e: unknown) => e,
    );
    // Depending on the CPU model QEMU either hangs (timeout) or aborts setting an MSR (exit).
    expect(err).toMatchObject({
      code: expect.stringMatching(/^ERR_VMM_(TIMEOUT|START)$/),
      hint: expect.stringMatching(/PVM/),
    });
    expect(existsSync(path.join(root, "vm", "pvm"))).toBe(false);
  });
});
