/**
 * ttrpc framing (containerd/ttrpc PROTOCOL.md): a 10-byte header — data length (u32 BE),
 * stream id (u32 BE), message type (u8), flags (u8) — then the data.
 */
export const HEADER_SIZE = 10;
/** ttrpc's maximum message size (4 MiB). */
export const MAX_DATA = 4 << 20;

export const MessageType = { request: 1, response: 2, data: 3 } as const;

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  data: Buffer;
}

export function encodeFrame(frame: Omit<Frame, "data"> & { data: Uint8Array }): Buffer {
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32BE(frame.data.length, 0);
  header.writeUInt32BE(frame.streamId, 4);
  header.writeUInt8(frame.type, 8);
  header.writeUInt8(frame.flags, 9);
  return Buffer.concat([header, frame.data]);
}

/** A frame whose data was larger than MAX_DATA: its bytes were skipped, the stream gets an error. */
export interface OversizedFrame {
  streamId: number;
  type: number;
  length: number;
}

/**
 * Splits a byte stream into frames. Oversized frames are discarded without buffering them
 * (like ttrpc's reader), and reported so the caller can answer RESOURCE_EXHAUSTED.
 */
export class FrameParser {
  private buf: Buffer = Buffer.alloc(0);
  private skip = 0;

  constructor(
    private readonly onFrame: (f: Frame) => void,
    private readonly onOversized: (f: OversizedFrame) => void,
  ) {}

  push(chunk: Buffer): void {
    if (this.skip > 0) {
      const n = Math.min(this.skip, chunk.length);
      this.skip -= n;
      chunk = chunk.subarray(n);
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.buf.length < HEADER_SIZE) return;
      const length = this.buf.readUInt32BE(0);
      const streamId = this.buf.readUInt32BE(4);
      const type = this.buf.readUInt8(8);
      const flags = this.buf.readUInt8(9);
      if (length > MAX_DATA) {
        const available = this.buf.length - HEADER_SIZE;
        const dropped = Math.min(available, length);
        this.skip = length - dropped;
        this.buf = this.buf.subarray(HEADER_SIZE + dropped);
        this.onOversized({ streamId, type, length });
        if (this.skip > 0) return;
        continue;
      }
      if (this.buf.length < HEADER_SIZE + length) return;
      const data = Buffer.from(this.buf.subarray(HEADER_SIZE, HEADER_SIZE + length));
      this.buf = this.buf.subarray(HEADER_SIZE + length);
      this.onFrame({ streamId, type, flags, data });
    }
  }
}
