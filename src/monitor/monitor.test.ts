/**
 * The monitor process itself, run for real with a stand-in VMM (`sleep`): what it records
 * when the VMM ends, and when a helper the VM needs dies first.
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { isProcessAlive, readProcStat } from "../host/proc.js";
import { startMonitor } from "./client.js";
import { MONITOR_FILES, vmmExitSchema } from "./spec.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function vmmExit(vmDir: string) {
  for (let i = 0; i < 200; i++) {
    try {
      const text = await readFile(path.join(vmDir, MONITOR_FILES.dir, MONITOR_FILES.vmmExit), "utf8");
      return vmmExitSchema.parse(JSON.parse(text));
    } catch {
      await sleep(50);
    }
  }
  throw new Error("the monitor recorded no VMM exit");
}

async function setup() {
  const { dir, cleanup } = await tempDir();
  cleanups.push(cleanup);
  const vmDir = path.join(dir, "vm", "a");
  return { dir, vmDir };
}

describe("the per-sandbox monitor", () => {
  it("records a VMM killed by a signal", async () => {
    const { dir, vmDir } = await setup();
    const vmm = await startMonitor({
      vmDir,
      launch: { file: "/bin/sleep", args: ["600"], logPath: path.join(dir, "vmm.log") },
    });
    cleanups.push(async () => void vmm.signal("SIGKILL"));
    process.kill(vmm.pid, "SIGKILL");
    expect(await vmmExit(vmDir)).toMatchObject({ signal: "SIGKILL", reason: "signal" });
  });

  // Regression (issue 12): a killed virtiofsd left the guest blocked on its file system, and
  // an exec into it hung for ever. The monitor now stops the VM and says why.
  it("stops the VMM when a helper it needs dies, and records helper-exited", async () => {
    const { dir, vmDir } = await setup();
    const helper = spawn("sleep", ["600"], { stdio: "ignore" });
    cleanups.push(async () => void helper.kill("SIGKILL"));
    const helperStart = (await readProcStat(helper.pid!))!.startTime;
    const vmm = await startMonitor({
      vmDir,
      launch: { file: "/bin/sleep", args: ["600"], logPath: path.join(dir, "vmm.log") },
      helpers: [{ name: "virtiofsd", pid: helper.pid!, startTime: helperStart }],
    });
    cleanups.push(async () => void vmm.signal("SIGKILL"));
    await sleep(500);
    expect(await isProcessAlive(vmm.pid, vmm.startTime)).toBe(true);
    helper.kill("SIGKILL");
    const exit = await vmmExit(vmDir);
    expect(exit).toMatchObject({ signal: "SIGTERM", reason: "helper-exited" });
    expect(exit.message).toBe(
      `virtiofsd (pid ${helper.pid}) exited while the VM needed it; the VM was stopped`,
    );
    expect(await isProcessAlive(vmm.pid, vmm.startTime)).toBe(false);
  });

  it("does not blame a helper that left because the VMM ended", async () => {
    const { dir, vmDir } = await setup();
    const helper = spawn("sleep", ["600"], { stdio: "ignore" });
    cleanups.push(async () => void helper.kill("SIGKILL"));
    const vmm = await startMonitor({
      vmDir,
      launch: { file: "/bin/sleep", args: ["600"], logPath: path.join(dir, "vmm.log") },
      helpers: [
        { name: "virtiofsd", pid: helper.pid!, startTime: (await readProcStat(helper.pid!))!.startTime },
      ],
    });
    cleanups.push(async () => void vmm.signal("SIGKILL"));
    // As virtiofsd leaves when QEMU closes its socket: the helper ends just after the VMM.
    process.kill(vmm.pid, "SIGKILL");
    await sleep(50);
    helper.kill("SIGKILL");
    expect(await vmmExit(vmDir)).toMatchObject({ signal: "SIGKILL", reason: "signal" });
  });
});
