import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runtime } from "../../src/sandbox/runtime.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

// Live resize of a real q35 VM (TCG): vCPU and pc-dimm hotplug, seen by the guest.
let root: string;
let cleanupRoot: () => Promise<void>;
let runtime: Runtime;
let sb: Sandbox | undefined;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  const configPath = path.join(root, "config.toml");
  await writeFile(configPath, `[hypervisor.qemu]\nmachine_type = "q35"\nshared_fs = "none"\n`);
  runtime = await Runtime.open({ root, configPath, env: { COCOON_ASSETS: ASSETS_DIR } });
}, 20 * 60_000);

afterAll(async () => {
  await sb?.delete({ force: true }).catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function guest(s: Sandbox, script: string): Promise<string> {
  const out = await (await s.exec({ process: { args: ["sh", "-c", script] } })).output();
  return out.stdout.toString("utf8").trim();
}
const memTotalMiB = async (s: Sandbox): Promise<number> =>
  Math.round(Number(await guest(s, "awk '/^MemTotal/ {print $2}' /proc/meminfo")) / 1024);

describe("live resize on q35 (real VM)", () => {
  it("grows vCPUs and memory, refuses bad sizes leaving the VM as it was, and shrinks back", async () => {
    sb = await runtime.createSandbox({ cpus: 1, memoryMB: 512, process: { args: ["sleep", "600"] } });
    await sb.start();
    expect(await guest(sb, "nproc")).toBe("1");
    const bootMiB = await memTotalMiB(sb);
    const cg = JSON.parse(
      await readFile(path.join(runtime.paths.sandboxDir(sb.id), "cgroups.json"), "utf8"),
    ) as {
      data: { plan: { cpu: string; memory: string } };
    };
    const quota = (): Promise<string> => readFile(path.join(cg.data.plan.cpu, "cpu.cfs_quota_us"), "utf8");
    const memLimit = (): Promise<string> =>
      readFile(path.join(cg.data.plan.memory, "memory.limit_in_bytes"), "utf8");

    const up = await sb.update({ cpus: 2, memoryMB: 1024 });
    expect(up).toMatchObject({ vcpus: 2, memoryMB: 1024, guest: { onlineCpus: 2 } });
    expect(await guest(sb, "nproc")).toBe("2");
    expect(await memTotalMiB(sb)).toBeGreaterThanOrEqual(bootMiB + 450);
    expect((await quota()).trim()).toBe("200000");
    expect((await memLimit()).trim()).toBe(String((1024 + 512) * 2 ** 20));

    // bad input: clear errors, nothing changed
    await expect(sb.update({ cpus: 3 })).rejects.toMatchObject({ code: "ERR_RESOURCE_LIMIT" });
    await expect(sb.update({ memoryMB: 10_000_000 })).rejects.toMatchObject({ code: "ERR_RESOURCE_LIMIT" });
    await expect(sb.update({ memoryMB: 1100 })).rejects.toMatchObject({
      code: "ERR_RESOURCE_LIMIT",
      message: expect.stringContaining("steps of"),
    });
    await expect(sb.update({ memoryMB: 256 })).rejects.toMatchObject({ code: "ERR_RESOURCE_LIMIT" });
    expect(await guest(sb, "nproc")).toBe("2");
    expect((await quota()).trim()).toBe("200000");

    const down = await sb.update({ cpus: 1, memoryMB: 512 });
    expect(down).toMatchObject({ vcpus: 1, memoryMB: 512 });
    expect(await guest(sb, "nproc")).toBe("1");
    expect(await memTotalMiB(sb)).toBeLessThan(bootMiB + 64);
    expect((await quota()).trim()).toBe("100000");

    // QEMU 7.2 segfaults hot-plugging a vCPU after an unplug: refused, the VM keeps running
    await expect(sb.update({ cpus: 2 })).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    await expect(sb.update({ memoryMB: 768 })).rejects.toMatchObject({ code: "ERR_NOT_SUPPORTED" });
    expect(await guest(sb, "nproc")).toBe("1");
  });
});
