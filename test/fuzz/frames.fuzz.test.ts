import fc from "fast-check";
import { PassThrough } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { Connection } from "../../src/agent/protocol/connection.js";
import {
  encodeFrame,
  FrameDecoder,
  FrameType,
  HEADER_SIZE,
  MAGIC,
  ProtocolViolation,
  type FrameTypeValue,
} from "../../src/agent/protocol/frame.js";
import { isCocoonError } from "../../src/errors.js";
import { isOneLine, record, report, runs } from "./runs.js";

const types = Object.values(FrameType) as FrameTypeValue[];
const frameArb = fc.record({
  type: fc.constantFrom(...types),
  id: fc.nat(),
  payload: fc.uint8Array({ maxLength: 256 }).map((a) => Buffer.from(a)),
});

/** A valid stream of frames, then mutated: bytes flipped, cut short, garbage spliced in. */
const mutatedStream = fc
  .tuple(
    fc.array(frameArb, { maxLength: 8 }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
    fc.option(fc.nat()),
    fc.uint8Array({ maxLength: 64 }),
  )
  .map(([frames, flips, cut, garbage]) => {
    const buf = Buffer.concat([
      ...frames.map((f) => encodeFrame(f.type, f.id, f.payload)),
      Buffer.from(garbage),
    ]);
    for (const [at, v] of flips) if (buf.length) buf[at % buf.length] = v;
    return cut === null ? buf : buf.subarray(0, cut % (buf.length + 1));
  });

function chunked(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  for (const s of sizes) {
    if (off >= buf.length) break;
    out.push(buf.subarray(off, off + 1 + s));
    off += 1 + s;
  }
  if (off < buf.length) out.push(buf.subarray(off));
  return out;
}

function decodeAll(chunks: Buffer[], max: number): "ok" | ProtocolViolation {
  const d = new FrameDecoder(max);
  try {
    for (const c of chunks) d.push(c);
    return "ok";
  } catch (err) {
    if (err instanceof ProtocolViolation) return err;
    throw err;
  }
}

afterAll(() => report("frames"));

describe("fuzz: the agent frame decoder (host side)", () => {
  it("decodes any valid frame sequence identically however it is chunked", () => {
    const n = runs(15_000);
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 10 }),
        fc.array(fc.nat(40), { maxLength: 30 }),
        (frames, sizes) => {
          const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.id, f.payload)));
          const d = new FrameDecoder();
          const got = chunked(wire, sizes).flatMap((c) => d.push(c));
          expect(got.map((f) => [f.type, f.id >>> 0, Buffer.from(f.payload).toString("hex")])).toEqual(
            frames.map((f) => [f.type, f.id >>> 0, f.payload.toString("hex")]),
          );
          expect(d.pendingBytes).toBe(0);
        },
      ),
      { numRuns: n },
    );
    record("valid", n);
  });

  it("refuses arbitrary and mutated bytes only with a one-line ProtocolViolation", () => {
    const n = runs(25_000);
    fc.assert(
      fc.property(
        fc.oneof(
          mutatedStream,
          fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
        ),
        fc.array(fc.nat(20), { maxLength: 20 }),
        fc.integer({ min: 0, max: 4096 }),
        (wire, sizes, max) => {
          const r = decodeAll(chunked(wire, sizes), max);
          if (r !== "ok") expect(isOneLine(r.message)).toBe(true);
        },
      ),
      { numRuns: n },
    );
    record("mutated", n);
  });

  it("refuses an oversized length from its header alone, without buffering the payload", () => {
    const n = runs(5_000);
    fc.assert(
      fc.property(fc.integer({ min: 1025, max: 0xffffffff }), fc.constantFrom(...types), (length, type) => {
        const header = Buffer.alloc(HEADER_SIZE);
        header.writeUInt16BE(MAGIC, 0);
        header.writeUInt8(type, 2);
        header.writeUInt32BE(length, 8);
        const r = decodeAll([header], 1024);
        expect(r).toBeInstanceOf(ProtocolViolation);
        expect((r as ProtocolViolation).reason).toBe("too-large");
      }),
      { numRuns: n },
    );
    record("oversized", n);
  });

  it("a client connection fed hostile bytes ends with a coded CocoonError, never a throw", async () => {
    const n = runs(3_000);
    await fc.assert(
      fc.asyncProperty(mutatedStream, async (wire) => {
        const socket = new PassThrough();
        socket.on("error", () => undefined);
        const conn = new Connection(socket, { role: "client" });
        const hello = conn.hello("fuzz", 50).catch((e: unknown) => e);
        const req = conn.request("health.check", {}, { timeoutMs: 50 }).catch((e: unknown) => e);
        // The client's own output goes to the same PassThrough; drain it first.
        socket.read();
        socket.emit("data", wire);
        socket.emit("end");
        for (const e of [await hello, await req]) {
          if (e === undefined || (typeof e === "object" && e !== null && !(e instanceof Error))) continue;
          if (!(e instanceof Error)) continue;
          const coded = isCocoonError(e) || e.name === "RemoteError";
          expect(coded, `${e.name}: ${e.message}`).toBe(true);
          expect(isOneLine(e.message)).toBe(true);
        }
        expect(conn.closed).toBe(true);
        socket.destroy();
      }),
      { numRuns: n },
    );
    record("connection", n);
  });
});
