import { describe, expect, it } from "vitest";
import { isProcessAlive } from "./proc.js";
import { ManagedProcess, pidStartTime, runChecked, runCommand, terminatePid } from "./process.js";

const node = process.execPath;
const IGNORE_TERM = "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000); console.log('ready')";

async function ready(p: ManagedProcess): Promise<void> {
  await new Promise<void>((resolve) => p.stdoutStream!.once("data", () => resolve()));
}

describe("processes", () => {
  it("reports a missing program as a missing tool", async () => {
    await expect(ManagedProcess.spawn("/nonexistent/qemu", [])).rejects.toMatchObject({
      code: "ERR_HOST_MISSING_TOOL",
      message: "cannot run /nonexistent/qemu: no such program",
    });
  });

  it("collects output, exit code and signal", async () => {
    const ok = await runCommand(node, [
      "-e",
      "process.stdout.write('out'); process.stderr.write('err'); process.exit(3)",
    ]);
    expect(ok).toMatchObject({ code: 3, signal: null, stdout: "out", stderr: "err", timedOut: false });
    const killed = await runCommand(node, ["-e", "process.kill(process.pid, 'SIGKILL')"]);
    expect(killed.signal).toBe("SIGKILL");
    await expect(runChecked(node, ["-e", "console.error('boom'); process.exit(1)"])).rejects.toMatchObject({
      code: "ERR_PROCESS",
      message: expect.stringContaining("boom"),
    });
  });

  it("kills a command that runs past its timeout", async () => {
    const r = await runCommand(node, ["-e", "setInterval(() => {}, 1000)"], { timeoutMs: 200 });
    expect(r).toMatchObject({ timedOut: true, signal: "SIGKILL" });
  });

  it("escalates from SIGTERM to SIGKILL for a child that ignores SIGTERM", async () => {
    const p = await ManagedProcess.spawn(node, ["-e", IGNORE_TERM]);
    await ready(p);
    const status = await p.terminate([{ signal: "SIGTERM", timeoutMs: 300 }]);
    expect(status.signal).toBe("SIGKILL");
    expect(await isProcessAlive(p.pid)).toBe(false);
  });

  it("runs a graceful action first and stops there when it works", async () => {
    const p = await ManagedProcess.spawn(
      node,
      ["-e", "process.stdin.on('data', () => process.exit(0)); console.log('ready')"],
      {
        stdin: "pipe",
      },
    );
    await ready(p);
    const status = await p.terminate([
      { action: async () => void p.child.stdin!.write("quit\n"), timeoutMs: 5_000 },
      { signal: "SIGKILL", timeoutMs: 1_000 },
    ]);
    expect(status).toEqual({ code: 0, signal: null });
  });

  it("terminates a detached process known only by pid, checking its start time", async () => {
    const p = await ManagedProcess.spawn(node, ["-e", IGNORE_TERM], { detached: true });
    await ready(p);
    const start = await pidStartTime(p.pid);
    expect(start).toBeDefined();
    // a wrong start time means "not our process": nothing is signalled
    await terminatePid(p.pid, { startTime: start! + 1, steps: [{ signal: "SIGKILL", timeoutMs: 100 }] });
    expect(await isProcessAlive(p.pid)).toBe(true);
    await terminatePid(p.pid, { startTime: start!, steps: [{ signal: "SIGTERM", timeoutMs: 200 }] });
    await p.exited;
    expect(await isProcessAlive(p.pid)).toBe(false);
  });
});
