import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { annotationPolicyFor, hypervisorConfigFor } from "./hypervisor.js";
import { describeConfig, loadConfig } from "./load.js";

let dir: string;
let cleanup: () => Promise<void>;
let system: string;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  system = path.join(dir, "system.toml");
});
afterEach(() => cleanup());

async function file(name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, text);
  return p;
}

describe("loadConfig", () => {
  it("uses built-in defaults when no file exists", async () => {
    const loaded = await loadConfig({ env: {}, systemPath: system });
    expect(loaded.file).toBeUndefined();
    expect(loaded.config.hypervisor.qemu.default_memory).toBe(2048);
    expect(loaded.roots).toEqual({
      stateRoot: "/run/cocoon",
      libRoot: "/var/lib/cocoon",
      assetsDir: "/var/lib/cocoon/assets",
    });
    expect(loaded.sources["hypervisor.qemu.default_memory"]).toBe("default");
    expect(loaded.sources["runtime.assets_dir"]).toBe("derived");
  });

  it("looks up --config, then COCOON_CONFIG, then the system file", async () => {
    const a = await file("a.toml", "[hypervisor.qemu]\ndefault_memory = 512\n");
    const b = await file("b.toml", "[hypervisor.qemu]\ndefault_memory = 768\n");
    await writeFile(system, "[hypervisor.qemu]\ndefault_memory = 1024\n");
    const mem = async (o: Parameters<typeof loadConfig>[0]) =>
      (await loadConfig({ systemPath: system, ...o })).config.hypervisor.qemu.default_memory;
    expect(await mem({ configPath: a, env: { COCOON_CONFIG: b } })).toBe(512);
    expect(await mem({ env: { COCOON_CONFIG: b } })).toBe(768);
    expect(await mem({ env: {} })).toBe(1024);
    const loaded = await loadConfig({ configPath: a, env: {}, systemPath: system });
    expect(loaded.sources["hypervisor.qemu.default_memory"]).toBe(`file:${a}`);
    expect(loaded.sources["hypervisor.qemu.default_vcpus"]).toBe("default");
  });

  it("refuses a named file that does not exist", async () => {
    await expect(loadConfig({ configPath: path.join(dir, "nope.toml"), env: {} })).rejects.toMatchObject({
      code: "ERR_CONFIG_FILE",
    });
    await expect(loadConfig({ env: { COCOON_CONFIG: path.join(dir, "nope.toml") } })).rejects.toMatchObject({
      code: "ERR_CONFIG_FILE",
    });
  });

  it("names an unknown key and the file", async () => {
    const f = await file("c.toml", "[hypervisor.qemu]\ndefault_memroy = 512\n");
    await expect(loadConfig({ configPath: f, env: {} })).rejects.toMatchObject({
      code: "ERR_INVALID_CONFIG",
      message: `unknown key hypervisor.qemu.default_memroy in ${f}`,
    });
    const g = await file("g.toml", "[hypervisor.xen]\npath = '/x'\n");
    await expect(loadConfig({ configPath: g, env: {} })).rejects.toMatchObject({
      message: `unknown key hypervisor.xen in ${g}`,
    });
    const h = await file("h.toml", "[hypervisor.qemu]\njailer_path = '/x'\n");
    await expect(loadConfig({ configPath: h, env: {} })).rejects.toMatchObject({
      message: expect.stringContaining("unknown key hypervisor.qemu.jailer_path"),
    });
  });

  it("names a key with the wrong type", async () => {
    const f = await file("d.toml", '[hypervisor.qemu]\ndefault_memory = "lots"\n');
    await expect(loadConfig({ configPath: f, env: {} })).rejects.toMatchObject({
      code: "ERR_INVALID_CONFIG",
      message: expect.stringMatching(
        new RegExp(`^invalid value for hypervisor.qemu.default_memory in ${f}: `),
      ),
    });
    const e = await file("e.toml", '[runtime]\nhypervisor = "xen"\n');
    await expect(loadConfig({ configPath: e, env: {} })).rejects.toMatchObject({
      message: expect.stringContaining("invalid value for runtime.hypervisor"),
    });
  });

  it("reports TOML syntax errors with the line", async () => {
    const f = await file("s.toml", "[runtime]\nlog_level = \n");
    await expect(loadConfig({ configPath: f, env: {} })).rejects.toMatchObject({
      code: "ERR_CONFIG_FILE",
      message: expect.stringContaining(`cannot parse ${f} at line 2`),
    });
  });

  it("lets environment and flags override the file, recording where each value came from", async () => {
    const f = await file("r.toml", '[runtime]\nstate_root = "/srv/state"\nlog_level = "warn"\n');
    const loaded = await loadConfig({
      configPath: f,
      env: { COCOON_ROOT: "/tmp/envroot", COCOON_ASSETS: "/shared/assets", COCOON_LOG_LEVEL: "error" },
      logLevel: "debug",
    });
    expect(loaded.roots).toEqual({
      stateRoot: "/tmp/envroot/run",
      libRoot: "/tmp/envroot/lib",
      assetsDir: "/shared/assets",
    });
    expect(loaded.sources["runtime.state_root"]).toBe("env:COCOON_ROOT");
    expect(loaded.config.runtime.log_level).toBe("debug");
    expect(loaded.sources["runtime.log_level"]).toBe("flag:--log-level");
    const flagged = await loadConfig({
      configPath: f,
      env: { COCOON_ROOT: "/tmp/envroot" },
      root: "/tmp/flag",
    });
    expect(flagged.roots.stateRoot).toBe("/tmp/flag/run");
    expect(flagged.roots.assetsDir).toBe("/tmp/flag/lib/assets");
    expect(flagged.sources["runtime.state_root"]).toBe("flag:--root");
  });

  it("refuses an invalid value from the environment", async () => {
    await expect(loadConfig({ env: { COCOON_LOG_LEVEL: "loud" }, systemPath: system })).rejects.toMatchObject(
      {
        message: expect.stringContaining("(from env:COCOON_LOG_LEVEL)"),
      },
    );
  });

  it("lists every key for config show", async () => {
    const rows = describeConfig(await loadConfig({ env: {}, systemPath: system }));
    expect(rows).toContainEqual({ key: "hypervisor.qemu.machine_type", value: "microvm", source: "default" });
    expect(rows).toContainEqual({ key: "hypervisor.acrn.default_maxvcpus", value: 1, source: "default" });
    expect(rows.find((r) => r.key === "hypervisor.qemu.enable_annotations")?.value).toEqual([
      "kernel_params",
    ]);
  });
});

describe("hypervisorConfigFor", () => {
  it("maps a section to a HypervisorConfig", async () => {
    const f = await file(
      "q.toml",
      '[hypervisor.qemu]\nkernel = "/k"\nimage = "/i"\nkernel_params = "quiet a=b"\naccelerator = "tcg"\ndefault_vcpus = 2\n',
    );
    const { config } = await loadConfig({ configPath: f, env: {} });
    const hc = hypervisorConfigFor(config, "qemu");
    expect(hc).toMatchObject({
      kernelPath: "/k",
      imagePath: "/i",
      accelerator: "tcg",
      numVCPUs: 2,
      memorySize: 2048,
      hypervisorMachineType: "microvm",
      sharedFS: "virtio-fs",
      kernelParams: [
        { key: "quiet", value: "" },
        { key: "a", value: "b" },
      ],
    });
    expect(hypervisorConfigFor(config, "firecracker")).toMatchObject({
      sharedFS: "none",
      blockDeviceDriver: "virtio-mmio",
    });
    expect(hypervisorConfigFor(config, "acrn")).toMatchObject({
      hypervisorCtlPath: "/usr/bin/acrnctl",
      defaultMaxVCPUs: 1,
    });
    expect(annotationPolicyFor(config, "firecracker").validJailerPaths).toEqual(["/usr/bin/jailer"]);
  });
});
