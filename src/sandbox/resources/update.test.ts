import { describe, expect, it } from "vitest";
import type { AgentClient } from "../../agent/client.js";
import { emptyHypervisorConfig, validateHypervisorConfig } from "../../hypervisor/config.js";
import type { Hypervisor } from "../../hypervisor/hypervisor.js";
import { QemuHypervisor } from "../../hypervisor/qemu/driver.js";
import { resizeSandbox } from "./update.js";

async function qemu(machine: string): Promise<QemuHypervisor> {
  const hv = new QemuHypervisor();
  await hv.createVM({
    id: "r",
    config: validateHypervisorConfig({
      ...emptyHypervisorConfig(),
      hypervisorPath: "/usr/bin/qemu-system-x86_64",
      kernelPath: "/dev/null",
      imagePath: "/dev/null",
      hypervisorMachineType: machine,
      sharedFS: "none",
    }),
    paths: { vmDir: "/tmp/cocoon-unit-r", jailerBase: "/tmp/cocoon-unit-j" },
  });
  return hv;
}

// Refusals happen before the agent is asked anything.
const noAgent = {} as AgentClient;

describe("resize refusals", () => {
  it("microvm cannot resize: a clear ERR_NOT_SUPPORTED naming q35", async () => {
    const hv = await qemu("microvm");
    expect(hv.capabilities()).toMatchObject({ vcpuHotplug: false, memoryHotplug: false });
    await expect(
      resizeSandbox({ hypervisor: hv, agent: noAgent, cgroups: undefined }, { cpus: 1 }),
    ).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: "qemu (microvm machine) cannot change the vCPU count of a running VM",
      hint: expect.stringContaining("q35"),
    });
    await expect(hv.resizeMemory(1024, 128)).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
  });

  it("beyond the host or malformed: ERR_RESOURCE_LIMIT before anything changes", async () => {
    const hv = await qemu("q35");
    expect(hv.capabilities()).toMatchObject({ vcpuHotplug: true, memoryHotplug: true });
    const ctx = { hypervisor: hv, agent: noAgent, cgroups: undefined };
    await expect(resizeSandbox(ctx, { cpus: 100_000 })).rejects.toMatchObject({
      code: "ERR_RESOURCE_LIMIT",
      message: expect.stringContaining("this host has"),
    });
    await expect(resizeSandbox(ctx, { cpus: 1.5 })).rejects.toMatchObject({ code: "ERR_RESOURCE_LIMIT" });
    await expect(resizeSandbox(ctx, { memoryMB: 2 ** 30 })).rejects.toMatchObject({
      code: "ERR_RESOURCE_LIMIT",
    });
    await expect(resizeSandbox(ctx, { memoryMB: 32 })).rejects.toMatchObject({ code: "ERR_RESOURCE_LIMIT" });
  });

  it("a balloon (Firecracker) cannot grow past the boot size: ERR_NOT_SUPPORTED before anything changes", async () => {
    const calls: number[] = [];
    const ballooned = {
      type: "firecracker",
      capabilities: () => ({
        blockDeviceHotplug: true,
        fsSharing: false,
        networkDeviceHotplug: false,
        multiQueue: false,
        memoryBalloon: true,
      }),
      hypervisorConfig: () => ({ ...emptyHypervisorConfig(), memorySize: 512, numVCPUs: 1 }),
      save: () => ({ hotpluggedVCPUs: 0, hotpluggedMemoryMB: 0 }),
      resizeMemory: async (mb: number) => (calls.push(mb), { memoryMB: mb }),
    } as unknown as Hypervisor;
    const ctx = { hypervisor: ballooned, agent: noAgent, cgroups: undefined };
    await expect(resizeSandbox(ctx, { memoryMB: 1024 })).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: expect.stringContaining("past the 512 MiB it booted with"),
    });
    expect(calls).toEqual([]);
  });
});
