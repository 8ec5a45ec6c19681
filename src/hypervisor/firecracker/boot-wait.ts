import { setTimeout as sleep } from "node:timers/promises";
import { HypervisorError } from "../../errors.js";
import { isProcessAlive } from "../../host/proc.js";
import { describeExit, type ManagedProcess } from "../../host/process.js";
import type { FirecrackerClient } from "../../vmm/firecracker/client.js";
import { fileTail } from "../../vmm/firecracker/launch.js";

/** What waiting for a booted guest needs to know about the Firecracker running it. */
export interface GuestWait {
  /** Date.now() value by which the guest must be ready. */
  deadline: number;
  /** Resolves once the guest is usable (the sandbox's agent check, or Firecracker's "Running"). */
  ready: (signal: AbortSignal) => Promise<void>;
  pid: number;
  pidStart?: number;
  /** The process the driver spawned, for its exit status when it is Firecracker itself. */
  spawned?: ManagedProcess;
  logPath: string;
  consolePath: string;
}

/**
 * Races `ready` against Firecracker exiting (ERR_VMM_EXITED, with its log and console) and the
 * deadline (ERR_VMM_TIMEOUT); whichever loses is aborted.
 */
export async function waitForGuest(w: GuestWait): Promise<void> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => {
        // Settle first, then abort: the aborted `ready` must not win the race.
        reject(
          new HypervisorError(
            "ERR_VMM_TIMEOUT",
            `the Firecracker guest was not ready within the boot timeout`,
            {
              hint: "check the guest kernel and rootfs (enable_debug turns on the serial console in console.log)",
            },
          ),
        );
        ac.abort();
      },
      Math.max(0, w.deadline - Date.now()),
    );
  });
  const exited = watchExit(w, ac.signal);
  try {
    await Promise.race([w.ready(ac.signal), exited, timeout]);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

/** Polls GET / until Firecracker reports the VM Running (no agent to ask). */
export async function waitRunning(client: FirecrackerClient, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    if ((await client.describeInstance()).body.state === "Running") return;
    await sleep(10);
  }
}

/** Rejects when Firecracker goes away before `signal` aborts. */
async function watchExit(w: GuestWait, signal: AbortSignal): Promise<never> {
  for (;;) {
    if (signal.aborted) return new Promise<never>(() => undefined);
    if (!(await isProcessAlive(w.pid, w.pidStart))) {
      const log = [await fileTail(w.logPath, 1500), await fileTail(w.consolePath, 1500)]
        .filter(Boolean)
        .join("\n");
      const status =
        w.spawned?.exitStatus && w.spawned.pid === w.pid ? ` (${describeExit(w.spawned.exitStatus)})` : "";
      throw new HypervisorError(
        "ERR_VMM_EXITED",
        `Firecracker exited during boot${status}: ${log || "(no output)"}`,
      );
    }
    await sleep(50);
  }
}
