import { spawn } from "node:child_process";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { isProcessAlive } from "../host/proc.js";
import { writeRecord } from "./records.js";
import { findTaggedProcesses, ownerFromEnviron, reapVmProcesses } from "./reap.js";
import { OWNER_ENV } from "./spec.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** A long sleep carrying a VM's tag, as a VMM or virtiofsd would. */
function taggedSleep(vmDir: string): number {
  const child = spawn("sleep", ["600"], { env: { ...process.env, [OWNER_ENV]: vmDir }, stdio: "ignore" });
  cleanups.push(async () => void child.kill("SIGKILL"));
  return child.pid!;
}

describe("finding what cocoon started for a VM", () => {
  it("reads the tag out of an environ block", () => {
    const env = Buffer.from(`PATH=/bin\0${OWNER_ENV}=/run/cocoon/vm/a\0HOME=/root\0`);
    expect(ownerFromEnviron(env)).toBe("/run/cocoon/vm/a");
    expect(ownerFromEnviron(Buffer.from(`X${OWNER_ENV}=/nope\0`))).toBeUndefined();
    expect(ownerFromEnviron(Buffer.alloc(0))).toBeUndefined();
  });

  it("finds tagged processes under a VM root, and reaps one VM's without touching another's", async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const vmRoot = path.join(dir, "vm");
    const a = taggedSleep(path.join(vmRoot, "a"));
    const b = taggedSleep(path.join(vmRoot, "b"));
    const elsewhere = taggedSleep(path.join(dir, "other", "c"));
    await new Promise((r) => setTimeout(r, 100));
    const found = await findTaggedProcesses(vmRoot);
    expect(found.map((p) => p.pid).sort()).toEqual([a, b].sort());
    expect(found.find((p) => p.pid === a)).toMatchObject({ name: "sleep", vmDir: path.join(vmRoot, "a") });

    const reaped = await reapVmProcesses(path.join(vmRoot, "a"));
    expect(reaped).toEqual([{ pid: a, name: "sleep" }]);
    expect(await isProcessAlive(a)).toBe(false);
    expect(await isProcessAlive(b)).toBe(true);
    expect(await isProcessAlive(elsewhere)).toBe(true);
  });

  it("ends the recorded monitor and VMM, and never signals a pid whose start time differs", async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const vmDir = path.join(dir, "vm", "x");
    await mkdir(path.join(vmDir, "monitor"), { recursive: true });
    const untagged = spawn("sleep", ["600"], { stdio: "ignore" });
    cleanups.push(async () => void untagged.kill("SIGKILL"));
    const recycled = spawn("sleep", ["600"], { stdio: "ignore" });
    cleanups.push(async () => void recycled.kill("SIGKILL"));
    await new Promise((r) => setTimeout(r, 100));
    await writeRecord(vmDir, "monitor.json", {
      monitor: { pid: untagged.pid! },
      // the record's VMM pid now belongs to another process (start time 1 is long gone)
      vmm: { pid: recycled.pid!, startTime: 1 },
    });
    const reaped = await reapVmProcesses(vmDir);
    expect(reaped).toEqual([{ pid: untagged.pid, name: "monitor" }]);
    expect(await isProcessAlive(recycled.pid!)).toBe(true);
  });
});
