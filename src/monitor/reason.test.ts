import { describe, expect, it } from "vitest";
import { classifyVmmExit, oomLine } from "./reason.js";

describe("why a VMM ended", () => {
  it("says a kernel panic seen on the console, whatever the exit status", () => {
    const tail =
      "booting\n[    1.2] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n";
    expect(classifyVmmExit({ code: 0, signal: null }, tail)).toEqual({
      code: 0,
      signal: null,
      reason: "panic",
      message:
        "the guest kernel panicked: Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
    });
  });

  it("names the signal, and an out-of-memory kill the guest reported", () => {
    expect(classifyVmmExit({ code: null, signal: "SIGKILL" }, "", { vmm: "qemu" }).message).toBe(
      "qemu was killed by SIGKILL",
    );
    const oom = classifyVmmExit(
      { code: null, signal: "SIGKILL" },
      "[ 9.1] Out of memory: Killed process 77 (hog) total-vm:1000kB\n",
    );
    expect(oom.reason).toBe("oom");
    expect(oom.message).toContain("the guest ran out of memory: Out of memory: Killed process 77 (hog)");
  });

  it("says when the monitor stopped the VM because the main process ended", () => {
    expect(classifyVmmExit({ code: 0, signal: null }, "", { mainExited: { exitCode: 5 } })).toMatchObject({
      reason: "main-exited",
      message: "the main process exited with status 5; the VM was stopped",
    });
  });

  it("reports a plain exit with its status", () => {
    expect(classifyVmmExit({ code: 1, signal: null }, "nothing special")).toMatchObject({
      reason: "exited",
      message: "the VMM exited with status 1",
    });
    expect(oomLine("no such thing")).toBeUndefined();
  });
});
