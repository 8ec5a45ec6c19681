import { spawnSync } from "node:child_process";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { emptyHypervisorConfig } from "../hypervisor/config.js";
import { writeRecord } from "../monitor/records.js";
import { validateSandboxConfig } from "./config.js";
import { describeState, foldLiveness } from "./liveness.js";
import type { SandboxDoc } from "./state.js";

let dir: string;
let cleanup: () => Promise<void>;
let vmDir: string;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  vmDir = path.join(dir, "vm", "a");
  await mkdir(path.join(vmDir, "monitor"), { recursive: true });
});
afterEach(() => cleanup());

/** A pid that existed a moment ago and is gone now. */
function deadPid(): number {
  return spawnSync("true").pid!;
}

function doc(extra: Partial<SandboxDoc> = {}): SandboxDoc {
  const config = validateSandboxConfig({
    id: "a",
    hypervisorType: "mock",
    hypervisorConfig: { ...emptyHypervisorConfig(), kernelPath: "/k", imagePath: "/i" },
    agentConfig: { dialTimeoutMs: 1_000, requestTimeoutMs: 1_000 },
    guestProcess: { args: ["sh"] },
  });
  return {
    config: { ...config, hypervisorConfig: config.hypervisorConfig as unknown as Record<string, unknown> },
    state: "running",
    createdAt: new Date().toISOString(),
    containers: [],
    ...extra,
  };
}

describe("folding what happened to the VM into the sandbox's state", () => {
  it("leaves a sandbox alone while its creator lives; calls it interrupted once the creator is dead", async () => {
    const live = doc({ state: "ready", creating: { pid: process.pid } });
    expect(await foldLiveness(live, vmDir)).toBe(false);
    expect(live.state).toBe("ready");

    const orphan = doc({ state: "ready", creating: { pid: deadPid() } });
    expect(await foldLiveness(orphan, vmDir)).toBe(true);
    expect(orphan.state).toBe("stopped");
    expect(orphan.stopCause?.reason).toBe("interrupted");
  });

  it("records the main process's end as the sandbox's exit status", async () => {
    await writeRecord(vmDir, "main-exit.json", { execId: "main", exitCode: 5, at: "2026-12-04T00:00:00Z" });
    const d = doc();
    expect(await foldLiveness(d, vmDir)).toBe(true);
    expect(d.state).toBe("stopped");
    expect(d.stopCause).toMatchObject({ reason: "main-exited", exitCode: 5 });
    expect(d.guestProcessExit).toEqual({ exitCode: 5 });
    expect(describeState(d)).toBe("stopped: the main process exited with status 5");
  });

  it("keeps an OOM kill in the recorded exit, not only in the stop cause", async () => {
    await writeRecord(vmDir, "main-exit.json", {
      execId: "main",
      exitCode: 137,
      signal: "SIGKILL",
      oomKilled: true,
      at: "2026-12-04T00:00:00Z",
    });
    const d = doc();
    await foldLiveness(d, vmDir);
    expect(d.stopCause?.reason).toBe("oom");
    expect(d.guestProcessExit).toEqual({ exitCode: 137, signal: "SIGKILL", oomKilled: true });
  });

  it("says the VMM's end with the monitor's reason", async () => {
    await writeRecord(vmDir, "vmm-exit.json", {
      code: null,
      signal: "SIGKILL",
      reason: "signal",
      message: "qemu-system-x86_64 was killed by SIGKILL",
      at: "2026-12-04T00:00:00Z",
    });
    const d = doc({ state: "paused" });
    await foldLiveness(d, vmDir);
    expect(d.state).toBe("stopped");
    expect(d.stopCause).toMatchObject({
      reason: "signal",
      message: "qemu-system-x86_64 was killed by SIGKILL",
    });
  });

  it("without a monitor record, judges the VMM by pid and start time", async () => {
    const alive = doc({ hypervisorState: { pid: process.pid } });
    expect(await foldLiveness(alive, vmDir)).toBe(false);
    const gone = doc({ hypervisorState: { pid: deadPid() } });
    expect(await foldLiveness(gone, vmDir)).toBe(true);
    expect(gone.stopCause?.reason).toBe("vanished");
    const recycled = doc({ hypervisorState: { pid: process.pid, pidStartTime: 1 } });
    expect(await foldLiveness(recycled, vmDir)).toBe(true);
  });

  it("ignores torn or foreign records and never revives a stopped sandbox", async () => {
    await writeRecord(vmDir, "vmm-exit.json", { nonsense: true });
    const d = doc();
    expect(await foldLiveness(d, vmDir)).toBe(false);
    const stopped = doc({ state: "stopped" });
    expect(await foldLiveness(stopped, vmDir)).toBe(false);
    expect(stopped.stopCause).toBeUndefined();
  });
});
