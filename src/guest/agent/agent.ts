import { resourceHandlers } from "./resources.js";
import { createReadStream, createWriteStream } from "node:fs";
import { chown, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { Connection } from "../../agent/protocol/connection.js";
import { ContainerTable } from "./containers.js";
import type { Handlers } from "./dispatch.js";
import { AgentOpError } from "./errors.js";
import { checkExecutable, resolveInRoot } from "./exec-path.js";
import { DEFAULT_PATH } from "./oci.js";
import { AGENT_VERSION, basicHandlers } from "./ops/basic.js";
import { ProcessTable } from "./processes.js";
import { runThrough } from "./run.js";
import { SpawnerLauncher } from "./spawner.js";
import { freshenGuest, reseedGuest, setGuestClock } from "./guestctl.js";
import { mountStorage, unmount } from "./storage.js";
import { extraHostsText, networkHandlers } from "./network.js";

const SANDBOX_DIR = "/run/cocoon/sandbox";

/**
 * The agent's state, shared by every session: the sandbox it serves, its containers and
 * processes. Sessions come and go (each cocoon command is one); the work they start stays.
 */
export class AgentState {
  /** Processes start through cocoon-spawner, started here once (issue 14: see spawner.ts). */
  readonly procs: ProcessTable;
  readonly containers: ContainerTable;
  private sandboxId: string | undefined;
  private mounted: string[] = [];
  private readonly sessions = new Set<Connection>();

  constructor() {
    const launcher = new SpawnerLauncher();
    this.procs = new ProcessTable(launcher.launch);
    runThrough(launcher.launch);
    this.containers = new ContainerTable(this.procs, () =>
      this.sandboxId ? path.join(SANDBOX_DIR, "resolv.conf") : undefined,
    );
    // Every session hears about every exit (a `cocoon wait` in another process, the monitor).
    this.procs.onExit((p) => {
      for (const conn of this.sessions) {
        if (!conn.closed) {
          conn.sendEvent("process.exited", {
            execId: p.spec.execId,
            ...(p.spec.containerId ? { containerId: p.spec.containerId } : {}),
            exit: p.exit,
          });
        }
      }
    });
  }

  addSession(conn: Connection): void {
    this.sessions.add(conn);
    conn.once("close", () => this.sessions.delete(conn));
  }

  handlers(): Handlers {
    return {
      ...basicHandlers,
      ...resourceHandlers,
      ...networkHandlers(() => `127.0.0.1\tlocalhost\n127.0.1.1\t${os.hostname()}\n`),
      "guest.details": async () => ({
        agentVersion: AGENT_VERSION,
        kernel: os.release(),
        cpus: os.cpus().length,
        memoryBytes: os.totalmem(),
        memBlockSizeBytes: Number.parseInt(
          (
            await readFile("/sys/devices/system/memory/block_size_bytes", "utf8").catch(() => "8000000")
          ).trim(),
          16,
        ),
        storageDrivers: ["virtio-fs", "9p", "scsi", "blk", "tmpfs"],
        supportsSeccomp: (await readFile("/proc/self/status", "utf8").catch(() => "")).includes("Seccomp:"),
        hostname: os.hostname(),
      }),
      "guest.setTime": async ({ unixMs }) => {
        await setGuestClock(unixMs);
        return { realtimeMs: Date.now() };
      },
      "guest.reseedRandom": async ({ data }) => {
        const bytes = Buffer.from(data, "base64");
        await reseedGuest(bytes);
        return { bytes: bytes.length };
      },
      "guest.freshen": async ({ data, unixMs }) => {
        const bytes = Buffer.from(data, "base64");
        await freshenGuest(bytes, unixMs);
        return { bytes: bytes.length, realtimeMs: Date.now() };
      },
      "sandbox.create": async (p) => {
        if (this.sandboxId && this.sandboxId !== p.sandboxId) {
          throw new AgentOpError("ALREADY_EXISTS", `this agent already serves sandbox ${this.sandboxId}`);
        }
        await mkdir(SANDBOX_DIR, { recursive: true });
        // sethostname(2) through procfs: what `hostname` does, without a process to spawn
        // (a spawn is the slowest step of a clone's create under TCG).
        await writeFile("/proc/sys/kernel/hostname", p.hostname);
        const resolv = [
          ...p.dns.map((d) => `nameserver ${d}`),
          ...(p.dnsSearch.length ? [`search ${p.dnsSearch.join(" ")}`] : []),
        ];
        await writeFile(path.join(SANDBOX_DIR, "resolv.conf"), resolv.length ? resolv.join("\n") + "\n" : "");
        await writeFile("/run/resolv.conf", resolv.length ? resolv.join("\n") + "\n" : "");
        await writeFile("/run/hosts", `127.0.0.1\tlocalhost\n127.0.1.1\t${p.hostname}\n${extraHostsText()}`);
        for (const s of p.storages) {
          await mountStorage(s);
          if (!this.mounted.includes(s.mountPoint)) this.mounted.push(s.mountPoint);
        }
        this.sandboxId = p.sandboxId;
        return { mounted: [...this.mounted] };
      },
      "sandbox.destroy": async () => {
        const killed = await this.containers.removeAll();
        let procs = 0;
        for (const p of this.procs.list()) {
          if (p.running) {
            procs++;
            try {
              process.kill(-p.pid, "SIGKILL");
            } catch {
              p.child.kill("SIGKILL");
            }
          } else {
            // The sandbox is gone: its ended processes (a template's warm-up run) are forgotten.
            this.procs.remove(p.spec.execId);
          }
        }
        for (const m of this.mounted.splice(0).reverse()) await unmount(m);
        this.sandboxId = undefined;
        return { killed: killed + procs };
      },
      "container.create": async (p) => this.containers.create(p),
      "container.start": async (p, ctx) => ({
        pid: await this.containers.start(p.containerId, ctx.connection, p.stdio, p),
      }),
      "container.remove": async (p) => {
        await this.containers.remove(p.containerId, p.timeoutSeconds);
        return {};
      },
      "container.pause": async (p) => {
        await this.containers.pause(p.containerId);
        return {};
      },
      "container.resume": async (p) => {
        await this.containers.resume(p.containerId);
        return {};
      },
      "container.list": async () => ({ containers: this.containers.list() }),
      "container.stats": async (p) => this.containers.stats(p.containerId),
      "process.start": async (p, ctx) => {
        if (p.containerId) {
          return {
            pid: await this.containers.exec(p.containerId, p.execId, p.process, ctx.connection, p.stdio),
          };
        }
        const env = p.process.env.some((e) => e.startsWith("PATH="))
          ? p.process.env
          : [DEFAULT_PATH, ...p.process.env];
        await checkExecutable("/", p.process.args[0]!, env, p.process.cwd);
        const proc = await this.procs.launch({
          execId: p.execId,
          args: p.process.args,
          argv: p.process.args,
          env: Object.fromEntries(env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)])),
          cwd: p.process.cwd,
          uid: p.process.user.uid,
          gid: p.process.user.gid,
          terminal: p.process.terminal,
          rows: p.process.rows,
          cols: p.process.cols,
          wrapped: p.process.terminal,
          openStdin: p.stdio.stdin !== undefined || p.process.terminal,
        });
        proc.bind(ctx.connection, p.stdio);
        return { pid: proc.pid };
      },
      "process.attach": async (p, ctx) => {
        this.procs.get(p.execId).bind(ctx.connection, p.stdio);
        return {};
      },
      "process.wait": async (p, ctx) => {
        const proc = this.procs.get(p.execId);
        return Promise.race([
          proc.done,
          new Promise<never>((_, reject) =>
            ctx.signal.addEventListener("abort", () =>
              reject(new AgentOpError("INVALID_STATE", "cancelled")),
            ),
          ),
        ]);
      },
      "process.signal": async (p) => {
        if (p.execId) {
          await this.procs.get(p.execId).signal(p.signal);
        } else if (p.containerId) {
          await this.containers.signal(p.containerId, p.signal, p.all);
        } else {
          throw new AgentOpError("INVALID_ARGUMENT", "process.signal needs an execId or a containerId");
        }
        return {};
      },
      "process.resize": async (p) => {
        this.procs.get(p.execId).resize(p.rows, p.cols);
        return {};
      },
      "process.closeStdin": async (p) => {
        this.procs.get(p.execId).closeStdin();
        return {};
      },
      "process.list": async () => ({ processes: this.procs.list().map((p) => p.info()) }),
      "file.write": async (p, ctx) => {
        const target = await this.pathFor(p.containerId, p.path);
        const input = ctx.connection.stream(p.stream);
        await mkdir(path.dirname(target), { recursive: true });
        const tmp = `${target}.cocoon-tmp-${process.pid}-${Date.now()}`;
        let bytes = 0;
        input.readable.on("data", (c: Buffer) => (bytes += c.length));
        try {
          await pipeline(input.readable, createWriteStream(tmp, { mode: p.mode }));
          await chown(tmp, p.uid, p.gid);
          await rename(tmp, target);
        } catch (err) {
          await rm(tmp, { force: true });
          throw err instanceof AgentOpError
            ? err
            : new AgentOpError("IO", `cannot write ${p.path}: ${(err as Error).message}`);
        } finally {
          input.end();
        }
        return { bytes };
      },
      "file.read": async (p, ctx) => {
        const source = await this.pathFor(p.containerId, p.path);
        const out = ctx.connection.stream(p.stream);
        let st;
        try {
          st = await stat(source);
        } catch {
          out.end();
          throw new AgentOpError(
            "NOT_FOUND",
            `no such file in the ${p.containerId ? `container ${p.containerId}` : "guest"}: ${p.path}`,
          );
        }
        if (!st.isFile()) {
          out.end();
          throw new AgentOpError("INVALID_ARGUMENT", `${p.path} is not a regular file`);
        }
        let bytes = 0;
        for await (const chunk of createReadStream(source)) {
          await out.write(chunk as Buffer);
          bytes += (chunk as Buffer).length;
        }
        out.end();
        return { bytes, mode: st.mode & 0o7777 };
      },
    };
  }

  /** A path as the agent sees it: inside a container's root, or the guest's own. */
  private async pathFor(containerId: string | undefined, p: string): Promise<string> {
    if (!containerId) return p;
    return resolveInRoot(this.containers.get(containerId).rootfs, p);
  }
}
