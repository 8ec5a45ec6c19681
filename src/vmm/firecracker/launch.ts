import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { HypervisorError } from "../../errors.js";
import { launchInNetns } from "../../hypervisor/netns-launch.js";
import { ManagedProcess, describeExit, type SpawnOptions } from "../../host/process.js";
import { isProcessAlive, readProcStat } from "../../host/proc.js";
import { FirecrackerClient } from "./client.js";
import { readPidFile } from "./jail.js";
import { buildJailerArgs, spawnedPidIsFirecracker, writesPidFile, type JailerOptions } from "./jailer.js";
import type { FcVersion } from "./version.js";

/**
 * Starting Firecracker, directly or through the jailer, and finding out which process is
 * Firecracker: the jailer execs in place, clones (--new-pid-ns) or double-forks (--daemonize
 * since 1.7), so the pid comes from the jailer's pid file whenever it writes one.
 */

export interface LaunchRequest {
  firecrackerPath: string;
  /** Firecracker flags other than --id (the jailer adds it; unjailed launches add it here). */
  firecrackerArgs: string[];
  id: string;
  jailer?: {
    path: string;
    version: FcVersion;
    options: Omit<JailerOptions, "execFile" | "firecrackerArgs" | "id" | "netns">;
  };
  /**
   * The network namespace Firecracker runs in (where its taps are): the jailer joins it itself
   * (`--netns`); an unjailed Firecracker is started in it through nsenter.
   */
  netnsPath?: string;
  /** Host path of the jailer pid file (jailed launches). */
  pidFile?: string;
  stdout?: SpawnOptions["stdout"];
  stderr?: SpawnOptions["stderr"];
  detached?: boolean;
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the pid file (default 5 s). */
  timeoutMs?: number;
}

export interface Launched {
  /** The process cocoon spawned (the jailer, or Firecracker itself). */
  spawned: ManagedProcess;
  /** Firecracker's pid (host pid namespace). */
  pid: number;
  startTime: number | undefined;
  argv: string[];
}

export async function launchFirecracker(r: LaunchRequest): Promise<Launched> {
  const jailed = r.jailer !== undefined;
  const { file, args: argv } = jailed
    ? {
        file: r.jailer!.path,
        args: buildJailerArgs(
          {
            ...r.jailer!.options,
            ...(r.netnsPath !== undefined ? { netns: r.netnsPath } : {}),
            id: r.id,
            execFile: r.firecrackerPath,
            firecrackerArgs: r.firecrackerArgs,
          },
          r.jailer!.version,
        ),
      }
    : // nsenter execs Firecracker in place: the spawned pid stays Firecracker's.
      launchInNetns({ file: r.firecrackerPath, args: ["--id", r.id, ...r.firecrackerArgs] }, r.netnsPath);
  const spawned = await ManagedProcess.spawn(file, argv, {
    stdin: "ignore",
    stdout: r.stdout ?? "pipe",
    stderr: r.stderr ?? "pipe",
    detached: r.detached ?? false,
    ...(r.env ? { env: r.env } : {}),
  });
  let pid = spawned.pid;
  if (jailed) {
    const o = r.jailer!.options;
    const viaPidFile = writesPidFile(r.jailer!.version, o);
    if (!spawnedPidIsFirecracker(r.jailer!.version, o) || viaPidFile) {
      if (!viaPidFile || !r.pidFile) {
        await spawned.terminate([{ signal: "SIGKILL", timeoutMs: 5_000 }]);
        throw new HypervisorError(
          "ERR_VMM_START",
          "cannot find Firecracker's pid: this jailer mode forks and writes no pid file",
        );
      }
      pid = await waitPidFile(r.pidFile, spawned, r.timeoutMs ?? 5_000);
    }
  }
  const startTime = (await readProcStat(pid))?.startTime;
  return { spawned, pid, startTime, argv: [file, ...argv] };
}

/** Reads the jailer's pid file, retrying while it is missing (the jailer writes it after forking). */
async function waitPidFile(pidFile: string, spawned: ManagedProcess, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = await readPidFile(pidFile);
    if (pid !== undefined) return pid;
    const status = spawned.exitStatus;
    if (status && (status.code !== 0 || status.signal)) {
      await spawned.closed;
      throw new HypervisorError("ERR_VMM_START", `the jailer ${describeExit(status)}: ${tail(spawned)}`, {
        details: { pidFile },
      });
    }
    if (Date.now() >= deadline)
      throw new HypervisorError(
        "ERR_VMM_TIMEOUT",
        `the jailer wrote no pid file (${pidFile}) within ${timeoutMs} ms`,
      );
    await sleep(10);
  }
}

function tail(p: ManagedProcess): string {
  const text = `${p.stderrTail()}\n${p.stdoutTail()}`.trim();
  return text ? text.slice(-2000) : "(no output)";
}

export interface WaitApiOptions {
  timeoutMs: number;
  /** Poll interval (the seed polls every 10 ms). */
  pollMs?: number;
  /** Firecracker's pid: the wait fails as soon as it is gone. */
  pid?: number;
  startTime?: number;
  /** The spawned process, when it is Firecracker (or a jailer that stays in the foreground). */
  spawned?: ManagedProcess;
  /** Extra text for errors (the console tail...). */
  describe?: () => Promise<string>;
}

/**
 * Polls GET / until Firecracker answers (the API is ready), the process dies (ERR_VMM_START,
 * with its output), or the time is up (ERR_VMM_TIMEOUT).
 */
export async function waitForApi(socketPath: string, o: WaitApiOptions): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  const client = new FirecrackerClient({ socketPath, requestTimeoutMs: 1_000 });
  try {
    for (;;) {
      try {
        const res = await client.raw("GET", "/");
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      const status = o.spawned?.exitStatus;
      const gone = o.pid !== undefined && !(await isProcessAlive(o.pid, o.startTime));
      if (gone || (status && o.spawned && o.pid === o.spawned.pid)) {
        if (o.spawned) await Promise.race([o.spawned.closed, sleep(500)]);
        const output = o.spawned ? tail(o.spawned) : "";
        const extra = o.describe ? await o.describe().catch(() => "") : "";
        throw new HypervisorError(
          "ERR_VMM_START",
          `Firecracker exited before its API came up${status ? ` (${describeExit(status)})` : ""}: ${[output, extra].filter((x) => x && x !== "(no output)").join("\n") || "(no output)"}`,
          { details: { socketPath } },
        );
      }
      if (Date.now() >= deadline) {
        throw new HypervisorError(
          "ERR_VMM_TIMEOUT",
          `Firecracker's API at ${socketPath} did not answer within ${o.timeoutMs} ms`,
          {
            details: { socketPath },
            hint: "check that the Firecracker binary runs on this host (KVM access) and look at its log or console",
          },
        );
      }
      await sleep(o.pollMs ?? 10);
    }
  } finally {
    await client.close();
  }
}

/** The last bytes of a file (console, log), for error messages. */
export async function fileTail(file: string, bytes = 2000): Promise<string> {
  try {
    const text = await readFile(file, "utf8");
    return text.slice(-bytes);
  } catch {
    return "";
  }
}
