import { describe, expect, it } from "vitest";
import {
  encodeFrame,
  encodeJsonFrame,
  FrameDecoder,
  FrameType,
  HEADER_SIZE,
  MAGIC,
  parseJsonPayload,
  ProtocolViolation,
} from "./frame.js";

describe("frame codec", () => {
  it("round-trips frames split at every byte boundary", () => {
    const frames = [
      encodeJsonFrame(FrameType.REQUEST, 7, { method: "health.check", params: {} }),
      encodeFrame(FrameType.DATA, 3, Buffer.from([0, 1, 2, 255, 0xc0, 0x0c])),
      encodeFrame(FrameType.EOF, 3),
    ];
    const wire = Buffer.concat(frames);
    const dec = new FrameDecoder();
    const out = [];
    for (let i = 0; i < wire.length; i++) out.push(...dec.push(wire.subarray(i, i + 1)));
    expect(out.map((f) => [f.type, f.id, f.payload.toString("hex")])).toEqual([
      [
        FrameType.REQUEST,
        7,
        Buffer.from(JSON.stringify({ method: "health.check", params: {} })).toString("hex"),
      ],
      [FrameType.DATA, 3, "000102ff c00c".replace(" ", "")],
      [FrameType.EOF, 3, ""],
    ]);
    expect(dec.pendingBytes).toBe(0);
  });

  it("decodes many frames from one chunk", () => {
    const wire = Buffer.concat(
      Array.from({ length: 100 }, (_, i) => encodeFrame(FrameType.DATA, i, Buffer.alloc(i, i))),
    );
    const frames = new FrameDecoder().push(wire);
    expect(frames).toHaveLength(100);
    expect(frames[99]!.payload.length).toBe(99);
  });

  it("refuses garbage, unknown types and oversized frames before buffering their payload", () => {
    expect(() => new FrameDecoder().push(Buffer.from("GET / HTTP/1.1\r\n\r\n"))).toThrow(
      expect.objectContaining({ reason: "bad-magic" }),
    );
    const badType = encodeFrame(FrameType.DATA, 1);
    badType.writeUInt8(0x55, 2);
    expect(() => new FrameDecoder().push(badType)).toThrow(expect.objectContaining({ reason: "bad-type" }));
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt16BE(MAGIC, 0);
    header.writeUInt8(FrameType.DATA, 2);
    header.writeUInt32BE(0xffffffff, 8);
    // only the header arrived: refused at once, no 4 GiB buffer
    expect(() => new FrameDecoder(1024).push(header)).toThrow(ProtocolViolation);
    expect(() => new FrameDecoder(1024).push(header)).toThrow(/exceeds the limit of 1024/);
  });

  it("reports a truncated frame as pending bytes", () => {
    const dec = new FrameDecoder();
    expect(dec.push(encodeFrame(FrameType.DATA, 1, Buffer.alloc(10)).subarray(0, 15))).toEqual([]);
    expect(dec.pendingBytes).toBe(15);
  });

  it("accepts only JSON objects as control payloads", () => {
    const f = (s: string) => ({ type: FrameType.REQUEST, id: 1, payload: Buffer.from(s) });
    expect(parseJsonPayload(f('{"a":1}'))).toEqual({ a: 1 });
    expect(() => parseJsonPayload(f("{nope"))).toThrow(/invalid JSON/);
    expect(() => parseJsonPayload(f("[1]"))).toThrow(/not a JSON object/);
    expect(() => parseJsonPayload(f("null"))).toThrow(/not a JSON object/);
  });
});
