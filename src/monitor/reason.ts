import { open } from "node:fs/promises";
import type { VmmExit } from "./spec.js";

/** The last `bytes` of a file ("" when it cannot be read). */
export async function readFileTail(file: string | undefined, bytes = 64 * 1024): Promise<string> {
  if (!file) return "";
  try {
    const fh = await open(file, "r");
    try {
      const { size } = await fh.stat();
      const length = Math.min(size, bytes);
      const buf = Buffer.alloc(length);
      await fh.read(buf, 0, length, size - length);
      return buf.toString("utf8");
    } finally {
      await fh.close();
    }
  } catch {
    return "";
  }
}

const PANIC_RE = /Kernel panic - not syncing[^\r\n]*/;
const OOM_RE = /Out of memory: Killed process[^\r\n]*|oom-kill:[^\r\n]*/;

/** The guest's own words for an out-of-memory kill on its console, if any. */
export function oomLine(consoleTail: string): string | undefined {
  return OOM_RE.exec(consoleTail)?.[0].trim();
}

/**
 * Why the VMM ended, from its exit status and the guest console: a kernel panic explains an
 * exit better than the status (QEMU with -no-reboot exits 0 after a panic), and a stop the
 * monitor itself made after the main process ended is said as such.
 */
export function classifyVmmExit(
  status: { code: number | null; signal: string | null },
  consoleTail: string,
  context: {
    mainExited?: { exitCode: number } | undefined;
    vmm?: string;
    /** A helper the VM needed died and the monitor stopped the VM for it. */
    helperExited?: { name: string; pid: number } | undefined;
  } = {},
): Omit<VmmExit, "at"> {
  const vmm = context.vmm ?? "the VMM";
  const panic = PANIC_RE.exec(consoleTail)?.[0].trim();
  if (panic) return { ...status, reason: "panic", message: `the guest kernel panicked: ${panic}` };
  if (context.helperExited) {
    const h = context.helperExited;
    return {
      ...status,
      reason: "helper-exited",
      message: `${h.name} (pid ${h.pid}) exited while the VM needed it; the VM was stopped`,
    };
  }
  if (context.mainExited) {
    return {
      ...status,
      reason: "main-exited",
      message: `the main process exited with status ${context.mainExited.exitCode}; the VM was stopped`,
    };
  }
  const oom = oomLine(consoleTail);
  if (status.signal) {
    return {
      ...status,
      reason: oom ? "oom" : "signal",
      message: `${vmm} was killed by ${status.signal}${oom ? ` (the guest ran out of memory: ${oom})` : ""}`,
    };
  }
  return { ...status, reason: "exited", message: `${vmm} exited with status ${status.code ?? "?"}` };
}
