import { Writable, type Readable } from "node:stream";
import type { AgentClient } from "../agent/client.js";
import type { Stream } from "../agent/protocol/connection.js";
import type { ProcessExit } from "../agent/protocol/methods.js";

/** The host side of a process in a sandbox: its streams, and how to wait for and signal it. */
export class ProcessHandle {
  /** Bytes for the process's stdin (undefined when stdin was not asked for). */
  readonly stdin: Writable | undefined;
  /** The process's stdout (with a terminal: everything it writes). */
  readonly stdout: Readable;
  /** The process's stderr (empty with a terminal). */
  readonly stderr: Readable;

  constructor(
    private readonly client: AgentClient,
    readonly execId: string,
    readonly containerId: string | undefined,
    readonly pid: number,
    streams: { stdin?: Stream; stdout: Stream; stderr: Stream },
  ) {
    this.stdout = streams.stdout.readable;
    this.stderr = streams.stderr.readable;
    const out = streams.stdout;
    const err = streams.stderr;
    // We only read these: end our side, so each stream is released once the agent ends it.
    out.end();
    err.end();
    const input = streams.stdin;
    this.stdin = input
      ? new Writable({
          write: (chunk: Buffer, _enc, cb) => {
            input.write(chunk).then(() => cb(), cb);
          },
          final: (cb) => {
            input.end();
            cb();
          },
        })
      : undefined;
    this.stdin?.on("error", () => undefined);
  }

  /** Resolves with the exit status once the process has ended (no timeout). */
  wait(): Promise<ProcessExit> {
    return this.client.call("process.wait", { execId: this.execId }, { timeoutMs: 0 });
  }

  async signal(signal: string): Promise<void> {
    await this.client.call("process.signal", { execId: this.execId, signal });
  }

  async resize(rows: number, cols: number): Promise<void> {
    await this.client.call("process.resize", { execId: this.execId, rows, cols });
  }

  async closeStdin(): Promise<void> {
    this.stdin?.end();
    await this.client.call("process.closeStdin", { execId: this.execId });
  }

  /**
   * Waits for the exit and for every byte of output. A stream nobody is reading is drained
   * (its bytes discarded): an unread stream would otherwise hold the process up forever.
   */
  async done(): Promise<ProcessExit> {
    const drained = (r: Readable): Promise<void> =>
      new Promise((resolve) => {
        if (r.readableEnded || r.destroyed) return resolve();
        r.once("end", resolve);
        r.once("close", resolve);
        r.once("error", () => resolve());
        if (r.readableFlowing !== true) r.resume();
      });
    const [exit] = await Promise.all([this.wait(), drained(this.stdout), drained(this.stderr)]);
    return exit;
  }

  /** Collects all output (for small outputs) and the exit status. */
  async output(): Promise<{ stdout: Buffer; stderr: Buffer; exit: ProcessExit }> {
    const collect = (r: Readable): Promise<Buffer> =>
      new Promise((resolve) => {
        const chunks: Buffer[] = [];
        r.on("data", (c: Buffer) => chunks.push(c));
        r.once("end", () => resolve(Buffer.concat(chunks)));
        r.once("error", () => resolve(Buffer.concat(chunks)));
      });
    const [stdout, stderr, exit] = await Promise.all([
      collect(this.stdout),
      collect(this.stderr),
      this.wait(),
    ]);
    return { stdout, stderr, exit };
  }
}
