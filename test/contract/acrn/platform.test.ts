import { execFileSync } from "node:child_process";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AcrnUuidPool } from "../../../src/hypervisor/acrn/uuid-pool.js";
import { which } from "../../../src/host/which.js";
import { probePlatformInfo } from "../../../src/vmm/acrn/platform-info.js";
import { FAKE_PLATFORM_INFO, acrnFixture, type AcrnFixture } from "../../fakes/acrn/fixture.js";

// How the driver learns the platform's VM limit: the configured max_vms, or the platform-info
// helper (the fake here; the real C helper below, against devices that are not ACRN's).

let fx: AcrnFixture;
beforeEach(async () => (fx = await acrnFixture({ FAKE_ACRN_MAX_KATA: "2" })));
afterEach(() => fx.cleanup());

const busy = () => new AcrnUuidPool(fx.store).busy();

describe("ACRN VM limit", () => {
  it("asks the platform-info helper when max_vms is 0, and stops at its limit", async () => {
    const config = fx.config({}, { maxVms: 0, platformInfoHelper: FAKE_PLATFORM_INFO });
    const drivers = [fx.driver(), fx.driver(), fx.driver()];
    await drivers[0]!.createVM(fx.createOptions("s1", config));
    await drivers[1]!.createVM(fx.createOptions("s2", config));
    await expect(drivers[2]!.createVM(fx.createOptions("s3", config))).rejects.toMatchObject({
      code: "ERR_RESOURCE_EXHAUSTED",
      message: "no free ACRN VM UUID: all 2 VMs this ACRN platform allows are running (limit 2)",
    });
    expect((await fx.invocations("platform-info")).map((i) => i.argv)).toEqual([
      [fx.vhmDevice],
      [fx.vhmDevice],
      [fx.vhmDevice],
    ]);
    for (const d of drivers) await d.cleanup();
    expect(await busy()).toEqual([]);
  }, 30_000);

  it("uses a configured max_vms without asking the hypervisor", async () => {
    const config = fx.config({}, { maxVms: 1, platformInfoHelper: FAKE_PLATFORM_INFO });
    const a = fx.driver();
    await a.createVM(fx.createOptions("s1", config));
    await expect(fx.driver().createVM(fx.createOptions("s2", config))).rejects.toMatchObject({
      code: "ERR_RESOURCE_EXHAUSTED",
      message: expect.stringContaining("limit 1"),
    });
    expect(await fx.invocations("platform-info")).toEqual([]);
    await a.cleanup();
  });

  it("fails clearly, holding no UUID, when /dev/acrn_vhm is missing", async () => {
    const d = fx.driver({ vhmDevice: path.join(fx.dir, "no_acrn_vhm") });
    await expect(
      d.createVM(
        fx.createOptions("s1", fx.config({}, { maxVms: 0, platformInfoHelper: FAKE_PLATFORM_INFO })),
      ),
    ).rejects.toMatchObject({
      code: "ERR_HOST_PROBE",
      message: expect.stringContaining("does not exist (this host is not an ACRN service VM)"),
      hint: expect.stringContaining("max_vms"),
    });
    expect(await busy()).toEqual([]);
  });

  it("refuses a platform that allows no VMs", async () => {
    const d = fx.driver({ env: { ...fx.env, FAKE_ACRN_MAX_KATA: "0" } });
    await expect(
      d.createVM(
        fx.createOptions("s1", fx.config({}, { maxVms: 0, platformInfoHelper: FAKE_PLATFORM_INFO })),
      ),
    ).rejects.toMatchObject({
      code: "ERR_RESOURCE_EXHAUSTED",
      message: expect.stringContaining("limit is 0"),
    });
  });
});

describe("the real platform-info helper (C), without ACRN", async () => {
  const gcc = await which(process.env.CC ?? "gcc");
  let helper = "";
  beforeEach(() => {
    if (!gcc) return; // no compiler: the tests below are skipped
    helper = path.join(fx.dir, "cocoon-acrn-platform-info");
    execFileSync("bash", [
      path.resolve(import.meta.dirname, "../../../src/vmm/acrn/build-platform-info.sh"),
      helper,
    ]);
  });

  it.skipIf(!gcc)("builds, and reports a missing device as a clear error", async () => {
    await expect(
      probePlatformInfo({ helperPath: helper, device: path.join(fx.dir, "acrn_vhm_missing") }),
    ).rejects.toMatchObject({
      code: "ERR_HOST_PROBE",
      message: expect.stringContaining("does not exist"),
    });
  });

  it.skipIf(!gcc)("reports a device that is not ACRN's (the ioctl fails)", async () => {
    await expect(probePlatformInfo({ helperPath: helper, device: "/dev/null" })).rejects.toMatchObject({
      code: "ERR_HOST_PROBE",
      message: expect.stringContaining("Inappropriate ioctl for device"),
    });
  });

  it.skipIf(!gcc)("reports a device it cannot open", async () => {
    await expect(probePlatformInfo({ helperPath: helper, device: fx.dir })).rejects.toMatchObject({
      code: "ERR_HOST_PROBE",
      message: expect.stringContaining("Is a directory"),
      hint: expect.stringContaining("root"),
    });
  });
});
