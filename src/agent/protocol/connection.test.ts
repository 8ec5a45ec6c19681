import { createHash, randomBytes } from "node:crypto";
import type net from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { socketPair } from "../../../test/helpers/socketpair.js";
import { Connection, DEFAULT_WINDOW, RemoteError, type RequestHandler } from "./connection.js";
import { encodeFrame, encodeJsonFrame, FrameType, HEADER_SIZE, MAGIC } from "./frame.js";

let pair: Awaited<ReturnType<typeof socketPair>>;
beforeEach(async () => {
  pair = await socketPair();
});
afterEach(() => pair.close());

async function connected(handler: RequestHandler, window?: number) {
  const server = new Connection(pair.b, { role: "server", handler, agentVersion: "test-1", window });
  const client = new Connection(pair.a, { role: "client", window });
  const ack = await client.hello("test-client");
  return { server, client, ack };
}

function collect(readable: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    readable.on("data", (c: Buffer) => chunks.push(c));
    readable.on("end", () => resolve(Buffer.concat(chunks)));
    readable.on("error", reject);
  });
}

function rawClient(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("close", () => resolve(Buffer.concat(chunks)));
  });
}

describe("agent connection", () => {
  it("shakes hands and answers requests", async () => {
    const { client, ack } = await connected(async (method, params) => ({ method, params }));
    expect(ack).toEqual({ protocol: 1, agentVersion: "test-1" });
    await expect(client.request("echo", { x: 1 })).resolves.toEqual({ method: "echo", params: { x: 1 } });
  });

  it("carries error codes from the handler", async () => {
    const { client } = await connected(async () => {
      throw Object.assign(new Error("no such process"), { code: "NOT_FOUND" });
    });
    await expect(client.request("proc.wait")).rejects.toEqual(
      new RemoteError("NOT_FOUND", "no such process"),
    );
  });

  it("times out, and the cancel reaches the handler", async () => {
    let aborted: Promise<void> | undefined;
    const { client } = await connected(
      (_m, _p, ctx) =>
        new Promise((_resolve, reject) => {
          aborted = new Promise((r) => ctx.signal.addEventListener("abort", () => r()));
          ctx.signal.addEventListener("abort", () => reject(new Error("aborted")));
        }),
    );
    await expect(client.request("slow", {}, { timeoutMs: 50 })).rejects.toMatchObject({
      code: "ERR_AGENT_TIMEOUT",
    });
    await aborted;
    // the connection is still usable
    const ac = new AbortController();
    const p = client.request("slow", {}, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: "ERR_CANCELLED" });
  });

  it("moves 10 MB of random binary data through a stream and back byte-identical", async () => {
    const data = randomBytes(10 * 1024 * 1024);
    const { client } = await connected(async (method, params, ctx) => {
      // echo: what arrives on stream `in` goes back out on stream `out`
      const { input, output } = params as { input: number; output: number };
      const inS = ctx.connection.stream(input);
      const outS = ctx.connection.stream(output);
      for await (const chunk of inS.readable) await outS.write(chunk as Buffer);
      inS.end();
      outS.end();
      return { ok: true };
    });
    const input = client.openStream();
    const output = client.openStream();
    const received = collect(output.readable);
    const done = client.request("echo", { input: input.id, output: output.id });
    await input.write(data);
    input.end();
    const back = await received;
    output.end();
    await done;
    expect(back.length).toBe(data.length);
    expect(createHash("sha256").update(back).digest("hex")).toBe(
      createHash("sha256").update(data).digest("hex"),
    );
    expect(client.openStreams).toBe(0);
  });

  it("applies backpressure: a reader that does not read holds the writer at one window", async () => {
    const window = 64 * 1024;
    let serverStream: ReturnType<Connection["stream"]> | undefined;
    const { client } = await connected(async (_m, params, ctx) => {
      serverStream = ctx.connection.stream((params as { id: number }).id);
      return {};
    }, window);
    const s = client.openStream();
    await client.request("bind", { id: s.id });
    let finished = false;
    const writing = s.write(randomBytes(1024 * 1024)).then(() => (finished = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(finished).toBe(false);
    expect(serverStream!.readable.readableLength).toBeLessThanOrEqual(window);
    // now read everything: the writer finishes
    const all = collect(serverStream!.readable);
    await writing;
    s.end();
    expect((await all).length).toBe(1024 * 1024);
  });

  it("answers garbage with an error frame and closes, without crashing the server", async () => {
    const errors: Error[] = [];
    const server = new Connection(pair.b, { role: "server", handler: async () => ({}) });
    server.on("protocol-error", (e: Error) => errors.push(e));
    const got = rawClient(pair.a);
    pair.a.write("this is not a frame at all");
    const bytes = await got;
    expect(bytes.readUInt16BE(0)).toBe(MAGIC);
    expect(bytes.readUInt8(2)).toBe(FrameType.ERROR);
    expect(JSON.parse(bytes.subarray(HEADER_SIZE).toString())).toMatchObject({ code: "bad-magic" });
    expect(errors).toHaveLength(1);
    expect(server.closed).toBe(true);
  });

  it("refuses an oversized frame and a request before the handshake", async () => {
    const server = new Connection(pair.b, { role: "server", handler: async () => ({}), maxPayload: 1024 });
    const got = rawClient(pair.a);
    pair.a.write(encodeJsonFrame(FrameType.HELLO, 0, { protocol: 1, client: "x" }));
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt16BE(MAGIC, 0);
    header.writeUInt8(FrameType.REQUEST, 2);
    header.writeUInt32BE(10 * 1024 * 1024, 8);
    pair.a.write(header);
    const bytes = await got;
    expect(bytes.toString()).toContain("exceeds the limit of 1024");
    expect(server.closed).toBe(true);
  });

  it("requires HELLO first and the same protocol version", async () => {
    new Connection(pair.b, { role: "server", handler: async () => ({}) });
    const got = rawClient(pair.a);
    pair.a.write(encodeJsonFrame(FrameType.REQUEST, 1, { method: "x" }));
    expect((await got).toString()).toContain("the first frame must be HELLO");

    const p2 = await socketPair();
    try {
      new Connection(p2.b, { role: "server", handler: async () => ({}) });
      const client = new Connection(p2.a, { role: "client" });
      const raw = encodeJsonFrame(FrameType.HELLO, 0, { protocol: 99, client: "future" });
      const closed = new Promise<Error>((r) => client.once("close", r));
      p2.a.write(raw);
      expect((await closed).message).toMatch(/unsupported protocol version 99/);
    } finally {
      await p2.close();
    }
  });

  it("fails pending requests when the channel drops, and reports a truncated frame", async () => {
    const { client } = await connected(() => new Promise(() => undefined));
    const p = client.request("hang");
    pair.b.write(encodeFrame(FrameType.DATA, 1, Buffer.alloc(100)).subarray(0, 20));
    pair.b.end();
    await expect(p).rejects.toMatchObject({
      code: expect.stringMatching(/ERR_AGENT_(PROTOCOL|DISCONNECTED)/),
    });
    expect(client.closed).toBe(true);
    await expect(client.request("again")).rejects.toMatchObject({
      code: expect.stringMatching(/ERR_AGENT_/),
    });
  });

  it("restarts the session when a new HELLO arrives on a serial-like stream", async () => {
    const sessions: Connection[] = [];
    const serve = (): void => {
      const conn = new Connection(pair.b, {
        role: "server",
        handler: async (m) => ({ m, session: sessions.length }),
        restartOnHello: true,
      });
      sessions.push(conn);
      conn.once("restart", (pending: Buffer) => {
        serve();
        pair.b.emit("data", pending);
      });
    };
    serve();
    // first host: handshake, one request, then it vanishes without the stream closing
    const first = new Connection(pair.a, { role: "client" });
    await first.hello("one");
    expect(await first.request("x")).toEqual({ m: "x", session: 1 });
    pair.a.removeAllListeners("data");
    // second host on the same stream: its HELLO starts a new session
    const second = new Connection(pair.a, { role: "client" });
    await second.hello("two");
    expect(await second.request("y")).toEqual({ m: "y", session: 2 });
    expect(sessions[0]!.closed).toBe(true);
    expect(sessions[0]!.restarted).toBe(true);
  });

  it("refuses a peer that overruns its flow-control window", async () => {
    const server = new Connection(pair.b, { role: "server", handler: async () => ({}), window: 1024 });
    const errors: Error[] = [];
    server.on("protocol-error", (e: Error) => errors.push(e));
    const got = rawClient(pair.a);
    pair.a.write(encodeJsonFrame(FrameType.HELLO, 0, { protocol: 1, client: "x" }));
    pair.a.write(encodeFrame(FrameType.DATA, 1, Buffer.alloc(2048)));
    expect((await got).toString()).toContain("overran its flow-control window");
    expect(errors[0]?.message).toMatch(/overran/);
    expect(DEFAULT_WINDOW).toBeGreaterThan(1024);
  });
});
