/**
 * Memory resize on Firecracker through a balloon (issue 15), against the fakes of each version:
 * configured before boot only when asked for, shrinks and gives back up to the boot size, and
 * refuses clearly what Firecracker cannot do. Boots a VM, so it does not run against real
 * binaries on a host without KVM.
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { emptyHypervisorConfig } from "../../../src/hypervisor/config.js";
import { FirecrackerHypervisor } from "../../../src/hypervisor/firecracker/driver.js";
import {
  firecrackerSettingsToParams,
  DEFAULT_FIRECRACKER_SETTINGS,
} from "../../../src/hypervisor/firecracker/settings.js";
import { FirecrackerClient } from "../../../src/vmm/firecracker/client.js";
import { silentLogger } from "../../../src/log.js";
import {
  REAL,
  VERSIONS,
  guestKernel,
  guestRootfs,
  leaks,
  removeTmp,
  shortTmp,
  target,
  type Target,
} from "./helpers.js";

describe.skipIf(REAL).each(VERSIONS)("Firecracker balloon against %s", (label) => {
  let t: Target;
  let dir: string;
  let d: FirecrackerHypervisor | undefined;

  beforeAll(async () => {
    t = await target(label);
  });

  afterEach(async () => {
    await d?.cleanup();
    d = undefined;
    // Checked before, asserted after the removal: a failed check must not leave the directory.
    const left = await leaks(dir);
    await removeTmp(dir);
    expect(left).toEqual({ processes: [], mounts: [], sockets: [] });
  });

  async function boot(o: { balloon: boolean; guestDriver?: boolean }): Promise<FirecrackerHypervisor> {
    dir = await shortTmp();
    const jailerBase = path.join(dir, "lib", "jails");
    await mkdir(jailerBase, { recursive: true });
    // The fakes need no KVM (see kvmDeviceFor).
    d = new FirecrackerHypervisor({ logger: silentLogger() }, { kvmDevice: "/dev/null" });
    await d.createVM({
      id: "bal",
      config: {
        ...emptyHypervisorConfig(),
        hypervisorPath: t.firecracker,
        jailerPath: t.jailer ?? "",
        kernelPath: await guestKernel(dir),
        imagePath: await guestRootfs(dir),
        numVCPUs: 1,
        memorySize: 512,
        hypervisorParams: firecrackerSettingsToParams({
          ...DEFAULT_FIRECRACKER_SETTINGS,
          balloon: o.balloon,
        }),
      },
      paths: { vmDir: path.join(dir, "run", "vm", "bal"), jailerBase },
    });
    // The fake guest has a balloon driver unless FAKE_FC_GUEST_BALLOON=0 (Firecracker inherits it).
    if (o.guestDriver === false) process.env.FAKE_FC_GUEST_BALLOON = "0";
    try {
      await d.startVM(20_000);
    } finally {
      delete process.env.FAKE_FC_GUEST_BALLOON;
    }
    return d;
  }

  async function balloonOf(hv: FirecrackerHypervisor): Promise<number | undefined> {
    const client = await FirecrackerClient.connect({ socketPath: hv.paths.socketPath });
    try {
      const cfg = (await client.getVmConfig()).body as { balloon?: { amount_mib: number } | null };
      return cfg.balloon?.amount_mib;
    } finally {
      await client.close();
    }
  }

  it("takes memory back and returns it up to the boot size, and persists what it holds", async () => {
    const hv = await boot({ balloon: true });
    expect(hv.capabilities()).toMatchObject({ memoryBalloon: true });
    expect(await balloonOf(hv)).toBe(0);
    expect(await hv.resizeMemory(384)).toEqual({ memoryMB: 384 });
    expect(await balloonOf(hv)).toBe(128);
    expect(hv.save().hotpluggedMemoryMB).toBe(-128);
    // Another cocoon process sees the same size.
    const other = new FirecrackerHypervisor({ logger: silentLogger() });
    other.load(hv.save());
    expect(other.save().hotpluggedMemoryMB).toBe(-128);
    expect(await hv.resizeMemory(512)).toEqual({ memoryMB: 512 });
    expect(await balloonOf(hv)).toBe(0);
    await expect(hv.resizeMemory(1024)).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      message: expect.stringContaining("past the 512 MiB it booted with"),
    });
    await expect(hv.resizeMemory(0)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    expect(await balloonOf(hv)).toBe(0);
  });

  it("configures no balloon unless asked, and then refuses a resize naming the setting", async () => {
    const hv = await boot({ balloon: false });
    expect(hv.capabilities()).not.toHaveProperty("memoryBalloon");
    expect(await balloonOf(hv)).toBeUndefined();
    await expect(hv.resizeMemory(256)).rejects.toMatchObject({
      code: "ERR_NOT_SUPPORTED",
      hint: expect.stringContaining("balloon = true"),
    });
  });

  it("passes on Firecracker's refusal when the guest has no balloon driver, leaving the size as it was", async () => {
    const hv = await boot({ balloon: true, guestDriver: false });
    await expect(hv.resizeMemory(256)).rejects.toMatchObject({
      code: "ERR_VMM_API",
      message: expect.stringMatching(/refused to set the balloon to 256 MiB: .*balloon driver/),
    });
    expect(hv.save().hotpluggedMemoryMB).toBe(0);
  });
});
