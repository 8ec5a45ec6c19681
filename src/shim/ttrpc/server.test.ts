import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  ConnectResponseSchema,
  StateRequestSchema,
  Task,
} from "../../gen/shim/github.com/containerd/containerd/runtime/v2/task/shim_pb.js";
import { SandboxError } from "../../errors.js";
import { toStatus } from "../errors.js";
import { rawExchange as rawAnswers } from "../../../test/helpers/ttrpc-raw.js";
import { TtrpcClient } from "./client.js";
import { HEADER_SIZE, MAX_DATA, MessageType, encodeFrame } from "./frame.js";
import { TtrpcServer } from "./server.js";
import { Code, TtrpcError } from "./status.js";

const V2 = "containerd.task.v2.Task";
let dir: string;
let socket: string;
let server: TtrpcServer;
let client: TtrpcClient;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ttrpc-"));
  socket = path.join(dir, "s");
  server = new TtrpcServer(toStatus);
  server.registerService(V2, Task, {
    connect: async () => ({ shimPid: 42, taskPid: 7, version: "x" }),
    state: async (req: { id: string }) => {
      throw new SandboxError("ERR_NOT_FOUND", `no ${req.id}`);
    },
  });
  await server.listen(socket);
  client = await TtrpcClient.open(socket);
});

afterEach(async () => {
  client.close();
  await server.close(socket);
  await rm(dir, { recursive: true, force: true });
});

const rawExchange = (bytes: Buffer, expected: number) => rawAnswers(socket, bytes, expected);

describe("ttrpc server", () => {
  it("answers a unary call with the handler's response", async () => {
    const res = await client.call(
      V2,
      "Connect",
      Task.method.connect.input,
      { id: "t" },
      ConnectResponseSchema,
    );
    expect(res.shimPid).toBe(42);
    expect(res.taskPid).toBe(7);
  });

  it("maps a cocoon error to the gRPC code containerd's errdefs expects", async () => {
    const err = await client
      .call(V2, "State", StateRequestSchema, { id: "gone" }, Task.method.state.output)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TtrpcError);
    expect((err as TtrpcError).code).toBe(Code.notFound);
    expect((err as TtrpcError).message).toContain("no gone");
  });

  it("answers Unimplemented for an unregistered method, an unknown method and an unknown service", async () => {
    for (const [service, method] of [
      [V2, "Checkpoint"],
      [V2, "NoSuchMethod"],
      ["containerd.task.v9.Task", "State"],
    ] as const) {
      const err = (await client
        .callRaw(service, method, new Uint8Array())
        .catch((e: unknown) => e)) as TtrpcError;
      expect(err.code, `${service}/${method}`).toBe(Code.unimplemented);
    }
  });

  it("answers garbage with InvalidArgument on that stream and keeps serving the connection", async () => {
    const garbage = encodeFrame({
      streamId: 1,
      type: MessageType.request,
      flags: 0,
      data: Buffer.from([0xff, 0xff, 0xff]),
    });
    const badPayload = encodeFrame({
      streamId: 3,
      type: MessageType.request,
      flags: 0,
      data: Buffer.concat([
        Buffer.from([0x0a, 0x17]),
        Buffer.from(V2),
        Buffer.from([0x12, 0x05]),
        Buffer.from("State"),
        Buffer.from([0x1a, 0x02, 0xff, 0xff]),
      ]),
    });
    const good = encodeFrame({
      streamId: 5,
      type: MessageType.request,
      flags: 0,
      data: Buffer.concat([
        Buffer.from([0x0a, 0x17]),
        Buffer.from(V2),
        Buffer.from([0x12, 0x07]),
        Buffer.from("Connect"),
      ]),
    });
    const answers = await rawExchange(Buffer.concat([garbage, badPayload, good]), 3);
    answers.sort((a, b) => a.streamId - b.streamId);
    expect(answers.map((a) => [a.streamId, a.code])).toEqual([
      [1, Code.invalidArgument],
      [3, Code.invalidArgument],
      [5, Code.ok],
    ]);
    // The other connection still works too.
    await client.call(V2, "Connect", Task.method.connect.input, { id: "t" }, ConnectResponseSchema);
  });

  it("answers an oversized frame with ResourceExhausted and serves the next request", async () => {
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt32BE(MAX_DATA + 10, 0);
    header.writeUInt32BE(1, 4);
    header.writeUInt8(MessageType.request, 8);
    const good = encodeFrame({
      streamId: 3,
      type: MessageType.request,
      flags: 0,
      data: Buffer.concat([
        Buffer.from([0x0a, 0x17]),
        Buffer.from(V2),
        Buffer.from([0x12, 0x07]),
        Buffer.from("Connect"),
      ]),
    });
    const answers = await rawExchange(Buffer.concat([header, Buffer.alloc(MAX_DATA + 10), good]), 2);
    expect(answers[0]).toMatchObject({ streamId: 1, code: Code.resourceExhausted });
    expect(answers[0]!.message).toMatch(/exceed maximum message size/);
    expect(answers[1]).toMatchObject({ streamId: 3, code: Code.ok });
  });

  it("uses odd, increasing stream ids and carries the timeout", async () => {
    const seen: bigint[] = [];
    server.register("test.Echo", "Echo", async (payload, req) => {
      seen.push(req.timeoutNano);
      return payload;
    });
    const a = await client.callRaw("test.Echo", "Echo", Buffer.from("one"), 2000);
    const b = await client.callRaw("test.Echo", "Echo", Buffer.from("two"));
    expect(Buffer.from(a).toString() + Buffer.from(b).toString()).toBe("onetwo");
    expect(seen).toEqual([2_000_000_000n, 0n]);
  });

  it("round-trips the generated Task messages through binary protobuf", () => {
    const msg = create(Task.method.create.input, {
      id: "t",
      bundle: "/b",
      rootfs: [{ type: "overlay", source: "overlay", options: ["lowerdir=/a", "upperdir=/b"] }],
      terminal: true,
      stdout: "/fifo/out",
    });
    const back = fromBinary(Task.method.create.input, toBinary(Task.method.create.input, msg));
    expect(back.rootfs[0]!.options).toEqual(["lowerdir=/a", "upperdir=/b"]);
    expect(back.terminal).toBe(true);
    expect(back.stdout).toBe("/fifo/out");
  });
});
