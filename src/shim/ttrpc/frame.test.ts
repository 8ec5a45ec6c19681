import { describe, expect, it } from "vitest";
import {
  FrameParser,
  HEADER_SIZE,
  MAX_DATA,
  MessageType,
  encodeFrame,
  type Frame,
  type OversizedFrame,
} from "./frame.js";

function parse(chunks: Buffer[]): { frames: Frame[]; oversized: OversizedFrame[] } {
  const frames: Frame[] = [];
  const oversized: OversizedFrame[] = [];
  const p = new FrameParser(
    (f) => frames.push(f),
    (o) => oversized.push(o),
  );
  for (const c of chunks) p.push(c);
  return { frames, oversized };
}

describe("ttrpc framing", () => {
  it("writes the 10-byte big-endian header containerd/ttrpc expects", () => {
    const wire = encodeFrame({ streamId: 3, type: MessageType.request, flags: 0, data: Buffer.from("abc") });
    expect(wire.subarray(0, HEADER_SIZE).toString("hex")).toBe("00000003" + "00000003" + "01" + "00");
    expect(wire.subarray(HEADER_SIZE).toString()).toBe("abc");
  });

  it("round-trips frames split at every byte boundary", () => {
    const wire = Buffer.concat([
      encodeFrame({ streamId: 1, type: MessageType.request, flags: 0, data: Buffer.from([0, 1, 255]) }),
      encodeFrame({ streamId: 3, type: MessageType.response, flags: 2, data: Buffer.alloc(0) }),
      encodeFrame({ streamId: 5, type: MessageType.data, flags: 1, data: Buffer.alloc(1000, 7) }),
    ]);
    const chunks = Array.from({ length: wire.length }, (_, i) => wire.subarray(i, i + 1));
    const { frames, oversized } = parse(chunks);
    expect(oversized).toEqual([]);
    expect(frames.map((f) => [f.streamId, f.type, f.flags, f.data.length])).toEqual([
      [1, 1, 0, 3],
      [3, 2, 2, 0],
      [5, 3, 1, 1000],
    ]);
    expect(frames[0]!.data.toString("hex")).toBe("0001ff");
  });

  it("skips an oversized frame without buffering it and keeps parsing what follows", () => {
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt32BE(MAX_DATA + 1, 0);
    header.writeUInt32BE(9, 4);
    header.writeUInt8(MessageType.request, 8);
    const body = Buffer.alloc(MAX_DATA + 1, 1);
    const next = encodeFrame({ streamId: 11, type: MessageType.request, flags: 0, data: Buffer.from("ok") });
    // The body arrives in 64 KiB pieces, like a socket would deliver it.
    const pieces = [header];
    for (let i = 0; i < body.length; i += 65536) pieces.push(body.subarray(i, i + 65536));
    const { frames, oversized } = parse([...pieces, next]);
    expect(oversized).toEqual([{ streamId: 9, type: MessageType.request, length: MAX_DATA + 1 }]);
    expect(frames.map((f) => [f.streamId, f.data.toString()])).toEqual([[11, "ok"]]);
  });

  it("accepts a frame of exactly the maximum size", () => {
    const { frames, oversized } = parse([
      encodeFrame({ streamId: 1, type: MessageType.request, flags: 0, data: Buffer.alloc(MAX_DATA) }),
    ]);
    expect(oversized).toEqual([]);
    expect(frames[0]!.data.length).toBe(MAX_DATA);
  });
});
