import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  ShutdownRequestSchema,
  StateRequestSchema,
  Task,
} from "../../src/gen/shim/github.com/containerd/containerd/runtime/v2/task/shim_pb.js";
import { isProcessAlive } from "../../src/host/proc.js";
import { TtrpcClient } from "../../src/shim/ttrpc/client.js";
import { HEADER_SIZE, MAX_DATA, MessageType, encodeFrame } from "../../src/shim/ttrpc/frame.js";
import { Code, TtrpcError } from "../../src/shim/ttrpc/status.js";
import { rawExchange } from "../helpers/ttrpc-raw.js";

// The real shim binary, started the way containerd starts it (`start` in the bundle), fed bad
// ttrpc input. No VM boots: every request here fails or needs no task.
const run = promisify(execFile);
const SHIM = path.resolve(import.meta.dirname, "../../bin/containerd-shim-cocoon-v1.js");
const V2 = "containerd.task.v2.Task";
let dir: string;
let socket: string;
let shimPid: number;

const alive = (pid: number) => isProcessAlive(pid);

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "shim-proto-"));
  const bundle = path.join(dir, "bundle");
  await mkdir(bundle);
  await writeFile(path.join(bundle, "config.json"), JSON.stringify({ ociVersion: "1.0.2", annotations: {} }));
  const { stdout } = await run(
    process.execPath,
    [SHIM, "-namespace", "proto", "-address", path.join(dir, "ctd.sock"), "-id", "p1", "start"],
    { cwd: bundle, env: { ...process.env, COCOON_SHIM_SOCKET_DIR: path.join(dir, "s") } },
  );
  expect(stdout).toMatch(/^unix:\/\//);
  socket = stdout.slice("unix://".length);
  shimPid = Number(await readFile(path.join(bundle, "shim.pid"), "utf8"));
});

afterAll(async () => {
  if (shimPid && (await alive(shimPid))) process.kill(shimPid, "SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

const connectFrame = (streamId: number) =>
  encodeFrame({
    streamId,
    type: MessageType.request,
    flags: 0,
    data: Buffer.concat([
      Buffer.from([0x0a, V2.length]),
      Buffer.from(V2),
      Buffer.from([0x12, 0x07]),
      Buffer.from("Connect"),
      Buffer.from([0x1a, 0x04, 0x0a, 0x02]),
      Buffer.from("p1"),
    ]),
  });

it("the shim answers garbage, oversized frames and unknown methods with errors, keeps serving, and exits on Shutdown", async () => {
  const garbage = encodeFrame({ streamId: 1, type: MessageType.request, flags: 0, data: randomish(64) });
  const answers = await rawExchange(socket, Buffer.concat([garbage, connectFrame(3)]), 2);
  answers.sort((a, b) => a.streamId - b.streamId);
  expect(answers.map((a) => [a.streamId, a.code])).toEqual([
    [1, Code.invalidArgument],
    [3, Code.notFound], // no task p1 yet: the request itself was understood
  ]);

  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32BE(MAX_DATA + 10, 0);
  header.writeUInt32BE(1, 4);
  header.writeUInt8(MessageType.request, 8);
  const big = await rawExchange(
    socket,
    Buffer.concat([header, Buffer.alloc(MAX_DATA + 10), connectFrame(3)]),
    2,
  );
  expect(big.map((a) => [a.streamId, a.code])).toEqual([
    [1, Code.resourceExhausted],
    [3, Code.notFound],
  ]);

  const client = await TtrpcClient.open(socket);
  try {
    for (const [service, method] of [
      [V2, "Checkpoint"],
      [V2, "NoSuchMethod"],
      ["containerd.task.v3.Task", "Nope"],
      ["no.such.Service", "State"],
    ] as const) {
      const err = (await client
        .callRaw(service, method, new Uint8Array())
        .catch((e: unknown) => e)) as TtrpcError;
      expect(err.code, `${service}/${method}`).toBe(Code.unimplemented);
    }
    const state = (await client
      .call(V2, "State", StateRequestSchema, { id: "nope" }, Task.method.state.output)
      .catch((e: unknown) => e)) as TtrpcError;
    expect(state.code).toBe(Code.notFound);
    expect(await alive(shimPid)).toBe(true);
    await client.call(V2, "Shutdown", ShutdownRequestSchema, { id: "p1" }, Task.method.shutdown.output);
  } finally {
    client.close();
  }
  for (let i = 0; i < 100 && (await alive(shimPid)); i++) await new Promise((r) => setTimeout(r, 50));
  expect(await alive(shimPid)).toBe(false);
  expect(existsSync(socket)).toBe(false);
});

/** Bytes that are no valid ttrpc Request (a fixed pattern, so a failure is reproducible). */
function randomish(n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => ((i * 97 + 13) & 0xff) | 0x80));
}
