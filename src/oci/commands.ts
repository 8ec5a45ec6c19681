import { readFile, rename, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import path from "node:path";
import { CocoonError, messageOf } from "../errors.js";
import { isProcessAlive } from "../host/proc.js";
import type { Logger } from "../log.js";
import { processConfigSchema, type ProcessConfig } from "../sandbox/config.js";
import { bool, list, str, type FlagValues } from "./flags.js";
import { launchRelay } from "./launch.js";
import { BUNDLE_CONTAINER_ID, createBundleSandbox, destroySandbox, findSandbox } from "./sandbox.js";
import { parseSignal, signalName } from "./signals.js";
import { guestMounts } from "./mounts.js";
import { parseProcessJson, readBundleSpec } from "./spec.js";
import {
  adoptEnv,
  cocoonEnv,
  ContainerDir,
  OCI_VERSION,
  listIds,
  loadContainer,
  notFound,
  sandboxIdOf,
  startTimeOf,
  stateJson,
  statusOf,
  type OciStatus,
} from "./state.js";

/** What every command gets: the root, a logger for cocoon's internals, our entry script. */
export interface CommandContext {
  root: string;
  logger: Logger;
  /** bin/cocoon-runtime.js: relays are started through it. */
  entry: string;
  out: (text: string) => void;
}

function invalidState(message: string, status: OciStatus): CocoonError {
  return new CocoonError("ERR_INVALID_STATE", message, { details: { status } });
}

/** Writes a pid file atomically, as conmon reads it as soon as we exit. */
async function writePidFile(file: string, pid: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, String(pid));
  await rename(tmp, file);
}

/** Asks an init relay to start the container's process, or to end it unstarted. */
async function askRelay(dir: ContainerDir, request: object): Promise<void> {
  const answer = await new Promise<string>((resolve, reject) => {
    const sock = connect(dir.socketPath);
    let buf = "";
    sock.setEncoding("utf8");
    sock.on("connect", () => sock.write(`${JSON.stringify(request)}\n`));
    sock.on("data", (c: string) => (buf += c));
    sock.on("end", () => resolve(buf));
    sock.on("error", reject);
  }).catch((err: unknown) => {
    throw new CocoonError("ERR_INTERNAL", `container ${dir.id}'s relay did not answer: ${messageOf(err)}`);
  });
  let parsed: { ok?: boolean; error?: string };
  try {
    parsed = JSON.parse(answer) as { ok?: boolean; error?: string };
  } catch {
    throw new CocoonError("ERR_INTERNAL", `container ${dir.id}'s relay answered "${answer.trim()}"`);
  }
  if (!parsed.ok) throw new CocoonError("ERR_PROCESS", parsed.error ?? "the relay refused");
}

export async function create(ctx: CommandContext, flags: FlagValues, id: string): Promise<void> {
  const bundle = path.resolve(str(flags, "bundle") ?? ".");
  const consoleSocket = str(flags, "console-socket");
  const spec = await readBundleSpec(bundle);
  if (spec.process.terminal && !consoleSocket)
    throw new CocoonError("ERR_INVALID_ARGUMENT", "process.terminal is set: --console-socket is required");
  if (!spec.process.terminal && consoleSocket)
    throw new CocoonError("ERR_INVALID_ARGUMENT", "--console-socket needs process.terminal in config.json");
  // Before anything is claimed: a mount a VM cannot honour fails the create without effect.
  const mounts = await guestMounts(spec.mounts);
  const dir = new ContainerDir(ctx.root, id);
  await dir.claim();
  const sandboxId = sandboxIdOf(ctx.root, id);
  let relayPid: number | undefined;
  try {
    const sandbox = await createBundleSandbox(
      {
        id: sandboxId,
        rootfsDir: spec.rootPath,
        process: spec.process,
        ...(spec.hostname ? { hostname: spec.hostname } : {}),
        annotations: {},
        readonlyRootfs: spec.readonly,
        ...(spec.rlimits ? { rlimits: spec.rlimits } : {}),
        ...(spec.resources ? { resources: spec.resources } : {}),
        mounts,
        ...(spec.netnsPath ? { netnsPath: spec.netnsPath } : {}),
      },
      ctx.logger,
    );
    await sandbox.release();
    const relay = await launchRelay(ctx.entry, ctx.root, id, { mode: "init", sandboxId }, consoleSocket);
    relayPid = relay.pid;
    await dir.write({
      id,
      bundle,
      rootfs: spec.rootPath,
      created: new Date().toISOString(),
      sandboxId,
      pid: relay.pid,
      pidStart: await startTimeOf(relay.pid),
      annotations: spec.annotations,
      env: cocoonEnv(),
    });
    const pidFile = str(flags, "pid-file");
    if (pidFile) await writePidFile(pidFile, relay.pid);
  } catch (err) {
    if (relayPid !== undefined) process.kill(relayPid, "SIGKILL");
    await destroySandbox(sandboxId, ctx.logger).catch(() => undefined);
    await dir.remove();
    throw err;
  }
}

export async function start(ctx: CommandContext, id: string): Promise<void> {
  const { dir, status } = await loadContainer(ctx.root, id);
  if (status !== "created")
    throw invalidState(`cannot start container ${id}: it is ${status}, not created`, status);
  await askRelay(dir, { op: "start" });
}

export async function state(ctx: CommandContext, id: string): Promise<void> {
  const { record, status } = await loadContainer(ctx.root, id);
  ctx.out(`${JSON.stringify(stateJson(id, record, status), null, 2)}\n`);
}

export async function kill(
  ctx: CommandContext,
  flags: FlagValues,
  id: string,
  signal: string,
): Promise<void> {
  const sig = parseSignal(signal);
  const { dir, record, status } = await loadContainer(ctx.root, id);
  if (!record || (status !== "created" && status !== "running"))
    throw invalidState(`cannot kill container ${id}: it is ${status}`, status);
  if (status === "created") {
    await askRelay(dir, { op: "kill", signal: sig });
    return;
  }
  const sandbox = await findSandbox(record.sandboxId, ctx.logger);
  if (!sandbox) throw invalidState(`cannot kill container ${id}: its VM is gone`, "stopped");
  try {
    await sandbox.signal(
      signalName(sig),
      bool(flags, "all") ? { all: true, containerId: BUNDLE_CONTAINER_ID } : { execId: BUNDLE_CONTAINER_ID },
    );
  } finally {
    await sandbox.release();
  }
}

export async function remove(ctx: CommandContext, flags: FlagValues, id: string): Promise<void> {
  const dir = new ContainerDir(ctx.root, id);
  if (!(await dir.exists())) {
    // As runc: --force makes a missing container a success (podman deletes after a failed create).
    if (!bool(flags, "force")) throw notFound(id);
    await destroySandbox(sandboxIdOf(ctx.root, id), ctx.logger);
    return;
  }
  const record = await dir.read();
  adoptEnv(record);
  const status = await statusOf(dir, record);
  if (status !== "stopped" && !bool(flags, "force"))
    throw invalidState(`cannot delete container ${id}: it is ${status} (use --force)`, status);
  await destroySandbox(record?.sandboxId ?? sandboxIdOf(ctx.root, id), ctx.logger);
  // Once the VM is gone the relay ends by itself; a relay still waiting to start does not.
  if (record && (await isProcessAlive(record.pid, record.pidStart))) process.kill(record.pid, "SIGKILL");
  await dir.remove();
}

async function pauseOrResume(ctx: CommandContext, id: string, pause: boolean): Promise<void> {
  const { dir, record, status } = await loadContainer(ctx.root, id);
  const from = pause ? "running" : "paused";
  if (!record || status !== from)
    throw invalidState(`cannot ${pause ? "pause" : "resume"} container ${id}: it is ${status}`, status);
  const sandbox = await findSandbox(record.sandboxId, ctx.logger);
  if (!sandbox) throw invalidState(`container ${id}'s VM is gone`, "stopped");
  try {
    if (pause) await sandbox.pause();
    else await sandbox.resume();
  } finally {
    await sandbox.release();
  }
  await dir.setFlag("paused", pause);
}

export const pause = (ctx: CommandContext, id: string) => pauseOrResume(ctx, id, true);
export const resume = (ctx: CommandContext, id: string) => pauseOrResume(ctx, id, false);

/** `ps`: the container's host-side pids (the relay stands for every process in the VM). */
export async function ps(ctx: CommandContext, flags: FlagValues, id: string): Promise<void> {
  const { record, status } = await loadContainer(ctx.root, id);
  const pids = record && status !== "stopped" ? [record.pid] : [];
  if (str(flags, "format") === "json") ctx.out(`${JSON.stringify(pids)}\n`);
  else ctx.out(`PID\n${pids.map((p) => `${p}\n`).join("")}`);
}

export async function listContainers(ctx: CommandContext, flags: FlagValues): Promise<void> {
  const rows = [];
  for (const id of await listIds(ctx.root)) {
    const c = await loadContainer(ctx.root, id).catch(() => undefined);
    if (c) rows.push(stateJson(id, c.record, c.status));
  }
  if (bool(flags, "quiet")) ctx.out(rows.map((r) => `${String(r.id)}\n`).join(""));
  else if (str(flags, "format") === "json") ctx.out(`${JSON.stringify(rows)}\n`);
  else {
    const lines = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]];
    for (const r of rows)
      lines.push([r.id, r.pid, r.status, r.bundle, r.created, r.owner].map((x) => String(x)));
    const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
    ctx.out(
      lines
        .map(
          (l) =>
            `${l
              .map((x, i) => x.padEnd(widths[i]!))
              .join("   ")
              .trimEnd()}\n`,
        )
        .join(""),
    );
  }
}

/** The process of an exec: `--process FILE`, or the inline form `exec ID CMD ARG…` with its flags. */
async function execProcess(flags: FlagValues, args: string[]): Promise<ProcessConfig> {
  const file = str(flags, "process");
  let proc: ProcessConfig;
  if (file) proc = parseProcessJson(await readFile(file, "utf8"));
  else {
    if (args.length === 0)
      throw new CocoonError("ERR_INVALID_ARGUMENT", "exec needs --process or a command after the id");
    const user = str(flags, "user");
    let uid = 0;
    let gid = 0;
    if (user) {
      const m = /^(\d+)(?::(\d+))?$/.exec(user);
      if (!m) throw new CocoonError("ERR_INVALID_ARGUMENT", `--user takes UID[:GID], not "${user}"`);
      uid = Number(m[1]);
      gid = Number(m[2] ?? 0);
    }
    const env = list(flags, "env");
    if (!env.some((e) => e.startsWith("PATH=")))
      env.unshift("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    proc = { args, env, cwd: str(flags, "cwd") ?? "/", user: { uid, gid }, terminal: false };
  }
  if (bool(flags, "tty")) proc = { ...proc, terminal: true };
  return proc;
}

/** `exec`: with --detach the relay's pid is the exec's pid; otherwise we wait and exit with its status. */
export async function exec(ctx: CommandContext, flags: FlagValues, args: string[]): Promise<number> {
  const id = args[0]!;
  const { record, status } = await loadContainer(ctx.root, id);
  if (!record || status !== "running")
    throw invalidState(`cannot exec in container ${id}: it is ${status}`, status);
  const proc = await execProcess(flags, args.slice(1));
  const consoleSocket = str(flags, "console-socket");
  const detach = bool(flags, "detach");
  if (proc.terminal && detach && !consoleSocket)
    throw new CocoonError("ERR_INVALID_ARGUMENT", "a detached exec with a terminal needs --console-socket");
  const relay = await launchRelay(
    ctx.entry,
    ctx.root,
    id,
    { mode: "exec", sandboxId: record.sandboxId, process: processConfigSchema.parse(proc) },
    proc.terminal ? consoleSocket : undefined,
  );
  const pidFile = str(flags, "pid-file");
  if (pidFile) await writePidFile(pidFile, relay.pid);
  return detach ? 0 : relay.exited;
}

export function features(ctx: CommandContext): void {
  ctx.out(
    `${JSON.stringify(
      {
        ociVersionMin: "1.0.0",
        ociVersionMax: OCI_VERSION,
        hooks: [],
        mountOptions: [],
        linux: {
          namespaces: ["mount", "pid", "uts", "ipc", "network"],
          capabilities: [],
          cgroup: { v1: false, v2: true, systemd: false, systemdUser: false },
          seccomp: { enabled: false },
          apparmor: { enabled: false },
          selinux: { enabled: false },
        },
        annotations: { "io.cocoon.runtime": "vm" },
      },
      null,
      2,
    )}\n`,
  );
}
