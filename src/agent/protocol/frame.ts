/**
 * The agent protocol's framing. One byte stream (a virtio-serial port, a vsock connection or a
 * unix socket) carries frames:
 *
 *   magic u16 (0xC00C) | type u8 | flags u8 | id u32 | length u32 | payload[length]
 *
 * all big-endian. `id` is a request id for REQUEST/RESPONSE/CANCEL and a stream id for
 * DATA/EOF/WINDOW. Control payloads are UTF-8 JSON; DATA payloads are raw bytes, so stdio
 * is binary-safe. The decoder checks the magic, the type and the length before buffering a
 * payload, so garbage and oversized frames are refused without allocating for them.
 */

export const MAGIC = 0xc00c;
export const HEADER_SIZE = 12;
/** Default limit on one frame's payload. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

export const FrameType = {
  HELLO: 0x01,
  HELLO_ACK: 0x02,
  REQUEST: 0x10,
  RESPONSE: 0x11,
  CANCEL: 0x12,
  EVENT: 0x13,
  DATA: 0x20,
  EOF: 0x21,
  WINDOW: 0x22,
  ERROR: 0x7f,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

export interface Frame {
  type: FrameTypeValue;
  id: number;
  payload: Buffer;
}

/** A violation of the framing or of the protocol's rules; the connection cannot continue. */
export class ProtocolViolation extends Error {
  constructor(
    message: string,
    readonly reason: "bad-magic" | "bad-type" | "too-large" | "bad-payload" | "flow-control" | "sequence",
  ) {
    super(message);
    this.name = "ProtocolViolation";
  }
}

/** The 12-byte header of a frame whose payload is `length` bytes. */
export function frameHeader(type: FrameTypeValue, id: number, length: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  header.writeUInt16BE(MAGIC, 0);
  header.writeUInt8(type, 2);
  header.writeUInt8(0, 3);
  header.writeUInt32BE(id >>> 0, 4);
  header.writeUInt32BE(length, 8);
  return header;
}

export function encodeFrame(type: FrameTypeValue, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([frameHeader(type, id, payload.length), payload]);
}

export function encodeJsonFrame(type: FrameTypeValue, id: number, value: unknown): Buffer {
  return encodeFrame(type, id, Buffer.from(JSON.stringify(value), "utf8"));
}

/** Incremental decoder: feed it chunks, get whole frames; throws ProtocolViolation on bad input. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxPayload = DEFAULT_MAX_PAYLOAD) {}

  /** Bytes received that do not yet form a whole frame (a truncated frame at EOF). */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** Hands over (and forgets) the bytes of an incomplete frame. */
  takePending(): Buffer {
    const out = Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return out;
  }

  push(chunk: Buffer): Frame[] {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < HEADER_SIZE) break;
      const header = this.peek(HEADER_SIZE);
      const magic = header.readUInt16BE(0);
      if (magic !== MAGIC) {
        throw new ProtocolViolation(`bad frame magic 0x${magic.toString(16).padStart(4, "0")}`, "bad-magic");
      }
      const type = header.readUInt8(2);
      if (!KNOWN_TYPES.has(type))
        throw new ProtocolViolation(`unknown frame type 0x${type.toString(16)}`, "bad-type");
      const length = header.readUInt32BE(8);
      if (length > this.maxPayload) {
        throw new ProtocolViolation(
          `frame payload of ${length} bytes exceeds the limit of ${this.maxPayload}`,
          "too-large",
        );
      }
      if (this.buffered < HEADER_SIZE + length) break;
      const whole = this.take(HEADER_SIZE + length);
      frames.push({
        type: type as FrameTypeValue,
        id: whole.readUInt32BE(4),
        payload: whole.subarray(HEADER_SIZE),
      });
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all.subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered -= n;
    return out;
  }
}

/** Parses a JSON control payload, refusing anything that is not a JSON object. */
export function parseJsonPayload(frame: Frame): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(frame.payload.toString("utf8"));
  } catch {
    throw new ProtocolViolation(`frame 0x${frame.type.toString(16)} carries invalid JSON`, "bad-payload");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolViolation(
      `frame 0x${frame.type.toString(16)} payload is not a JSON object`,
      "bad-payload",
    );
  }
  return value as Record<string, unknown>;
}
