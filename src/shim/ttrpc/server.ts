import { createServer, type Server, type Socket } from "node:net";
import { rm } from "node:fs/promises";
import { create, fromBinary, toBinary, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { RequestSchema, ResponseSchema, type Request } from "../../gen/shim/ttrpc_pb.js";
import { FrameParser, MessageType, encodeFrame, MAX_DATA } from "./frame.js";
import { Code, TtrpcError } from "./status.js";

/** One unary method: request bytes in, response bytes out (or a thrown error). */
export type RawHandler = (payload: Uint8Array, request: Request) => Promise<Uint8Array>;

/** How a thrown error becomes a status; the default answers Unknown with the message. */
export type ErrorMapper = (err: unknown) => { code: number; message: string };

const defaultMapper: ErrorMapper = (err) =>
  err instanceof TtrpcError
    ? { code: err.code, message: err.message }
    : { code: Code.unknown, message: err instanceof Error ? err.message : String(err) };

/**
 * A ttrpc server on a unix socket: unary requests only (every containerd Task RPC is unary).
 * Bad input — undecodable envelopes, oversized frames, unknown services or methods — is
 * answered with a status on that stream; the connection and the server keep going.
 */
export class TtrpcServer {
  private readonly methods = new Map<string, RawHandler>();
  private readonly services = new Set<string>();
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;

  constructor(private readonly mapError: ErrorMapper = defaultMapper) {}

  /** Registers a generated service's methods under `name` (e.g. both task v2 and v3). */
  registerService(
    name: string,
    desc: DescService,
    impl: Record<string, (req: never) => Promise<unknown>>,
  ): void {
    this.services.add(name);
    for (const m of desc.methods) {
      const fn = impl[m.localName];
      if (!fn) continue; // answered Unimplemented
      this.methods.set(`${name}/${m.name}`, async (payload) => {
        let req;
        try {
          req = fromBinary(m.input, payload);
        } catch (err) {
          throw new TtrpcError(
            Code.invalidArgument,
            `malformed ${m.name} request: ${(err as Error).message}`,
          );
        }
        const res = (await fn(req as never)) as MessageInitShape<typeof m.output> | undefined;
        return toBinary(m.output, create(m.output, res ?? {}));
      });
    }
  }

  register(service: string, method: string, handler: RawHandler): void {
    this.services.add(service);
    this.methods.set(`${service}/${method}`, handler);
  }

  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = createServer((socket) => this.serve(socket));
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        server.on("error", () => undefined);
        this.server = server;
        resolve();
      });
    });
  }

  async close(path?: string): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    if (path) await rm(path, { force: true });
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    const answer = (
      streamId: number,
      payload: Uint8Array | undefined,
      status?: { code: number; message: string },
    ) => {
      const res = create(ResponseSchema, {
        ...(payload ? { payload } : {}),
        ...(status ? { status: { code: status.code, message: status.message } } : {}),
      });
      let data = toBinary(ResponseSchema, res);
      if (data.length > MAX_DATA) {
        const msg = `response length ${data.length} exceeds maximum message size ${MAX_DATA}`;
        data = toBinary(
          ResponseSchema,
          create(ResponseSchema, { status: { code: Code.resourceExhausted, message: msg } }),
        );
      }
      if (!socket.destroyed)
        socket.write(encodeFrame({ streamId, type: MessageType.response, flags: 0, data }));
    };
    const parser = new FrameParser(
      (frame) => {
        if (frame.type !== MessageType.request) return; // no client streams in the task API
        void this.dispatch(frame.data).then(
          (payload) => answer(frame.streamId, payload),
          (err: unknown) => answer(frame.streamId, undefined, this.mapError(err)),
        );
      },
      (over) =>
        answer(over.streamId, undefined, {
          code: Code.resourceExhausted,
          message: `message length ${over.length} exceed maximum message size of ${MAX_DATA}`,
        }),
    );
    socket.on("data", (chunk: Buffer) => parser.push(chunk));
  }

  private async dispatch(data: Buffer): Promise<Uint8Array> {
    let req: Request;
    try {
      req = fromBinary(RequestSchema, data);
    } catch (err) {
      throw new TtrpcError(Code.invalidArgument, `malformed request: ${(err as Error).message}`);
    }
    if (!this.services.has(req.service)) throw new TtrpcError(Code.unimplemented, `service ${req.service}`);
    const handler = this.methods.get(`${req.service}/${req.method}`);
    if (!handler) throw new TtrpcError(Code.unimplemented, `method ${req.method}`);
    return handler(req.payload, req);
  }
}
