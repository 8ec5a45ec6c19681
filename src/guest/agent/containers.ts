import { extraHostsText } from "./network.js";
import { oomNote } from "./oom.js";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { z } from "zod";
import type { Connection } from "../../agent/protocol/connection.js";
import type { GuestContainerInfo, METHODS } from "../../agent/protocol/methods.js";
import { AgentOpError } from "./errors.js";
import { containerMounts } from "./container-mounts.js";
import { checkExecutable } from "./exec-path.js";
import { ociSpec, withDefaultEnv } from "./oci.js";
import type { ProcessTable, Stdio } from "./processes.js";
import { run } from "./run.js";
import { mountStorage, unmount, type ParsedStorage } from "./storage.js";

export const RUNC = "/usr/sbin/runc";
export const RUNC_ROOT = "/run/runc";
export const CONTAINERS_DIR = "/run/cocoon/containers";

type CreateParams = z.output<(typeof METHODS)["container.create"]["params"]>;
type ProcessParams = CreateParams["process"];

interface Container {
  id: string;
  bundle: string;
  rootfs: string;
  storage: ParsedStorage;
  overlay: boolean;
  hostname: string;
  process: ProcessParams;
  state: GuestContainerInfo["state"];
  pid?: number;
}

function runc(args: string[]): Promise<string> {
  return run(RUNC, ["--root", RUNC_ROOT, ...args]);
}

/** Containers in the guest, created by runc from a bundle the agent writes. */
export class ContainerTable {
  private readonly containers = new Map<string, Container>();

  constructor(
    private readonly procs: ProcessTable,
    private readonly resolvConf: () => string | undefined,
  ) {}

  get(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw new AgentOpError("NOT_FOUND", `no container ${id}`);
    return c;
  }

  list(): GuestContainerInfo[] {
    return [...this.containers.values()].map((c) => this.info(c));
  }

  private info(c: Container): GuestContainerInfo {
    return {
      containerId: c.id,
      state: c.state,
      ...(c.pid ? { pid: c.pid } : {}),
      hostname: c.hostname,
      rootfs: c.rootfs,
    };
  }

  async create(p: CreateParams): Promise<GuestContainerInfo> {
    if (this.containers.has(p.containerId))
      throw new AgentOpError("ALREADY_EXISTS", `container ${p.containerId} already exists`);
    const bundle = path.join(CONTAINERS_DIR, p.containerId);
    await mkdir(bundle, { recursive: true });
    try {
      await mountStorage(p.rootfs);
      const lower = path.join(p.rootfs.mountPoint, p.rootfsSubpath);
      let rootfs = lower;
      if (p.overlay) {
        // Copy-on-write: the container's writes land in guest memory, never in the shared source.
        rootfs = path.join(bundle, "rootfs");
        for (const d of ["upper", "work", "rootfs"]) await mkdir(path.join(bundle, d), { recursive: true });
        await run("mount", [
          "-t",
          "overlay",
          "overlay",
          "-o",
          `lowerdir=${lower},upperdir=${bundle}/upper,workdir=${bundle}/work`,
          rootfs,
        ]);
      }
      const env = withDefaultEnv(p.process.env, p.hostname);
      await checkExecutable(rootfs, p.process.args[0]!, env, p.process.cwd);
      await writeFile(
        path.join(bundle, "hosts"),
        `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t${p.hostname}\n${extraHostsText()}`,
      );
      await writeFile(path.join(bundle, "hostname"), `${p.hostname}\n`);
      const spec = ociSpec({
        containerId: p.containerId,
        rootfs,
        readonlyRootfs: p.readonlyRootfs,
        hostname: p.hostname,
        args: p.process.args,
        env: p.process.env,
        cwd: p.process.cwd,
        uid: p.process.user.uid,
        gid: p.process.user.gid,
        terminal: p.process.terminal,
        etcFiles: {
          hosts: path.join(bundle, "hosts"),
          hostname: path.join(bundle, "hostname"),
          resolvConf: this.resolvConf(),
        },
        ...(p.resources ? { resources: p.resources } : {}),
        ...(p.rlimits ? { rlimits: p.rlimits } : {}),
        extraMounts: await containerMounts(bundle, p.mounts),
      });
      await writeFile(path.join(bundle, "config.json"), JSON.stringify(spec, null, 2));
      const c: Container = {
        id: p.containerId,
        bundle,
        rootfs,
        storage: p.rootfs,
        overlay: p.overlay,
        hostname: p.hostname,
        process: p.process,
        state: "created",
      };
      this.containers.set(c.id, c);
      return this.info(c);
    } catch (err) {
      await this.teardown(bundle, p.rootfs.mountPoint, p.overlay);
      throw err;
    }
  }

  /** Runs the container's init in the foreground under runc: its exit is the container's. */
  async start(
    id: string,
    conn: Connection,
    stdio: Stdio,
    size: { rows?: number | undefined; cols?: number | undefined } = {},
  ): Promise<number> {
    const c = this.get(id);
    if (c.state !== "created")
      throw new AgentOpError("INVALID_STATE", `container ${id} is ${c.state}, not created`);
    const proc = await this.procs.launch({
      execId: id,
      containerId: id,
      args: c.process.args,
      argv: [
        RUNC,
        "--root",
        RUNC_ROOT,
        "run",
        "--bundle",
        c.bundle,
        "--pid-file",
        path.join(c.bundle, "init.pid"),
        id,
      ],
      pidFile: path.join(c.bundle, "init.pid"),
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      cwd: c.bundle,
      terminal: c.process.terminal,
      rows: size.rows ?? c.process.rows,
      cols: size.cols ?? c.process.cols,
      wrapped: true,
      openStdin: stdio.stdin !== undefined || c.process.terminal,
      exitNote: (exit) => oomNote(id, exit),
    });
    proc.bind(conn, stdio);
    c.state = "running";
    void proc.done.then(() => {
      if (this.containers.get(id) === c) c.state = "stopped";
    });
    // Answer once runc has created the container (its pid file exists), so an exec that comes
    // right after finds it; an init that dies at once is reported by wait, as any exit.
    c.pid = await Promise.race([proc.targetPid(), proc.done.then(() => proc.pid)]);
    return c.pid;
  }

  /** An extra process in a running container (`runc exec` with a process.json). */
  async exec(
    id: string,
    execId: string,
    spec: ProcessParams,
    conn: Connection,
    stdio: Stdio,
  ): Promise<number> {
    const c = this.get(id);
    if (c.state !== "running")
      throw new AgentOpError("INVALID_STATE", `container ${id} is ${c.state}, not running`);
    const env = withDefaultEnv(spec.env.length ? [...c.process.env, ...spec.env] : c.process.env, c.hostname);
    await checkExecutable(c.rootfs, spec.args[0]!, env, spec.cwd);
    const processFile = path.join(c.bundle, `exec-${execId}.json`);
    await writeFile(
      processFile,
      JSON.stringify({
        terminal: spec.terminal, // as for the init: runc's pty inside cocoon-pty's
        user: spec.user,
        args: spec.args,
        env,
        cwd: spec.cwd,
        noNewPrivileges: true,
        capabilities: (
          JSON.parse(await readFile(path.join(c.bundle, "config.json"), "utf8")) as {
            process: { capabilities: unknown };
          }
        ).process.capabilities,
      }),
    );
    const proc = await this.procs.launch({
      execId,
      containerId: id,
      args: spec.args,
      argv: [
        RUNC,
        "--root",
        RUNC_ROOT,
        "exec",
        "--process",
        processFile,
        "--pid-file",
        `${processFile}.pid`,
        id,
      ],
      pidFile: `${processFile}.pid`,
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      cwd: c.bundle,
      terminal: spec.terminal,
      rows: spec.rows,
      cols: spec.cols,
      wrapped: true,
      openStdin: stdio.stdin !== undefined || spec.terminal,
    });
    proc.bind(conn, stdio);
    void proc.done.then(async () => {
      await rm(processFile, { force: true });
      await rm(`${processFile}.pid`, { force: true });
    });
    return proc.pid;
  }

  async signal(id: string, signal: string, all: boolean): Promise<void> {
    const c = this.get(id);
    if (c.state !== "running" && c.state !== "paused")
      throw new AgentOpError("INVALID_STATE", `container ${id} is ${c.state}`);
    await runc(["kill", ...(all ? ["--all"] : []), id, signal.replace(/^SIG/, "")]);
  }

  async pause(id: string): Promise<void> {
    const c = this.get(id);
    if (c.state !== "running")
      throw new AgentOpError("INVALID_STATE", `container ${id} is ${c.state}, not running`);
    await runc(["pause", id]);
    c.state = "paused";
  }

  async resume(id: string): Promise<void> {
    const c = this.get(id);
    if (c.state !== "paused")
      throw new AgentOpError("INVALID_STATE", `container ${id} is ${c.state}, not paused`);
    await runc(["resume", id]);
    c.state = "running";
  }

  async stats(
    id: string,
  ): Promise<{ cpuUsageUsec: number; memoryBytes: number; memoryLimitBytes?: number; pids: number }> {
    const c = this.get(id);
    if (c.state === "created" || c.state === "stopped")
      throw new AgentOpError("INVALID_STATE", `container ${id} is ${c.state}`);
    const dir = `/sys/fs/cgroup/cocoon/${id}`;
    const read = (f: string): Promise<string> => readFile(path.join(dir, f), "utf8").catch(() => "");
    const usage = /usage_usec (\d+)/.exec(await read("cpu.stat"))?.[1];
    const max = (await read("memory.max")).trim();
    return {
      cpuUsageUsec: Number(usage ?? 0),
      memoryBytes: Number((await read("memory.current")).trim() || 0),
      ...(max && max !== "max" ? { memoryLimitBytes: Number(max) } : {}),
      pids: Number((await read("pids.current")).trim() || 0),
    };
  }

  /** Kills the container's processes, waits up to `timeoutSeconds`, deletes it and its mounts. */
  async remove(id: string, timeoutSeconds: number): Promise<void> {
    const c = this.get(id);
    if (c.state === "paused") await runc(["resume", id]).catch(() => undefined);
    if (c.state === "running" || c.state === "paused") {
      await runc(["kill", "--all", id, "KILL"]).catch(() => undefined);
      const init = this.procs.has(id) ? this.procs.get(id) : undefined;
      if (init) {
        const done = await Promise.race([
          init.done.then(() => true),
          new Promise<boolean>((r) => setTimeout(() => r(false), timeoutSeconds * 1000)),
        ]);
        if (!done)
          throw new AgentOpError("INVALID_STATE", `container ${id} did not stop within ${timeoutSeconds} s`);
      }
    }
    await runc(["delete", "--force", id]).catch(() => undefined);
    for (const p of this.procs.list())
      if (p.spec.containerId === id && !p.running) this.procs.remove(p.spec.execId);
    await this.teardown(c.bundle, c.storage.mountPoint, c.overlay);
    this.containers.delete(id);
  }

  async removeAll(): Promise<number> {
    const ids = [...this.containers.keys()];
    for (const id of ids) await this.remove(id, 10).catch(() => undefined);
    return ids.length;
  }

  private async teardown(bundle: string, storageMount: string, overlay: boolean): Promise<void> {
    if (overlay) await unmount(path.join(bundle, "rootfs"));
    await unmount(storageMount);
    await rm(bundle, { recursive: true, force: true });
  }
}
