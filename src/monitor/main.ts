/**
 * The per-sandbox monitor process (see spec.ts). Started detached by `startMonitor`, with
 * the path of its spec file as its one argument. It:
 *  1. spawns the VMM as its own child and records both identities (pid + start time);
 *  2. tells its starter "started" on stdout (and later "exited"), ignoring a starter that died;
 *  3. once the sandbox names its main process, waits for it through the agent, records its
 *     exit, and stops the VM (a sandbox stops when its main process ends, as a container does);
 *  4. watches the helpers the VM needs (virtiofsd) and stops the VM when one dies;
 *  5. records the VMM's exit and the reason, then exits.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentClient } from "../agent/client.js";
import { isProcessAlive, readProcStat } from "../host/proc.js";
import { monitorDir, readWatchMain, writeRecord } from "./records.js";
import { classifyVmmExit, oomLine, readFileTail } from "./reason.js";
import {
  MONITOR_FILES,
  OWNER_ENV,
  monitorSpecSchema,
  type MainExit,
  type MonitorEvent,
  type MonitorSpec,
} from "./spec.js";

function tell(event: MonitorEvent): void {
  try {
    process.stdout.write(JSON.stringify(event) + "\n");
  } catch {
    // the starter is gone: nobody to tell
  }
}

async function startTimeOf(pid: number): Promise<number | undefined> {
  return (await readProcStat(pid))?.startTime;
}

function spawnVmm(spec: MonitorSpec): ChildProcess {
  const logFd = openSync(spec.launch.logPath, "a");
  try {
    return spawn(spec.launch.file, spec.launch.args, {
      // Its own process group: a Ctrl-C at the terminal that started cocoon must not reach the VM.
      detached: true,
      stdio: ["ignore", logFd, logFd],
      env: { ...process.env, ...spec.launch.env, [OWNER_ENV]: spec.vmDir },
      ...(spec.launch.cwd ? { cwd: spec.launch.cwd } : {}),
      shell: false,
    });
  } finally {
    closeSync(logFd);
  }
}

/** Waits for the main process the sandbox names, records its end, then stops the VM. */
async function watchMain(
  spec: MonitorSpec,
  vmm: ChildProcess,
  done: Promise<unknown>,
): Promise<MainExit | undefined> {
  const channel = spec.agent;
  if (!channel) return undefined;
  let finished = false;
  void done.then(() => (finished = true));
  let watch: { execId: string; graceMs: number } | undefined;
  while (!finished && !(watch = await readWatchMain(spec.vmDir))) await sleep(200);
  if (finished || !watch) return undefined;
  const execId = watch.execId;
  let agent: AgentClient | undefined;
  try {
    agent = await AgentClient.connect(channel, { timeoutMs: 30_000 });
    const exit = await agent.call("process.wait", { execId }, { timeoutMs: 0 });
    const tail = exit.signal === "SIGKILL" ? await readFileTail(spec.consoleLog) : "";
    const main: MainExit = {
      execId,
      exitCode: exit.exitCode,
      ...(exit.signal ? { signal: exit.signal } : {}),
      // The agent's word (the kernel log of the container's memory cgroup) or the console's:
      // the console line can come after the answer, or not at all at a quiet loglevel.
      ...(exit.oomKilled || oomLine(tail) ? { oomKilled: true } : {}),
      at: new Date().toISOString(),
    };
    await writeRecord(spec.vmDir, MONITOR_FILES.mainExit, main);
    if (watch.graceMs > 0) await Promise.race([done, sleep(watch.graceMs)]);
    // Tear the guest side down (containers, mounts), then the VM: SIGTERM makes QEMU quit cleanly.
    await agent.call("sandbox.destroy", {}, { timeoutMs: 10_000 }).catch(() => undefined);
    await agent.close().catch(() => undefined);
    agent = undefined;
    if (!finished) await stopVmm(vmm, done);
    return main;
  } catch {
    // The VM went away (or the agent did): the VMM's own exit tells the rest.
    return undefined;
  } finally {
    await agent?.close().catch(() => undefined);
  }
}

/** Stops the VMM: SIGTERM makes QEMU quit cleanly; SIGKILL if it has not within 5 s. */
async function stopVmm(vmm: ChildProcess, done: Promise<unknown>): Promise<void> {
  vmm.kill("SIGTERM");
  const ended = await Promise.race([done.then(() => true), sleep(5_000).then(() => false)]);
  if (!ended) vmm.kill("SIGKILL");
}

const HELPER_POLL_MS = 200;
/**
 * A helper normally exits because the VMM did (virtiofsd leaves when QEMU closes its
 * socket): a VMM that ends within this long after its helper was not stopped by it.
 */
const HELPER_GRACE_MS = 500;

/**
 * Polls the helpers the VM needs. A dead helper leaves the guest blocked on it for ever (an
 * exec on a virtio-fs rootfs hangs), so the VM is stopped, and the helper named as the reason.
 */
async function watchHelpers(
  spec: MonitorSpec,
  vmm: ChildProcess,
  done: Promise<unknown>,
): Promise<{ name: string; pid: number } | undefined> {
  const helpers = spec.helpers ?? [];
  if (helpers.length === 0) return undefined;
  let finished = false;
  void done.then(() => (finished = true));
  while (!finished) {
    for (const h of helpers) {
      if (await isProcessAlive(h.pid, h.startTime)) continue;
      if (finished) return undefined;
      const vmmEnded = await Promise.race([done.then(() => true), sleep(HELPER_GRACE_MS).then(() => false)]);
      if (vmmEnded) return undefined;
      await stopVmm(vmm, done);
      return { name: h.name, pid: h.pid };
    }
    await Promise.race([done, sleep(HELPER_POLL_MS)]);
  }
  return undefined;
}

async function main(): Promise<void> {
  const specPath = process.argv[2];
  if (!specPath) throw new Error("usage: monitor SPEC.json");
  const spec = monitorSpecSchema.parse(JSON.parse(readFileSync(specPath, "utf8")));
  process.stdout.on("error", () => undefined);
  // Signals meant for the terminal or session we were started from are not for us.
  for (const sig of ["SIGINT", "SIGHUP", "SIGPIPE"] as const) process.on(sig, () => undefined);

  await mkdir(monitorDir(spec.vmDir), { recursive: true });
  const self = { pid: process.pid, startTime: await startTimeOf(process.pid) };
  await writeRecord(spec.vmDir, MONITOR_FILES.record, { monitor: self });

  const vmm = spawnVmm(spec);
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    vmm.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const spawned = await new Promise<Error | undefined>((resolve) => {
    vmm.once("spawn", () => resolve(undefined));
    vmm.once("error", (err) => resolve(err));
  });
  if (spawned) {
    tell({ event: "failed", message: `cannot run ${spec.launch.file}: ${spawned.message}` });
    return;
  }
  const vmmId = { pid: vmm.pid!, startTime: await startTimeOf(vmm.pid!) };
  await writeRecord(spec.vmDir, MONITOR_FILES.record, { monitor: self, vmm: vmmId });
  tell({
    event: "started",
    pid: vmmId.pid,
    ...(vmmId.startTime !== undefined ? { startTime: vmmId.startTime } : {}),
  });
  // A SIGTERM for the monitor (gc, a shutdown) is passed on: the VM goes, and its end is still recorded.
  process.on("SIGTERM", () => vmm.kill("SIGTERM"));

  const mainWatch = watchMain(spec, vmm, exited);
  const helperWatch = watchHelpers(spec, vmm, exited);
  const status = await exited;
  const mainExited = await Promise.race([mainWatch, sleep(300).then(() => undefined)]);
  const helperExited = await helperWatch;
  const exit = classifyVmmExit(status, await readFileTail(spec.consoleLog), {
    mainExited,
    helperExited,
    vmm: spec.launch.file.split("/").pop() ?? "the VMM",
  });
  await writeRecord(spec.vmDir, MONITOR_FILES.vmmExit, { ...exit, at: new Date().toISOString() });
  tell({ event: "exited", code: status.code, signal: status.signal });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    tell({ event: "failed", message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  },
);
