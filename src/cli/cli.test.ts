import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../../test/helpers/cli.js";
import { tempDir } from "../../test/helpers/tmp.js";

let dir: string;
let cleanup: () => Promise<void>;
let cfg: string;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  cfg = path.join(dir, "config.toml");
  await writeFile(cfg, "[hypervisor.qemu]\ndefault_memory = 512\n");
});
afterEach(() => cleanup());

describe("cocoon CLI", () => {
  it("prints its version", async () => {
    const r = await runCli(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("shows the effective configuration with sources", async () => {
    const r = await runCli(["--root", dir, "--config", cfg, "config", "show"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`# configuration file: ${cfg}`);
    expect(r.stdout).toMatch(new RegExp(`hypervisor\\.qemu\\.default_memory\\s+512\\s+file:${cfg}`));
    expect(r.stdout).toMatch(/runtime\.state_root\s+".*\/run"\s+flag:--root/);
  });

  it("shows configuration as JSON", async () => {
    const r = await runCli([
      "--root",
      dir,
      "--config",
      cfg,
      "--json",
      "config",
      "show",
      "--section",
      "runtime",
    ]);
    const parsed = JSON.parse(r.stdout) as { file: string; values: { key: string }[] };
    expect(parsed.file).toBe(cfg);
    expect(parsed.values.every((v) => v.key.startsWith("runtime."))).toBe(true);
  });

  it("reports a bad config file in one line with its code and exit status 2", async () => {
    await writeFile(cfg, "[hypervisor.qemu]\nbogus = 1\n");
    const r = await runCli(["--root", dir, "--config", cfg, "config", "show"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`cocoon: unknown key hypervisor.qemu.bogus in ${cfg} [ERR_INVALID_CONFIG]\n`);
    expect(r.stdout).toBe("");
  });

  it("reports errors as JSON with --json", async () => {
    await writeFile(cfg, '[runtime]\nhypervisor = "xen"\n');
    const r = await runCli(["--root", dir, "--config", cfg, "--json", "check"]);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stderr).error.code).toBe("ERR_INVALID_CONFIG");
  });

  it("refuses unknown commands and options with a usage status", async () => {
    expect((await runCli(["frobnicate"])).code).toBe(2);
    expect((await runCli(["--log-level", "loud", "check"])).code).toBe(2);
  });

  it("check reports the accelerator choice and the QEMU binary", async () => {
    const r = await runCli(["--root", dir, "--config", cfg, "--json", "check"]);
    const report = JSON.parse(r.stdout) as {
      ok: boolean;
      checks: { id: string; status: string; detail: string }[];
    };
    const accel = report.checks.find((c) => c.id === "accelerator")!;
    expect(accel.detail).toMatch(/^(kvm|tcg) \(requested auto\): /);
    expect(report.checks.map((c) => c.id)).toEqual(
      expect.arrayContaining(["kvm", "qemu.binary", "cgroups", "tun", "firecracker.binary"]),
    );
    expect(r.code).toBe(report.ok ? 0 : 5);
  });
});
