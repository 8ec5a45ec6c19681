/**
 * The crash-safety findings (issue 12), as a new user met them, turned into regressions:
 * 1. cocoon SIGKILLed during boot left QEMU running and `rm -f` did not find it;
 * 2. QEMU SIGKILLed left the sandbox "running", and exec then hung for 15 s;
 * 3. a detached main process that exited was never recorded, and its VM kept running.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cocoon } from "../helpers/cli-process.js";
import { leaksUnder, monitorPids, psAll, rowOf, waitForVmm, within } from "../helpers/crash.js";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";
import { isProcessAlive } from "../../src/host/proc.js";

let root: string;
let cleanupRoot: () => Promise<void>;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  env = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: "" };
}, 20 * 60_000);

afterAll(async () => {
  const ids = (await psAll(env)).map((s) => s.id);
  if (ids.length) await cocoon(["rm", "-f", ...ids], env).result;
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

describe("crash safety on real VMs", () => {
  it("finding 1: cocoon killed mid-boot leaves nothing that rm -f cannot find", async () => {
    const run = cocoon(["run", "-d", "--name", "k2", "--", "sleep", "3600"], env);
    const vmm = await waitForVmm(root, "k2");
    run.child.kill("SIGKILL");
    await run.result;
    // what the user typed: rm -f finds the half-made sandbox and its VM
    const rm = await cocoon(["rm", "-f", "k2"], env).result;
    expect(rm.code).toBe(0);
    expect(await isProcessAlive(vmm)).toBe(false);
    expect(await leaksUnder(root, ["k2"])).toEqual([]);
  });

  it("finding 2: a VMM killed mid-exec is seen as stopped at once, and exec fails at once", async () => {
    expect((await cocoon(["run", "-d", "--name", "k1", "--", "sleep", "3600"], env).result).code).toBe(0);
    const exec = cocoon(["exec", "k1", "--", "sleep", "100"], env);
    const pids = await monitorPids(root, "k1");
    await new Promise((r) => setTimeout(r, 2_000));
    process.kill(pids!.vmm!, "SIGKILL");
    const execResult = await exec.result;
    expect(execResult.code).not.toBe(0);
    expect(await within(1_000, async () => (await rowOf(env, "k1"))?.state === "stopped")).toBeDefined();
    const row = await rowOf(env, "k1");
    expect(row?.stopCause).toMatchObject({ reason: "signal", message: expect.stringContaining("SIGKILL") });
    const again = await cocoon(["exec", "k1", "--", "true"], env).result;
    expect(again.code).toBe(125);
    expect(again.stderr.toString()).toContain(
      "is not running (it is stopped: qemu-system-x86_64 was killed by SIGKILL)",
    );
    const ps = await cocoon(["ps", "-a"], env).result;
    expect(ps.stdout.toString()).toMatch(/k1\s+qemu\s+stopped \(signal\)/);
    // the console is still there to read
    expect((await cocoon(["logs", "k1"], env).result).stdout.toString()).toContain("PCI");
    expect((await cocoon(["rm", "k1"], env).result).code).toBe(0);
    expect(await leaksUnder(root, ["k1"])).toEqual([]);
  });

  it("finding 3: a detached main process's exit is recorded, its VM stops, and wait returns the status", async () => {
    expect(
      (await cocoon(["run", "-d", "--name", "x2", "--", "sh", "-c", "sleep 2; exit 5"], env).result).code,
    ).toBe(0);
    const vmm = (await monitorPids(root, "x2"))!.vmm!;
    const wait = await cocoon(["wait", "x2"], env).result;
    expect(wait.code).toBe(5);
    expect(wait.stdout.toString()).toBe("5\n");
    expect(await within(30_000, async () => !(await isProcessAlive(vmm)))).toBeDefined();
    const row = await rowOf(env, "x2");
    expect(row).toMatchObject({ state: "stopped", stopCause: { reason: "main-exited", exitCode: 5 } });
    expect(row?.guestProcess).toMatchObject({ state: "exited", exit: { exitCode: 5 } });
    const ps = await cocoon(["ps"], env).result;
    expect(ps.stdout.toString()).not.toContain("x2");
    expect((await cocoon(["ps", "--all"], env).result).stdout.toString()).toMatch(/x2\s+qemu\s+exited \(5\)/);
    expect((await cocoon(["rm", "x2"], env).result).code).toBe(0);
    expect(await leaksUnder(root, ["x2"])).toEqual([]);
  });

  it("a killed monitor: the sandbox still runs and says so; its VMM's later death is still seen; gc cleans", async () => {
    expect((await cocoon(["run", "-d", "--name", "m1", "--", "sleep", "3600"], env).result).code).toBe(0);
    const pids = (await monitorPids(root, "m1"))!;
    process.kill(pids.monitor, "SIGKILL");
    expect((await rowOf(env, "m1"))?.state).toBe("running");
    expect((await cocoon(["exec", "m1", "--", "echo", "ok"], env).result).stdout.toString()).toBe("ok\n");
    process.kill(pids.vmm!, "SIGKILL");
    expect(await within(1_000, async () => (await rowOf(env, "m1"))?.state === "stopped")).toBeDefined();
    expect((await rowOf(env, "m1"))?.stopCause?.reason).toBe("vanished");
    expect((await cocoon(["rm", "m1"], env).result).code).toBe(0);
    expect((await cocoon(["gc", "--dry-run"], env).result).stdout.toString()).toBe("nothing to clean up\n");
    expect(await leaksUnder(root, ["m1"])).toEqual([]);
  });

  it("gc finds an orphaned VMM whose record was lost, and removes it", async () => {
    const run = cocoon(["run", "-d", "--name", "o1", "--", "sleep", "3600"], env);
    const vmm = await waitForVmm(root, "o1");
    run.child.kill("SIGKILL");
    await run.result;
    // the record is lost (as if the state were wiped): only the tag on the processes remains
    const { rm } = await import("node:fs/promises");
    await rm(path.join(root, "run", "sbs", "o1"), { recursive: true, force: true });
    const dry = await cocoon(["gc", "--dry-run"], env).result;
    expect(dry.stdout.toString()).toMatch(/process\s+.*qemu-system-x86_64 \(pid \d+\).*o1\s+would remove/);
    expect(await isProcessAlive(vmm)).toBe(true);
    const gc = await cocoon(["gc"], env).result;
    expect(gc.code).toBe(0);
    expect(gc.stdout.toString()).toMatch(/process\s+.*removed/);
    expect(gc.stdout.toString()).toMatch(/directory\s+VM directory/);
    expect(await isProcessAlive(vmm)).toBe(false);
    expect(await leaksUnder(root, ["o1"])).toEqual([]);
  });
});
