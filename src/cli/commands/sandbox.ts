import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Option, type Command } from "commander";
import { ConfigError, ExitCode, isCocoonError, SandboxError } from "../../errors.js";
import type { ContainerConfig, ProcessConfig } from "../../sandbox/config.js";
import { Runtime, type CreateSandboxOptions } from "../../sandbox/runtime.js";
import type { Sandbox, SandboxStatus } from "../../sandbox/sandbox.js";
import { attachToTerminal, windowSize } from "../attach.js";
import { cleanUpAfterCrashes } from "./lifecycle.js";
import { restoreForRun } from "./snapshot.js";
import type { CliContext } from "../context.js";
import type { Runner } from "../main.js";
import { reportError, table } from "../output.js";
import { containerLimitOptions, hostLimitOptions, type HostLimitFlags } from "./resources.js";
import { networkOptions, networkSpecFrom, type NetworkFlags } from "./network.js";

interface WorkloadOptions extends HostLimitFlags, NetworkFlags {
  hypervisor?: string;
  cpus?: string;
  memory?: string;
  rootfs?: string;
  env: string[];
  workdir?: string;
  tty?: boolean;
  interactive?: boolean;
  name?: string;
  hostname?: string;
  user?: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `-e KEY=VALUE`, or `-e KEY` to pass this process's value, as docker does. */
export function parseEnv(entries: string[], env: NodeJS.ProcessEnv = process.env): string[] {
  return entries.map((e) => {
    if (e.includes("=")) {
      if (e.startsWith("="))
        throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid environment entry "${e}": the name is empty`);
      return e;
    }
    const v = env[e];
    if (v === undefined)
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `-e ${e}: no such variable in this environment (use ${e}=VALUE)`,
      );
    return `${e}=${v}`;
  });
}

/** `--memory 512`, `512M`, `1G` → MiB. */
export function parseMemory(value: string): number {
  const m = /^(\d+)([mMgG]?)(i?[bB])?$/.exec(value.trim());
  if (!m)
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      `invalid --memory "${value}": use MiB (512) or a size like 512M or 2G`,
    );
  const n = Number(m[1]) * (/[gG]/.test(m[2] ?? "") ? 1024 : 1);
  if (n < 64)
    throw new ConfigError("ERR_INVALID_ARGUMENT", `--memory ${value} is too small: at least 64 MiB`);
  return n;
}

function parseCpus(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid --cpus "${value}": a positive integer`);
  return n;
}

function parseUser(value: string): { uid: number; gid: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(value);
  if (!m) throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid --user "${value}": use UID or UID:GID`);
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
}

async function rootfsSource(p: string): Promise<ContainerConfig["rootfs"]> {
  const abs = path.resolve(p);
  const st = await stat(abs).catch(() => undefined);
  if (!st)
    throw new SandboxError("ERR_INVALID_ARGUMENT", `the rootfs ${abs} does not exist`, {
      details: { path: abs },
    });
  if (st.isDirectory()) return { type: "dir", path: abs };
  if (st.isFile()) return { type: "tar", path: abs };
  throw new SandboxError("ERR_INVALID_ARGUMENT", `the rootfs ${abs} is neither a directory nor a tarball`);
}

function processFrom(rawCmd: string[], o: WorkloadOptions, ctxEnv: NodeJS.ProcessEnv): ProcessConfig {
  // After a positional argument commander passes the rest through untouched, `--` included.
  const cmd = rawCmd[0] === "--" ? rawCmd.slice(1) : rawCmd;
  if (cmd.length === 0)
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      "no command given: put it after --, e.g. cocoon run -- sh -c 'echo hi'",
    );
  return {
    args: cmd,
    env: parseEnv(o.env, ctxEnv),
    ...(o.workdir ? { cwd: o.workdir } : {}),
    terminal: o.tty ?? false,
    ...(o.user ? { user: parseUser(o.user) } : {}),
  };
}

async function createOptions(
  cmd: string[],
  o: WorkloadOptions,
  ctxHypervisor?: string,
): Promise<CreateSandboxOptions> {
  const proc = processFrom(cmd, o, process.env);
  const base: CreateSandboxOptions = {
    ...(o.name ? { id: o.name } : {}),
    ...(o.hostname ? { hostname: o.hostname } : {}),
    ...(o.hypervisor ? { hypervisor: o.hypervisor } : {}),
    ...(o.cpus ? { cpus: parseCpus(o.cpus) } : {}),
    ...(o.memory ? { memoryMB: parseMemory(o.memory) } : {}),
    ...hostLimitOptions(o),
    network: networkSpecFrom(o, o.hypervisor ?? ctxHypervisor),
    ...(o.dns.length ? { dns: o.dns } : {}),
  };
  if (o.rootfs) {
    return {
      ...base,
      containers: [
        { id: "main", rootfs: await rootfsSource(o.rootfs), process: proc, ...containerLimitOptions(o) },
      ],
    };
  }
  return { ...base, process: proc };
}

function workloadOptions(cmd: Command): Command {
  return networkOptions(cmd)
    .option("--hypervisor <type>", "qemu, firecracker, acrn or mock (default: the configuration's)")
    .option("--cpus <n>", "vCPUs")
    .option("--memory <size>", "guest memory in MiB, or with a unit: 512M, 2G")
    .option("--cpuset-cpus <list>", "host CPUs the vCPU threads may run on, e.g. 0-1")
    .option("--pids-limit <n>", "most host tasks (threads) the VMM and its helpers may have")
    .option("--cpu-shares <n>", "relative host CPU weight of the vCPUs (1024 = normal)")
    .option("--limit-memory <size>", "memory limit of the container in the guest (with --rootfs): 64M, 1G")
    .option("--limit-cpus <n>", "CPU limit of the container in the guest (with --rootfs): 0.5, 2")
    .option("--limit-pids <n>", "most processes the container may have (with --rootfs)")
    .option(
      "--rootfs <dir|tar>",
      "run the command in a container with this root filesystem (else directly in the guest)",
    )
    .option(
      "-e, --env <KEY=VALUE>",
      "set an environment variable (repeatable; KEY alone passes this process's value)",
      collect,
      [],
    )
    .option("-w, --workdir <dir>", "working directory of the command")
    .option("-u, --user <uid[:gid]>", "user to run the command as")
    .option("-t, --tty", "give the command a terminal")
    .option("--name <id>", "sandbox id (default: random)")
    .option("--hostname <name>", "hostname in the guest (default: the sandbox id)");
}

/** run/exec exit statuses: the command's own, or 125/126/127 when it did not get to run. */
function workloadFailure(ctx: CliContext, err: unknown): number {
  const code = reportError(ctx.io, err, { json: ctx.json, logFile: ctx.logFile });
  if (isCocoonError(err) && (err.code === "ERR_EXEC_NOT_FOUND" || err.code === "ERR_EXEC_NOT_EXECUTABLE"))
    return code;
  return ExitCode.runFailed;
}

function runtimeOf(ctx: CliContext): Runtime {
  return Runtime.fromConfig(ctx.loaded, ctx.logger);
}

async function load(ctx: CliContext, id: string): Promise<Sandbox> {
  return runtimeOf(ctx).loadSandbox(id);
}

function formatExit(exit?: { exitCode: number; signal?: string }): string {
  if (!exit) return "";
  return exit.signal ? `killed by ${exit.signal}` : `exited (${exit.exitCode})`;
}

function describeState(s: SandboxStatus): string {
  const cause = s.stopCause;
  if (s.state === "stopped" && cause) {
    // docker's "Exited (137)": the main process's status, else what ended the VM.
    return cause.exitCode !== undefined ? `exited (${cause.exitCode})` : `stopped (${cause.reason})`;
  }
  const main = s.containers[0] ?? s.guestProcess;
  if (s.state === "running" && main && "exit" in main && main.exit)
    return `running, main ${formatExit(main.exit)}`;
  return s.state;
}

export function registerSandboxCommands(program: Command, run: Runner): void {
  workloadOptions(
    program
      .command("run")
      .description(
        "create a sandbox, run a command in it and print its output; exits with the command's status",
      )
      .argument("[command...]", "the command and its arguments (after --)")
      .passThroughOptions(),
  )
    .option("-i, --interactive", "attach this terminal's stdin")
    .option("--rm", "delete the sandbox when the command exits")
    .option("-d, --detach", "leave the command running and print the sandbox id")
    .option("--from-snapshot <name>", "start from a snapshot (its command runs on where it was)")
    .action((cmd: string[], o: WorkloadOptions & { rm?: boolean; detach?: boolean; fromSnapshot?: string }) =>
      run(async (ctx) => {
        let sandbox: Sandbox | undefined;
        try {
          if (o.detach && o.rm)
            throw new ConfigError("ERR_INVALID_ARGUMENT", "--detach and --rm cannot be used together");
          const runtime = runtimeOf(ctx);
          sandbox = o.fromSnapshot
            ? await restoreForRun(ctx, runtime, o.fromSnapshot, cmd, o)
            : await runtime.createSandbox(await createOptions(cmd, o, ctx.loaded.config.runtime.hypervisor));
          // A restored sandbox may already run its command (it was running when snapshotted).
          const started = sandbox.state !== "ready";
          if (o.detach) {
            if (!started) await sandbox.start();
            ctx.io.out(sandbox.id);
            await sandbox.release();
            return 0;
          }
          const attach = { stdin: o.interactive ?? false, ...windowSize(process) };
          const handle = started
            ? await sandbox.attach(sandbox.mainExecId(), attach)
            : await sandbox.start({ attach });
          const exit = await attachToTerminal(sandbox, handle!, {
            interactive: o.interactive ?? false,
            tty: o.tty ?? false,
          });
          if (o.rm) await sandbox.delete({ force: true });
          else await sandbox.stop();
          return exit.exitCode;
        } catch (err) {
          // Whatever got created goes away with --rm; without it, the sandbox is stopped, not leaked.
          if (sandbox) {
            await (
              o.rm
                ? sandbox.delete({ force: true })
                : sandbox.state === "stopped"
                  ? Promise.resolve()
                  : sandbox.stop()
            ).catch(() => undefined);
          }
          return workloadFailure(ctx, err);
        }
      }),
    );

  workloadOptions(
    program
      .command("create")
      .description("create a sandbox and boot its VM, without starting the command (see start)")
      .argument("[command...]", "the command and its arguments (after --)")
      .passThroughOptions(),
  ).action((cmd: string[], o: WorkloadOptions) =>
    run(async (ctx) => {
      const sandbox = await runtimeOf(ctx).createSandbox(
        await createOptions(cmd, o, ctx.loaded.config.runtime.hypervisor),
      );
      ctx.io.out(ctx.json ? JSON.stringify({ id: sandbox.id, state: sandbox.state }) : sandbox.id);
      await sandbox.release();
      return 0;
    }),
  );

  program
    .command("start")
    .description("start a created sandbox's command")
    .argument("<id>", "sandbox id")
    .option("-a, --attach", "stay attached: print its output and exit with its status")
    .option("-i, --interactive", "attach this terminal's stdin (with --attach)")
    .action((id: string, o: { attach?: boolean; interactive?: boolean }) =>
      run(async (ctx) => {
        const sandbox = await load(ctx, id);
        try {
          if (!o.attach) {
            await sandbox.start();
            return 0;
          }
          const handle = await sandbox.start({
            attach: { stdin: o.interactive ?? false, ...windowSize(process) },
          });
          const tty = Boolean(
            (sandbox.config.containers[0]?.process ?? sandbox.config.guestProcess)?.terminal,
          );
          const exit = await attachToTerminal(sandbox, handle!, { interactive: o.interactive ?? false, tty });
          return exit.exitCode;
        } catch (err) {
          if (!o.attach) throw err;
          return workloadFailure(ctx, err);
        } finally {
          await sandbox.release();
        }
      }),
    );

  program
    .command("exec")
    .description("run another command in a running sandbox (in its container, or in the guest)")
    .argument("<id>", "sandbox id")
    .argument("[command...]", "the command and its arguments (after --)")
    .passThroughOptions()
    .option("-e, --env <KEY=VALUE>", "set an environment variable (repeatable)", collect, [])
    .option("-w, --workdir <dir>", "working directory")
    .option("-u, --user <uid[:gid]>", "user to run as")
    .option("-t, --tty", "give the command a terminal")
    .option("-i, --interactive", "attach this terminal's stdin")
    .option("--guest", "run in the guest itself, not in the container")
    .option("--container <id>", "the container to run in (default: the first)")
    .action((id: string, cmd: string[], o: WorkloadOptions & { guest?: boolean; container?: string }) =>
      run(async (ctx) => {
        let sandbox: Sandbox | undefined;
        try {
          sandbox = await load(ctx, id);
          const handle = await sandbox.exec({
            process: processFrom(cmd, o, process.env),
            stdin: o.interactive ?? false,
            ...windowSize(process),
            ...(o.guest ? { inGuest: true } : {}),
            ...(o.container ? { containerId: o.container } : {}),
          });
          const exit = await attachToTerminal(sandbox, handle, {
            interactive: o.interactive ?? false,
            tty: o.tty ?? false,
          });
          return exit.exitCode;
        } catch (err) {
          return workloadFailure(ctx, err);
        } finally {
          await sandbox?.release();
        }
      }),
    );

  program
    .command("ps")
    .description("list running sandboxes (with -a, stopped ones too)")
    .option("-a, --all", "also list stopped and exited sandboxes")
    .action((o: { all?: boolean }) =>
      run(async (ctx) => {
        await cleanUpAfterCrashes(ctx);
        const list = (await runtimeOf(ctx).listSandboxes()).filter((s) => o.all || s.state !== "stopped");
        if (ctx.json) {
          ctx.io.out(JSON.stringify(list, null, 2));
          return 0;
        }
        ctx.io.out(
          table(
            ["ID", "HYPERVISOR", "STATE", "CREATED", "PIDS", "CONTAINERS"],
            list.map((s) => [
              s.id,
              s.hypervisor,
              describeState(s),
              s.createdAt.replace("T", " ").slice(0, 19),
              s.pids.join(",") || "-",
              s.containers.map((c) => `${c.id}:${c.state}`).join(",") || "-",
            ]),
          ),
        );
        return 0;
      }),
    );

  program
    .command("inspect")
    .description("show a sandbox's state and configuration as JSON")
    .argument("<id>", "sandbox id")
    .action((id: string) =>
      run(async (ctx) => {
        const sandbox = await load(ctx, id);
        const status = await sandbox.status();
        const processes = status.state === "running" ? await sandbox.processes().catch(() => []) : [];
        ctx.io.out(JSON.stringify({ ...status, processes, config: sandbox.config }, null, 2));
        await sandbox.release();
        return 0;
      }),
    );

  program
    .command("logs")
    .description("print a sandbox's console (the guest's serial output)")
    .argument("<id>", "sandbox id")
    .option("-f, --follow", "keep printing as the console grows, until the sandbox stops")
    .action((id: string, o: { follow?: boolean }) =>
      run(async (ctx) => {
        const sandbox = await load(ctx, id);
        const file = sandbox.consoleLogPath();
        let offset = 0;
        const printFrom = async (): Promise<void> => {
          const st = await stat(file).catch(() => undefined);
          if (!st || st.size <= offset) return;
          for await (const chunk of createReadStream(file, { start: offset, end: st.size - 1 }))
            process.stdout.write(chunk as Buffer);
          offset = st.size;
        };
        await printFrom();
        if (offset === 0 && !o.follow) {
          ctx.io.err(`the console of ${id} is empty or gone (${sandbox.state})`);
        }
        while (o.follow) {
          await sleep(250);
          await printFrom();
          const st = (await load(ctx, id).catch(() => undefined))?.state;
          if (!st || st === "stopped") break;
        }
        await sandbox.release();
        return 0;
      }),
    );

  for (const [name, description, fn] of [
    ["pause", "pause a sandbox's VM", (s: Sandbox) => s.pause()],
    ["resume", "resume a paused sandbox", (s: Sandbox) => s.resume()],
    ["stop", "stop a sandbox: its processes and its VM (it stays listed until rm)", (s: Sandbox) => s.stop()],
  ] as const) {
    program
      .command(name)
      .description(description)
      .argument("<id...>", "sandbox ids")
      .action((ids: string[]) =>
        run(async (ctx) => {
          for (const id of ids) {
            const sandbox = await load(ctx, id);
            await fn(sandbox);
            await sandbox.release();
            if (!ctx.json) ctx.io.out(id);
          }
          return 0;
        }),
      );
  }

  program
    .command("kill")
    .description("send a signal to a sandbox's main process")
    .argument("<id>", "sandbox id")
    .addOption(new Option("-s, --signal <signal>", "signal name").default("SIGTERM"))
    .option("--all", "every process of the container")
    .action((id: string, o: { signal: string; all?: boolean }) =>
      run(async (ctx) => {
        const sig = o.signal.toUpperCase().startsWith("SIG")
          ? o.signal.toUpperCase()
          : `SIG${o.signal.toUpperCase()}`;
        const sandbox = await load(ctx, id);
        await sandbox.signal(sig, { ...(o.all ? { all: true } : {}) });
        await sandbox.release();
        return 0;
      }),
    );

  program
    .command("rm")
    .description("delete sandboxes: their VM, files and state")
    .argument("<id...>", "sandbox ids")
    .option("-f, --force", "also delete running sandboxes")
    .action((ids: string[], o: { force?: boolean }) =>
      run(async (ctx) => {
        // A half-created sandbox named here may be what the check removes: that is its rm.
        const cleaned = o.force ? await cleanUpAfterCrashes(ctx) : [];
        for (const id of ids) {
          if (cleaned.some((g) => g.kind === "sandbox" && g.sandbox === id && g.removed)) {
            if (!ctx.json) ctx.io.out(id);
            continue;
          }
          const sandbox = await load(ctx, id);
          await sandbox.delete({ force: o.force ?? false });
          if (!ctx.json) ctx.io.out(id);
        }
        return 0;
      }),
    );

  program
    .command("cp")
    .description(
      "copy a file between the host and a sandbox: cocoon cp SRC ID:/path, or cocoon cp ID:/path DST",
    )
    .argument("<src>", "host path or ID:/path")
    .argument("<dst>", "host path or ID:/path")
    .option("--guest", "the path is in the guest itself, not in the container")
    .action((src: string, dst: string, o: { guest?: boolean }) =>
      run(async (ctx) => {
        const remote = (s: string): { id: string; path: string } | undefined => {
          const m = /^([A-Za-z0-9][A-Za-z0-9_.-]*):(\/.*)$/.exec(s);
          return m ? { id: m[1]!, path: m[2]! } : undefined;
        };
        const from = remote(src);
        const to = remote(dst);
        if ((from && to) || (!from && !to)) {
          throw new ConfigError(
            "ERR_INVALID_ARGUMENT",
            "exactly one of SRC and DST must be ID:/absolute/path",
          );
        }
        const sandbox = await load(ctx, (from ?? to)!.id);
        const where = o.guest ? { inGuest: true } : {};
        let bytes: number;
        if (to) {
          bytes = await sandbox.copyIn(path.resolve(src), to.path, where);
        } else {
          let target = path.resolve(dst);
          const st = await stat(target).catch(() => undefined);
          if (st?.isDirectory()) target = path.join(target, path.basename(from!.path));
          bytes = await sandbox.copyOut(from!.path, target, where);
        }
        await sandbox.release();
        if (!ctx.json) ctx.io.err(`copied ${bytes} bytes`);
        return 0;
      }),
    );
}
