import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, constants, createWriteStream, openSync } from "node:fs";
import { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import type { Readable, Writable } from "node:stream";
import { once } from "node:events";

/** Where one output stream goes: a FIFO or file the client named, or a logging binary's pipe. */
interface Sink {
  stream: Writable;
  /** Ends the stream and resolves once every byte reached the file and the fd is closed. */
  finish(): Promise<void>;
}

function finishOf(stream: Writable, extra?: () => void): () => Promise<void> {
  return async () => {
    if (!stream.writableFinished && !stream.destroyed) {
      stream.end();
      await Promise.race([once(stream, "finish"), once(stream, "close")]).catch(() => undefined);
    }
    if (!stream.destroyed) stream.destroy();
    if (!stream.closed) await once(stream, "close").catch(() => undefined);
    extra?.();
  };
}

/**
 * A FIFO end as a libuv pipe stream: a non-blocking fd driven by epoll, so a full or empty
 * FIFO waits instead of failing with EAGAIN (fs streams on a non-blocking fd lose data there).
 */
function fifoStream(fd: number, mode: "read" | "write"): Socket {
  const s = new Socket({ fd, readable: mode === "read", writable: mode === "write", allowHalfOpen: true });
  s.on("error", () => undefined);
  return s;
}

/** How long a logging binary may take to signal it is ready, and to exit once its input ended. */
const LOGGER_READY_MS = 10_000;
const LOGGER_EXIT_MS = 12_000;

export function isBinaryUri(target: string): boolean {
  return target.startsWith("binary://") || target.startsWith("binary-v2://");
}

/**
 * A logging binary, as containerd's shims run one (`ctr run --log-uri binary:///path?k=v`): the
 * URI's query becomes its arguments (`k v`), CONTAINER_ID and CONTAINER_NAMESPACE its
 * environment; it reads the container's stdout on fd 3 and stderr on fd 4, and closes fd 5 when
 * it is ready. One process serves both streams. It is ended (and reaped) with the streams.
 */
async function openBinaryLogger(
  target: string,
  id: string,
  ns: string,
): Promise<{ stdout: Sink; stderr: Sink }> {
  const url = new URL(target);
  const args = [...url.searchParams.entries()].flatMap(([k, v]) => (v ? [k, v] : [k]));
  const child: ChildProcess = spawn(url.pathname, args, {
    stdio: ["ignore", "ignore", "ignore", "pipe", "pipe", "pipe"],
    env: { ...process.env, CONTAINER_ID: id, CONTAINER_NAMESPACE: ns },
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once("exit", () => resolve());
    child.once("error", () => resolve());
  });
  const fds = child.stdio as unknown as [unknown, unknown, unknown, Writable, Writable, Readable];
  const [, , , out, err, ready] = fds;
  for (const s of [out, err, ready]) s.on("error", () => undefined);
  ready.resume();
  const failed = await Promise.race([
    Promise.race([once(ready, "end"), once(ready, "close")]).then(() => false),
    once(child, "error").then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(true), LOGGER_READY_MS).unref()),
  ]).catch(() => true);
  if (failed || child.exitCode !== null) {
    child.kill("SIGKILL");
    throw new Error(`the logging binary ${url.pathname} did not start or did not signal it was ready`);
  }
  let open = 2;
  const finishOne = (stream: Writable) => {
    const done = finishOf(stream);
    return async () => {
      await done();
      if (--open > 0) return;
      const timer = setTimeout(() => child.kill("SIGKILL"), LOGGER_EXIT_MS);
      await exited;
      clearTimeout(timer);
    };
  };
  return { stdout: { stream: out, finish: finishOne(out) }, stderr: { stream: err, finish: finishOne(err) } };
}

/**
 * Opens one output target (containerd's createIO rules): empty → none; `file://` → append;
 * otherwise a FIFO path (`binary://` is opened for both streams by openBinaryLogger). A FIFO's
 * write end is opened non-blocking (the client already holds the read end), with a read handle
 * kept so a client that goes away never makes the shim's writes fail with EPIPE.
 */
function openSink(target: string): Sink | undefined {
  if (!target) return undefined;
  if (target.startsWith("file://")) {
    const stream = createWriteStream(fileURLToPath(target), { flags: "a" });
    return { stream, finish: finishOf(stream) };
  }
  const keep = openSync(target, constants.O_RDONLY | constants.O_NONBLOCK);
  const stream = fifoStream(openSync(target, constants.O_WRONLY | constants.O_NONBLOCK), "write");
  return { stream, finish: finishOf(stream, () => closeSync(keep)) };
}

/**
 * The stdin FIFO: read end as a pipe stream, plus a write handle of our own so the stream sees
 * no EOF between the client's opens or before it opened at all. CloseIO drops that handle: the
 * reader then drains what the client wrote and ends when the client's write end is closed.
 */
class StdinFifo {
  private holdFd: number | undefined;
  readonly stream: Socket;

  constructor(path: string) {
    this.stream = fifoStream(openSync(path, constants.O_RDONLY | constants.O_NONBLOCK), "read");
    this.holdFd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  }

  release(): void {
    if (this.holdFd === undefined) return;
    closeSync(this.holdFd);
    this.holdFd = undefined;
  }

  destroy(): void {
    this.release();
    this.stream.destroy();
  }
}

/** A process's host-side stdio: the client's FIFOs, pumped to and from the guest. */
export class ProcessIo {
  private constructor(
    private readonly stdin: StdinFifo | undefined,
    private readonly stdout: Sink | undefined,
    private readonly stderr: Sink | undefined,
  ) {}

  static async open(
    paths: { stdin: string; stdout: string; stderr: string },
    id: string,
    ns: string,
  ): Promise<ProcessIo> {
    if (isBinaryUri(paths.stdout)) {
      const logger = await openBinaryLogger(paths.stdout, id, ns);
      return new ProcessIo(
        paths.stdin ? new StdinFifo(paths.stdin) : undefined,
        logger.stdout,
        logger.stderr,
      );
    }
    const stdout = openSink(paths.stdout);
    const stderr =
      paths.stderr === paths.stdout && paths.stderr.startsWith("file://") ? stdout : openSink(paths.stderr);
    return new ProcessIo(paths.stdin ? new StdinFifo(paths.stdin) : undefined, stdout, stderr);
  }

  get hasStdin(): boolean {
    return this.stdin !== undefined;
  }

  /**
   * Connects the guest process's streams. Resolves once every output byte was written and
   * the write ends are closed (so Wait and TaskExit can follow).
   */
  async pump(proc: { stdin: Writable | undefined; stdout: Readable; stderr: Readable }): Promise<void> {
    if (this.stdin && proc.stdin) this.stdin.stream.pipe(proc.stdin);
    const copy = async (from: Readable, to: Sink | undefined, endSink: boolean): Promise<void> => {
      if (!to) {
        from.resume();
        await once(from, "end").catch(() => undefined);
        return;
      }
      from.pipe(to.stream, { end: false });
      if (!from.readableEnded)
        await Promise.race([once(from, "end"), once(from, "close")]).catch(() => undefined);
      if (endSink) await to.finish();
    };
    const shared = this.stderr === this.stdout;
    await Promise.all([copy(proc.stdout, this.stdout, !shared), copy(proc.stderr, this.stderr, !shared)]);
    if (shared) await this.stdout?.finish();
    // The process's output ended: nothing reads its stdin any more.
    this.stdin?.destroy();
  }

  /** CloseIO: the client is done with stdin; what it wrote still reaches the process. */
  closeStdin(target: Writable | undefined): void {
    if (this.stdin) this.stdin.release();
    else target?.end();
  }

  /** Closes everything without waiting for data (delete of a process that never ran). */
  async close(): Promise<void> {
    this.stdin?.destroy();
    await Promise.all([
      this.stdout?.finish(),
      this.stderr === this.stdout ? undefined : this.stderr?.finish(),
    ]);
  }
}
