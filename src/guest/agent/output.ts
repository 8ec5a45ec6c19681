import type { Readable } from "node:stream";
import type { Stream } from "../../agent/protocol/connection.js";

/** Output kept per stream while no session is reading it; past this the process is paused. */
export const OUTPUT_BUFFER_LIMIT = 1024 * 1024;

/**
 * Carries one output pipe of a process (stdout or stderr) to whichever session stream is bound
 * to it. While none is, output is buffered up to a limit and then the pipe is paused, so a
 * process nobody reads blocks instead of eating the guest's memory. A later session can bind
 * and get everything that was buffered, then the live output, then EOF.
 */
export class OutputPump {
  private chunks: Buffer[] = [];
  private size = 0;
  private sourceEnded = false;
  private target: Stream | undefined;
  private draining = false;
  private eofDelivered = false;
  /** Resolves when the source has ended (all output has been read from the pipe). */
  readonly ended: Promise<void>;

  constructor(
    private readonly source: Readable,
    private readonly limit = OUTPUT_BUFFER_LIMIT,
  ) {
    this.ended = new Promise((resolve) => {
      source.on("end", () => {
        this.sourceEnded = true;
        resolve();
        void this.flush();
      });
      source.on("error", () => {
        this.sourceEnded = true;
        resolve();
        void this.flush();
      });
    });
    source.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.size += chunk.length;
      if (this.size >= this.limit) source.pause();
      void this.flush();
    });
  }

  get buffered(): number {
    return this.size;
  }

  /** Sends output to `stream` from now on (the previous stream, if any, is ended). */
  bind(stream: Stream): void {
    if (this.target && this.target !== stream) this.target.end();
    if (this.eofDelivered) {
      stream.end();
      return;
    }
    this.target = stream;
    void this.flush();
  }

  private async flush(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.target && this.chunks.length) {
        const chunk = this.chunks[0]!;
        try {
          await this.target.write(chunk);
        } catch {
          this.target = undefined; // the session went away: keep buffering for the next one
          break;
        }
        this.chunks.shift();
        this.size -= chunk.length;
        if (this.size < this.limit && this.source.isPaused()) this.source.resume();
      }
      if (this.target && this.sourceEnded && this.chunks.length === 0) {
        this.target.end();
        this.target = undefined;
        this.eofDelivered = true;
      }
    } finally {
      this.draining = false;
    }
    // data that arrived while the last write was in flight
    if (this.target && (this.chunks.length || (this.sourceEnded && !this.eofDelivered))) void this.flush();
  }
}
