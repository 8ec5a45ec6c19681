/**
 * The client of cocoon-spawner (src/guest/spawner/cocoon-spawner.c, which documents the
 * protocol): the agent starts processes through that small pre-forked helper instead of
 * forking its own node process for each, which costs ~56 ms per exec under TCG (issue 14).
 *
 * Node cannot receive a descriptor over a pipe or a plain unix socket, so the spawner keeps
 * the agent's ends of each process's pipes open until the agent has opened them itself through
 * /proc/<spawner>/fd/<n> (which works for pipes), then closes its copies ("release"). The
 * agent wraps them in net.Sockets, as child_process wraps its own pipes: non-blocking libuv
 * pipe handles, so pausing a readable stops reading and the process blocks on a full pipe.
 *
 * Terminals still go through node's spawn (cocoon-pty needs fd 3 and the agent's stderr, and
 * they are rare); so does everything when the helper is missing or keeps dying.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { constants as fsConstants, openSync } from "node:fs";
import net from "node:net";
import { constants as osConstants } from "node:os";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { getSystemErrorName } from "node:util";
import { AgentOpError } from "./errors.js";
import {
  spawnWithNode,
  startError,
  type ChildExit,
  type LaunchedChild,
  type LaunchOptions,
} from "./child.js";

export const SPAWNER_HELPER = "/usr/bin/cocoon-spawner";
/** Restarts of a dead spawner before the agent keeps to node's spawn for good. */
const MAX_RESTARTS = 3;

export type SpawnerReply =
  | { kind: "ready"; pid: number }
  | {
      kind: "ok";
      id: string;
      pid: number;
      stdinFd: number | undefined;
      stdoutFd: number;
      stderrFd: number;
    }
  | { kind: "err"; id: string; errno: number }
  | { kind: "exit"; pid: number; exit: ChildExit };

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, num]) => [num, name as NodeJS.Signals]),
);

function frame(fields: string[]): Buffer {
  const body = Buffer.from(fields.map((f) => `${f}\0`).join(""));
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length);
  return Buffer.concat([head, body]);
}

/** A spawn request: `spawn ID FLAGS UID GID CWD ARGC ARGV... ENV...` (see the C source). */
export function encodeSpawn(id: string, o: LaunchOptions): Buffer {
  // As node's spawn: variables whose value is undefined are left out.
  const env = Object.entries(o.env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
  const fields = [
    "spawn",
    id,
    o.stdin ? "is" : "s", // always a new session: as node's `detached: true`
    o.uid === undefined ? "-" : String(o.uid),
    o.gid === undefined ? "-" : String(o.gid),
    o.cwd,
    String(o.argv.length),
    ...o.argv,
    ...env,
  ];
  // NUL separates the fields; node's spawn refuses it in an argument too.
  if (fields.some((f) => f.includes("\0")))
    throw new AgentOpError("INVALID_ARGUMENT", "arguments, environment and cwd must not contain NUL bytes");
  return frame(fields);
}

export function encodeRelease(id: string): Buffer {
  return frame(["release", id]);
}

const int = (s: string | undefined): number | undefined =>
  s !== undefined && /^\d+$/.test(s) ? Number(s) : undefined;

/** One reply line, or undefined for one this client does not know. */
export function parseReply(line: string): SpawnerReply | undefined {
  const w = line.split(" ");
  const id = w[1] ?? "";
  if (w[0] === "ready" && w.length === 2) {
    const pid = int(w[1]);
    return pid === undefined ? undefined : { kind: "ready", pid };
  }
  if (w[0] === "ok" && w.length === 6 && id) {
    const [pid, stdinFd, stdoutFd, stderrFd] = [int(w[2]), int(w[3]), int(w[4]), int(w[5])];
    if (pid === undefined || stdoutFd === undefined || stderrFd === undefined) return undefined;
    if (stdinFd === undefined && w[3] !== "-") return undefined;
    return { kind: "ok", id, pid, stdinFd, stdoutFd, stderrFd };
  }
  if (w[0] === "err" && w.length === 3 && id) {
    const errno = int(w[2]);
    return errno === undefined ? undefined : { kind: "err", id, errno };
  }
  if (w[0] === "exit" && w.length === 4) {
    const [pid, n] = [int(w[1]), int(w[3])];
    if (pid === undefined || n === undefined) return undefined;
    if (w[2] === "code") return { kind: "exit", pid, exit: { code: n, signal: null } };
    // a signal node has no name for cannot kill a process (SIGKILL stands in, as it never occurs)
    if (w[2] === "signal")
      return { kind: "exit", pid, exit: { code: null, signal: SIGNAL_NAMES.get(n) ?? "SIGKILL" } };
  }
  return undefined;
}

/** A process the spawner started: its pipes reopened here, its exit told by the spawner. */
class SpawnedChild implements LaunchedChild {
  readonly control = undefined;
  readonly exited: Promise<ChildExit>;
  hasExited = false;
  private resolveExit!: (exit: ChildExit) => void;

  constructor(
    readonly pid: number,
    readonly stdin: Writable | null,
    readonly stdout: net.Socket,
    readonly stderr: net.Socket,
  ) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  ended(exit: ChildExit): void {
    this.hasExited = true;
    this.resolveExit(exit);
  }

  kill(signal: NodeJS.Signals): void {
    if (this.hasExited) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // gone already: as ChildProcess.kill, nothing to report
    }
  }
}

/** Opens the agent's end of a pipe that the spawner holds, as a non-blocking node stream. */
function reopen(spawnerPid: number, fd: number, write: boolean): net.Socket {
  // O_NONBLOCK: a read end whose writer has already exited must not wait for one (FIFO open rules).
  const flags = (write ? fsConstants.O_WRONLY : fsConstants.O_RDONLY) | fsConstants.O_NONBLOCK;
  const own = openSync(`/proc/${spawnerPid}/fd/${fd}`, flags);
  return new net.Socket({ fd: own, readable: !write, writable: write });
}

/** Input for a process that has already closed its stdin: swallowed, as a broken pipe's is. */
function discard(): Writable {
  return new Writable({ write: (_chunk, _enc, done) => done() });
}

/** One running cocoon-spawner and the requests it is answering. */
export class Spawner {
  private readonly proc: ChildProcess;
  private spawnerPid = 0;
  private seq = 0;
  private text = "";
  private readonly pending = new Map<
    string,
    { resolve: (c: LaunchedChild) => void; reject: (e: Error) => void; options: LaunchOptions }
  >();
  private readonly children = new Map<number, SpawnedChild>();
  private alive = true;
  /** Resolves when the helper is ready; rejects if it cannot be started. */
  readonly ready: Promise<void>;
  /** Resolves when the helper has gone (exited, or never started). */
  readonly gone: Promise<void>;

  constructor(
    helper = SPAWNER_HELPER,
    private readonly log: (message: string) => void = () => undefined,
  ) {
    this.proc = spawn(helper, [], { stdio: ["pipe", "pipe", "inherit"] });
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => ((readyResolve = resolve), (readyReject = reject)));
    this.ready.catch(() => undefined);
    this.gone = new Promise<void>((resolve) => {
      const down = (why: string): void => {
        if (!this.alive) return;
        this.alive = false;
        readyReject(new Error(why));
        this.failAll(why);
        resolve();
      };
      this.proc.once("error", (err) => down(`cannot start ${helper}: ${err.message}`));
      // "close", not "exit": the exit lines still in the pipe are read first
      this.proc.once("close", (code, signal) => down(`${helper} exited (${signal ?? String(code)})`));
    });
    this.proc.stdin!.on("error", () => undefined);
    this.proc.stdout!.setEncoding("latin1");
    this.proc.stdout!.on("data", (chunk: string) => {
      this.text += chunk;
      let nl: number;
      while ((nl = this.text.indexOf("\n")) >= 0) {
        const line = this.text.slice(0, nl);
        this.text = this.text.slice(nl + 1);
        const reply = parseReply(line);
        if (!reply) this.log(`spawner: unexpected reply ${JSON.stringify(line)}`);
        else if (reply.kind === "ready") {
          this.spawnerPid = reply.pid;
          readyResolve();
        } else this.handle(reply);
      }
    });
  }

  get running(): boolean {
    return this.alive;
  }

  /** Starts a process through the helper (not a terminal: see the module comment). */
  async spawn(options: LaunchOptions): Promise<LaunchedChild> {
    await this.ready;
    const id = String(++this.seq);
    const request = encodeSpawn(id, options);
    if (!this.alive) throw new AgentOpError("INTERNAL", "the process spawner has exited");
    return new Promise<LaunchedChild>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, options });
      this.proc.stdin!.write(request);
    });
  }

  /** Ends the helper (tests): it exits on EOF; the processes it started go on. */
  stop(): Promise<void> {
    this.proc.stdin!.end();
    return this.gone;
  }

  private handle(reply: Exclude<SpawnerReply, { kind: "ready" }>): void {
    if (reply.kind === "exit") {
      const child = this.children.get(reply.pid);
      this.children.delete(reply.pid);
      child?.ended(reply.exit);
      return;
    }
    const req = this.pending.get(reply.id);
    if (!req) return;
    this.pending.delete(reply.id);
    const argv0 = req.options.argv[0]!;
    if (reply.kind === "err") {
      const name = getSystemErrorName(-reply.errno);
      req.reject(startError(argv0, name, `spawn ${argv0} ${name}`));
      return;
    }
    // The pipes are opened and the child registered in this same turn: its exit line, which
    // may be in the chunk being parsed, is only handled after this returns.
    const opened: net.Socket[] = [];
    try {
      const stdout = reopen(this.spawnerPid, reply.stdoutFd, false);
      opened.push(stdout);
      const stderr = reopen(this.spawnerPid, reply.stderrFd, false);
      opened.push(stderr);
      const stdin = reply.stdinFd === undefined ? null : this.reopenStdin(reply.stdinFd);
      const child = new SpawnedChild(reply.pid, stdin, stdout, stderr);
      this.children.set(reply.pid, child);
      req.resolve(child);
    } catch (err) {
      for (const s of opened) s.destroy();
      try {
        process.kill(reply.pid, "SIGKILL");
      } catch {
        // gone already
      }
      req.reject(
        new AgentOpError("INTERNAL", `cannot open the pipes of ${argv0}: ${(err as Error).message}`),
      );
    } finally {
      this.proc.stdin!.write(encodeRelease(reply.id));
    }
  }

  private reopenStdin(fd: number): Writable {
    try {
      return reopen(this.spawnerPid, fd, true);
    } catch (err) {
      // ENXIO: no reader left, the process has closed its stdin (or exited) already
      if ((err as NodeJS.ErrnoException).code !== "ENXIO") throw err;
      return discard();
    }
  }

  /**
   * The helper has gone: requests in flight fail (their process may or may not have started,
   * so they are not retried), and the exit status of the processes it started is lost (init
   * reaps them). Those are reported as exit 255 once they are gone.
   */
  private failAll(why: string): void {
    for (const [id, req] of this.pending) {
      this.pending.delete(id);
      req.reject(new AgentOpError("INTERNAL", `cannot start ${req.options.argv[0]!}: ${why}`));
    }
    const orphans = [...this.children.values()];
    this.children.clear();
    if (orphans.length) this.log(`${why}: ${orphans.length} process(es) lose their exit status`);
    for (const child of orphans) {
      void (async () => {
        while (isAlive(child.pid)) await sleep(100);
        child.ended({ code: 255, signal: null });
      })();
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts processes through the spawner when it can, else with node's spawn: a helper that is
 * missing is not asked again; one that dies is restarted a few times, then given up on. Each
 * fallback is logged once.
 */
export class SpawnerLauncher {
  private spawner: Spawner | undefined;
  private restarts = 0;
  private disabled = false;

  constructor(
    private readonly helper = SPAWNER_HELPER,
    private readonly log: (message: string) => void = (m) => process.stderr.write(`cocoon-agent: ${m}\n`),
  ) {
    this.spawner = this.start();
  }

  readonly launch = async (options: LaunchOptions): Promise<LaunchedChild> => {
    const spawner = options.terminal ? undefined : this.current();
    if (spawner) {
      try {
        await spawner.ready;
      } catch {
        return spawnWithNode(options); // it could not start: current() has logged why
      }
      return spawner.spawn(options);
    }
    return spawnWithNode(options);
  };

  /** Ends the helper (tests). */
  async stop(): Promise<void> {
    this.disabled = true;
    await this.spawner?.stop();
  }

  private start(): Spawner {
    const s = new Spawner(this.helper, this.log);
    void s.ready.then(
      () => undefined,
      (err: Error) => {
        // Missing, or not runnable: node's spawn from now on.
        if (this.disabled) return;
        this.disabled = true;
        this.log(`${err.message}; processes start with node's spawn`);
      },
    );
    void s.gone.then(() => {
      if (this.disabled || this.spawner !== s) return;
      if (this.restarts >= MAX_RESTARTS) {
        this.disabled = true;
        this.log(`the process spawner keeps exiting; processes start with node's spawn`);
      } else {
        this.log(`the process spawner exited; restarting it`);
      }
    });
    return s;
  }

  private current(): Spawner | undefined {
    if (this.disabled) return undefined;
    if (this.spawner && !this.spawner.running) {
      this.restarts++;
      this.spawner = this.restarts > MAX_RESTARTS ? undefined : this.start();
    }
    return this.spawner;
  }
}
