import { describe, expect, it } from "vitest";
import {
  assetPath,
  defaultMaxVCPUs,
  emptyHypervisorConfig,
  isCustomAsset,
  validateHypervisorConfig,
  type HypervisorConfig,
} from "./config.js";

function conf(overrides: Partial<HypervisorConfig> = {}): HypervisorConfig {
  return { ...emptyHypervisorConfig(), kernelPath: "/k", imagePath: "/img", ...overrides };
}

const invalid = (message: RegExp | string) =>
  expect.objectContaining({ code: "ERR_INVALID_CONFIG", message: expect.stringMatching(message) });

describe("validateHypervisorConfig", () => {
  it("fills the seed's defaults", () => {
    const out = validateHypervisorConfig(conf(), { hostCpus: 2 });
    expect(out.numVCPUs).toBe(1);
    expect(out.memorySize).toBe(2048);
    expect(out.defaultBridges).toBe(1);
    expect(out.blockDeviceDriver).toBe("virtio-scsi");
    expect(out.defaultMaxVCPUs).toBe(2);
    expect(out.msize9p).toBe(8192);
  });

  it("keeps explicit values and does not mutate its input", () => {
    const input = conf({
      numVCPUs: 2,
      memorySize: 512,
      msize9p: 262144,
      blockDeviceDriver: "virtio-blk",
      defaultMaxVCPUs: 4,
    });
    const out = validateHypervisorConfig(input, { hostCpus: 2 });
    expect(out).toMatchObject({
      numVCPUs: 2,
      memorySize: 512,
      msize9p: 262144,
      blockDeviceDriver: "virtio-blk",
      defaultMaxVCPUs: 4,
    });
    expect(input.defaultBridges).toBe(0);
  });

  it("caps the default max vCPUs at the VMM ceiling", () => {
    expect(defaultMaxVCPUs(512)).toBe(240);
    expect(defaultMaxVCPUs(0)).toBe(1);
  });

  it("requires a kernel", () => {
    expect(() => validateHypervisorConfig(conf({ kernelPath: "" }))).toThrow(invalid(/missing kernel path/));
  });

  it("requires an image or an initrd", () => {
    expect(() => validateHypervisorConfig(conf({ imagePath: "" }))).toThrow(
      invalid(/missing image and initrd/),
    );
    expect(validateHypervisorConfig(conf({ imagePath: "", initrdPath: "/i" })).initrdPath).toBe("/i");
  });

  it("refuses image and initrd together", () => {
    expect(() => validateHypervisorConfig(conf({ initrdPath: "/i" }))).toThrow(invalid(/cannot both be set/));
  });

  it("accepts a kernel given only as a custom asset", () => {
    const out = validateHypervisorConfig(
      conf({ kernelPath: "", customAssets: { kernel: { type: "kernel", path: "/ck" } } }),
    );
    expect(assetPath(out, "kernel")).toBe("/ck");
  });

  it("refuses both template flags", () => {
    expect(() =>
      validateHypervisorConfig(
        conf({ bootToBeTemplate: true, bootFromTemplate: true, memoryPath: "/m", devicesStatePath: "/d" }),
      ),
    ).toThrow(invalid(/cannot both be set/));
  });

  it("requires a memory path for either template flag", () => {
    expect(() => validateHypervisorConfig(conf({ bootToBeTemplate: true }))).toThrow(invalid(/memory path/));
    expect(() => validateHypervisorConfig(conf({ bootFromTemplate: true, devicesStatePath: "/d" }))).toThrow(
      invalid(/memory path/),
    );
    expect(
      validateHypervisorConfig(conf({ bootToBeTemplate: true, memoryPath: "/m" })).bootToBeTemplate,
    ).toBe(true);
  });

  it("requires a devices state path to boot from a template", () => {
    expect(() => validateHypervisorConfig(conf({ bootFromTemplate: true, memoryPath: "/m" }))).toThrow(
      invalid(/devices state path/),
    );
  });

  it("refuses negative or fractional sizes and unknown drivers", () => {
    expect(() => validateHypervisorConfig(conf({ memorySize: -1 }))).toThrow(invalid(/memorySize/));
    expect(() => validateHypervisorConfig(conf({ numVCPUs: 1.5 }))).toThrow(invalid(/numVCPUs/));
    expect(() =>
      validateHypervisorConfig(conf({ blockDeviceDriver: "ide" as HypervisorConfig["blockDeviceDriver"] })),
    ).toThrow(invalid(/unknown block device driver "ide"/));
  });

  it("refuses more boot vCPUs than the maximum", () => {
    expect(() => validateHypervisorConfig(conf({ numVCPUs: 4, defaultMaxVCPUs: 2 }))).toThrow(
      invalid(/larger than the maximum/),
    );
  });
});

describe("assetPath", () => {
  it("prefers a custom asset over the configured path, per type", () => {
    const c = conf({
      hypervisorPath: "/usr/bin/qemu",
      jailerPath: "/usr/bin/jailer",
      customAssets: { image: { type: "image", path: "/custom.img" } },
    });
    expect(assetPath(c, "image")).toBe("/custom.img");
    expect(isCustomAsset(c, "image")).toBe(true);
    expect(assetPath(c, "kernel")).toBe("/k");
    expect(isCustomAsset(c, "kernel")).toBe(false);
    expect(assetPath(c, "hypervisor")).toBe("/usr/bin/qemu");
    expect(assetPath(c, "jailer")).toBe("/usr/bin/jailer");
    expect(assetPath(c, "initrd")).toBe("");
  });
});
