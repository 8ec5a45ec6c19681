import { connect, type Socket } from "node:net";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type MessageShape,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { RequestSchema, ResponseSchema } from "../../gen/shim/ttrpc_pb.js";
import { FrameParser, MessageType, encodeFrame } from "./frame.js";
import { Code, TtrpcError } from "./status.js";

interface Pending {
  resolve: (payload: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** A ttrpc client on a unix socket (odd, increasing stream ids; unary calls). */
export class TtrpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed: Error | undefined;

  private constructor(private readonly socket: Socket) {
    const parser = new FrameParser(
      (frame) => {
        const p = this.pending.get(frame.streamId);
        if (!p || frame.type !== MessageType.response) return;
        this.pending.delete(frame.streamId);
        clearTimeout(p.timer);
        try {
          const res = fromBinary(ResponseSchema, frame.data);
          if (res.status && res.status.code !== Code.ok)
            p.reject(new TtrpcError(res.status.code, res.status.message));
          else p.resolve(res.payload);
        } catch (err) {
          p.reject(err as Error);
        }
      },
      () => this.fail(new TtrpcError(Code.resourceExhausted, "oversized response")),
    );
    socket.on("data", (c: Buffer) => parser.push(c));
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(new TtrpcError(Code.unavailable, "ttrpc: connection closed")));
  }

  static open(path: string, timeoutMs = 5000): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new TtrpcError(Code.deadlineExceeded, `ttrpc: connecting to ${path} timed out`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.off("error", reject);
        resolve(new TtrpcClient(socket));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Sends raw bytes (protocol tests use this for garbage frames). */
  writeRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  callRaw(service: string, method: string, payload: Uint8Array, timeoutMs = 0): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(this.closed);
    const streamId = this.nextId;
    this.nextId += 2;
    const data = toBinary(
      RequestSchema,
      create(RequestSchema, { service, method, payload, timeoutNano: BigInt(timeoutMs) * 1_000_000n }),
    );
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.pending.delete(streamId);
              reject(new TtrpcError(Code.deadlineExceeded, `ttrpc: ${method} timed out`));
            }, timeoutMs)
          : undefined;
      this.pending.set(streamId, { resolve, reject, timer });
      this.socket.write(encodeFrame({ streamId, type: MessageType.request, flags: 0, data }));
    });
  }

  async call<I extends DescMessage, O extends DescMessage>(
    service: string,
    method: string,
    input: I,
    request: MessageInitShape<I>,
    output: O,
    timeoutMs = 0,
  ): Promise<MessageShape<O>> {
    const bytes = await this.callRaw(service, method, toBinary(input, create(input, request)), timeoutMs);
    return fromBinary(output, bytes);
  }

  close(): void {
    this.socket.destroy();
  }

  private fail(err: Error): void {
    this.closed ??= err;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }
}
