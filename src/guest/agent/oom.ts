import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { ProcessExit } from "../../agent/protocol/methods.js";

const exec = promisify(execFile);

/**
 * Whether the OOM killer ended a container's init. runc removes the container's cgroup (and
 * its memory.events) as it exits, so the kernel log is what is left: an OOM kill in a memory
 * cgroup logs `oom-kill:... oom_memcg=/cocoon/<id>,...`.
 */
export async function oomNote(
  containerId: string,
  exit: ProcessExit,
): Promise<Partial<ProcessExit> | undefined> {
  if (exit.signal !== "SIGKILL" && exit.exitCode !== 137) return undefined;
  const { stdout } = await exec("dmesg", [], { maxBuffer: 4 * 1024 * 1024 });
  return stdout.includes(`oom_memcg=/cocoon/${containerId},`) ? { oomKilled: true } : undefined;
}
