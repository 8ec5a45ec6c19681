import { openSync, read, write, writev } from "node:fs";
import { Duplex } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { markStart } from "./start-timeline.js";

const readAsync = promisify(read);
const writeAsync = promisify(write);
const writevAsync = promisify(writev) as (fd: number, buffers: Buffer[]) => Promise<{ bytesWritten: number }>;

/** How often an idle port is polled while no host is connected. */
const IDLE_POLL_MS = 10;

/**
 * One host connection on a virtio-serial port. The port is a character device: a read
 * returns 0 when the host side is not connected (instead of blocking), so a 0 read ends the
 * session, and the next host connection is noticed by polling (see servePort).
 */
class PortSession extends Duplex {
  private readonly buffer = Buffer.allocUnsafe(256 * 1024);
  /** The host disconnected (a 0-byte read). */
  sawEof = false;
  private inflight: Promise<void> = Promise.resolve();

  constructor(
    private readonly fd: number,
    first: Buffer,
  ) {
    super();
    this.push(first);
  }

  override _read(): void {
    this.inflight = readAsync(this.fd, this.buffer, 0, this.buffer.length, null).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) this.sawEof = true;
        // after destroy() a push is ignored: the bytes belong to a session that is over
        this.push(bytesRead === 0 ? null : Buffer.from(this.buffer.subarray(0, bytesRead)));
      },
      (err: Error) => {
        this.destroy(err);
      },
    );
  }

  /** Waits for the read in flight, so the next session never races it for the fd. */
  settled(): Promise<void> {
    return this.inflight;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    void (async () => {
      let offset = 0;
      while (offset < chunk.length) {
        const { bytesWritten } = await writeAsync(this.fd, chunk, offset, chunk.length - offset);
        offset += bytesWritten;
      }
    })().then(
      () => cb(),
      (err: Error) => cb(err),
    );
  }

  /** Corked writes (a frame's header and payload) go out in one writev. */
  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    void (async () => {
      const buffers = chunks.map((c) => c.chunk);
      while (buffers.length) {
        let { bytesWritten } = await writevAsync(this.fd, buffers);
        while (buffers.length && bytesWritten >= buffers[0]!.length) bytesWritten -= buffers.shift()!.length;
        if (buffers.length && bytesWritten > 0) buffers[0] = buffers[0]!.subarray(bytesWritten);
      }
    })().then(
      () => cb(),
      (err: Error) => cb(err),
    );
  }

  override _final(cb: (err?: Error | null) => void): void {
    cb();
  }
}

/**
 * Serves one virtio-serial port forever: waits for a host to connect (first non-empty read),
 * runs a session until the host disconnects, and starts over.
 */
export async function servePort(
  device: string,
  onSession: (stream: Duplex) => Promise<void>,
  log: (m: string) => void,
): Promise<never> {
  // Synchronous: opening the port does not block, and the first answer waits for it (issue 14).
  const fd = openSync(device, "r+");
  markStart(`${device} open`);
  const probe = Buffer.allocUnsafe(64 * 1024);
  let first = true;
  for (;;) {
    let n: number;
    try {
      n = (await readAsync(fd, probe, 0, probe.length, null)).bytesRead;
    } catch (err) {
      log(`read ${device}: ${(err as Error).message}`);
      await sleep(100);
      continue;
    }
    if (n === 0) {
      await sleep(IDLE_POLL_MS);
      continue;
    }
    if (first) markStart(`${device} first read`);
    first = false;
    const session = new PortSession(fd, Buffer.from(probe.subarray(0, n)));
    await onSession(session).catch((err: Error) => log(`session on ${device} failed: ${err.message}`));
    session.destroy();
    await session.settled();
    // A session that ended without the host leaving (a protocol error) drains the rest of that
    // host's bytes: the next session starts only with the next connection.
    let drained = session.sawEof;
    while (!drained) {
      try {
        drained = (await readAsync(fd, probe, 0, probe.length, null)).bytesRead === 0;
      } catch {
        drained = true;
      }
    }
  }
}
