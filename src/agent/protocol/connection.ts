import { EventEmitter } from "node:events";
import { Readable, type Duplex } from "node:stream";
import { AgentError } from "../../errors.js";
import {
  DEFAULT_MAX_PAYLOAD,
  encodeFrame,
  frameHeader,
  encodeJsonFrame,
  FrameDecoder,
  FrameType,
  parseJsonPayload,
  ProtocolViolation,
  type Frame,
} from "./frame.js";

/**
 * A multiplexed session on one byte stream: requests with ids and answers matched to them,
 * cancellation, events, and any number of binary streams with credit-based flow control (a
 * sender never has more than the receiver's window in flight, so a slow reader slows the
 * writer instead of growing buffers). Both the host client and the guest agent use it.
 */

export const PROTOCOL_VERSION = 1;
/** Bytes a stream may have in flight before the receiver grants more. */
export const DEFAULT_WINDOW = 256 * 1024;
/** Largest DATA frame; smaller than the payload limit so control frames are not starved. */
const MAX_DATA_CHUNK = 64 * 1024;
const MAX_STREAMS = 4096;

export interface HelloRequest {
  protocol: number;
  client: string;
}
export interface HelloAck {
  protocol: number;
  agentVersion: string;
}

/** An error the peer answered with: a stable code and a message. */
export class RemoteError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "RemoteError";
  }
}

export interface RequestContext {
  signal: AbortSignal;
  connection: Connection;
}
export type RequestHandler = (method: string, params: unknown, ctx: RequestContext) => Promise<unknown>;

export interface ConnectionOptions {
  role: "client" | "server";
  maxPayload?: number;
  window?: number;
  /** Server side: answers requests. */
  handler?: RequestHandler;
  /** Server side: what HELLO_ACK says. */
  agentVersion?: string;
  /**
   * Server side, on a transport that cannot always tell when the peer changed (a virtio-serial
   * port whose host reconnects before the guest notices): a HELLO after the handshake means a
   * new host. The session then ends with a "restart" event carrying the bytes that belong to
   * the new one, and stops reading the socket so a new Connection can take it over.
   */
  restartOnHello?: boolean;
}

export interface RequestOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  method: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

/** One direction-pair of a multiplexed byte stream. */
export class Stream {
  /** Bytes from the peer. Ends when the peer sends EOF. */
  readonly readable: Readable;
  private sendCredit: number;
  /** Bytes the peer may still send before we grant more. */
  private outstanding: number;
  private creditWaiters: (() => void)[] = [];
  private localEnded = false;
  private remoteEnded = false;

  constructor(
    readonly id: number,
    private readonly conn: Connection,
    private readonly window: number,
  ) {
    this.sendCredit = window;
    this.outstanding = window;
    this.readable = new Readable({
      highWaterMark: window,
      read: () => this.onReadRequest(),
    });
    // A reader that stopped listening must not turn a dropped channel into an uncaught error;
    // readers that iterate or listen still see it.
    this.readable.on("error", () => undefined);
  }

  /**
   * Grants the peer whatever room the reader made. Node calls `_read` before it takes the
   * chunk it is about to return out of the buffer, and not again until something is pushed;
   * so the room is measured after the current read (a microtask later), and when no grant is
   * possible and nothing is in flight an empty push re-arms `_read` for the next read.
   */
  private onReadRequest(): void {
    queueMicrotask(() => {
      if (this.remoteEnded || this.conn.closed) return;
      const room = this.window - this.readable.readableLength - this.outstanding;
      if (room > 0) {
        this.outstanding += room;
        const payload = Buffer.allocUnsafe(4);
        payload.writeUInt32BE(room, 0);
        this.conn.sendFrame(encodeFrame(FrameType.WINDOW, this.id, payload));
      } else if (this.outstanding === 0) {
        this.readable.push(Buffer.alloc(0));
      }
    });
  }

  /** Sends bytes, waiting for credit and for the socket to drain. */
  async write(data: Buffer): Promise<void> {
    if (this.localEnded) throw new AgentError("ERR_AGENT_PROTOCOL", `stream ${this.id} was already ended`);
    let offset = 0;
    while (offset < data.length) {
      while (this.sendCredit <= 0) {
        if (this.conn.closed) throw this.conn.closedError();
        await new Promise<void>((resolve) => this.creditWaiters.push(resolve));
      }
      if (this.conn.closed) throw this.conn.closedError();
      const n = Math.min(this.sendCredit, MAX_DATA_CHUNK, data.length - offset);
      this.sendCredit -= n;
      this.conn.sendParts(frameHeader(FrameType.DATA, this.id, n), data.subarray(offset, offset + n));
      offset += n;
      await this.conn.drained();
    }
  }

  /**
   * No more data from this side. A stream is released once both sides have ended, so a side
   * that only reads ends it too when done.
   */
  end(): void {
    if (this.localEnded) return;
    this.localEnded = true;
    if (!this.conn.closed) this.conn.sendFrame(encodeFrame(FrameType.EOF, this.id));
    this.maybeRelease();
  }

  get ended(): boolean {
    return this.localEnded;
  }

  /** @internal */
  onData(payload: Buffer): void {
    if (this.remoteEnded) throw new ProtocolViolation(`DATA after EOF on stream ${this.id}`, "sequence");
    if (payload.length > this.outstanding) {
      throw new ProtocolViolation(`stream ${this.id} overran its flow-control window`, "flow-control");
    }
    this.outstanding -= payload.length;
    this.readable.push(payload);
  }

  /** @internal */
  onEof(): void {
    if (this.remoteEnded) return;
    this.remoteEnded = true;
    this.readable.push(null);
    this.maybeRelease();
  }

  /** @internal */
  onWindow(n: number): void {
    this.sendCredit += n;
    for (const w of this.creditWaiters.splice(0)) w();
  }

  /** @internal the connection closed. */
  onClose(err: Error): void {
    for (const w of this.creditWaiters.splice(0)) w();
    if (!this.remoteEnded) {
      this.remoteEnded = true;
      this.readable.destroy(err);
    }
  }

  private maybeRelease(): void {
    if (this.localEnded && this.remoteEnded) this.conn.releaseStream(this.id);
  }
}

export class Connection extends EventEmitter {
  private readonly decoder: FrameDecoder;
  private readonly window: number;
  private readonly pending = new Map<number, Pending>();
  private readonly inflight = new Map<number, AbortController>();
  private readonly streams = new Map<number, Stream>();
  private nextRequestId = 1;
  /** Clients allocate odd stream ids, servers even ones, so the two never collide. */
  private nextStreamId: number;
  private helloDone: boolean;
  private helloWaiter?: { resolve: (a: HelloAck) => void; reject: (e: Error) => void };
  private closeError: Error | undefined;
  private isClosed = false;
  /** The session ended because a new HELLO replaced it (restartOnHello). */
  restarted = false;

  constructor(
    private readonly socket: Duplex,
    private readonly options: ConnectionOptions,
  ) {
    super();
    this.decoder = new FrameDecoder(options.maxPayload ?? DEFAULT_MAX_PAYLOAD);
    this.window = options.window ?? DEFAULT_WINDOW;
    this.nextStreamId = options.role === "client" ? 1 : 2;
    this.helloDone = false;
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onSocketClose);
    socket.on("error", this.onError);
  }

  private readonly onData = (chunk: Buffer): void => this.onChunk(chunk);
  private readonly onEnd = (): void =>
    this.shutdown(
      this.truncationError() ?? new AgentError("ERR_AGENT_DISCONNECTED", "the agent channel closed"),
    );
  private readonly onSocketClose = (): void =>
    this.shutdown(new AgentError("ERR_AGENT_DISCONNECTED", "the agent channel closed"));
  private readonly onError = (err: Error): void =>
    this.shutdown(
      new AgentError("ERR_AGENT_DISCONNECTED", `the agent channel failed: ${err.message}`, { cause: err }),
    );

  /** Stops listening to the socket (it is handed to a new session). */
  private detach(): void {
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onSocketClose);
    this.socket.off("error", this.onError);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  closedError(): Error {
    return this.closeError ?? new AgentError("ERR_AGENT_DISCONNECTED", "the agent channel closed");
  }

  private truncationError(): Error | undefined {
    return this.decoder.pendingBytes > 0
      ? new AgentError(
          "ERR_AGENT_PROTOCOL",
          `the channel ended in the middle of a frame (${this.decoder.pendingBytes} bytes)`,
        )
      : undefined;
  }

  /** @internal */
  sendFrame(frame: Buffer): void {
    if (this.isClosed) return;
    this.socket.write(frame);
  }

  /** @internal A frame as header and payload, without copying the payload into one buffer. */
  sendParts(header: Buffer, payload: Buffer): void {
    if (this.isClosed) return;
    this.socket.cork();
    this.socket.write(header);
    this.socket.write(payload);
    this.socket.uncork();
  }

  /** @internal resolves when the socket can take more. */
  async drained(): Promise<void> {
    if (!this.isClosed && this.socket.writableNeedDrain) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.socket.off("drain", done);
          this.off("close", done);
          resolve();
        };
        this.socket.once("drain", done);
        this.once("close", done);
      });
    }
  }

  /** Client: the version handshake. Must come first. */
  hello(client: string, timeoutMs = 10_000): Promise<HelloAck> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.helloWaiter = undefined;
        reject(
          new AgentError(
            "ERR_AGENT_TIMEOUT",
            `the agent did not answer the handshake within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.helloWaiter = {
        resolve: (a) => {
          clearTimeout(timer);
          resolve(a);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const hello: HelloRequest = { protocol: PROTOCOL_VERSION, client };
      this.sendFrame(encodeJsonFrame(FrameType.HELLO, 0, hello));
    });
  }

  /** Sends a request and resolves with the peer's result. */
  request(method: string, params: unknown = {}, options: RequestOptions = {}): Promise<unknown> {
    if (this.isClosed) return Promise.reject(this.closedError());
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const entry: Pending = { method, resolve, reject };
      const finish = (): void => {
        if (entry.timer) clearTimeout(entry.timer);
        options.signal?.removeEventListener("abort", onAbort);
        this.pending.delete(id);
      };
      entry.resolve = (v) => {
        finish();
        resolve(v);
      };
      entry.reject = (e) => {
        finish();
        reject(e);
      };
      const onAbort = (): void => {
        this.sendFrame(encodeFrame(FrameType.CANCEL, id));
        entry.reject(new AgentError("ERR_CANCELLED", `request ${method} was cancelled`));
      };
      if (options.signal?.aborted) {
        reject(new AgentError("ERR_CANCELLED", `request ${method} was cancelled`));
        return;
      }
      options.signal?.addEventListener("abort", onAbort, { once: true });
      if (options.timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          this.sendFrame(encodeFrame(FrameType.CANCEL, id));
          entry.reject(
            new AgentError(
              "ERR_AGENT_TIMEOUT",
              `the agent did not answer ${method} within ${options.timeoutMs} ms`,
              {
                details: { method },
              },
            ),
          );
        }, options.timeoutMs);
      }
      this.pending.set(id, entry);
      this.sendFrame(encodeJsonFrame(FrameType.REQUEST, id, { method, params }));
    });
  }

  /** A new stream with an id from this side's range. */
  openStream(): Stream {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return this.stream(id);
  }

  /** The stream with this id, created on first use (data may arrive before a handler asks). */
  stream(id: number): Stream {
    let s = this.streams.get(id);
    if (!s) {
      if (this.streams.size >= MAX_STREAMS)
        throw new ProtocolViolation(`more than ${MAX_STREAMS} open streams`, "sequence");
      s = new Stream(id, this, this.window);
      this.streams.set(id, s);
      if (this.isClosed) s.onClose(this.closedError());
    }
    return s;
  }

  /** @internal */
  releaseStream(id: number): void {
    this.streams.delete(id);
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** Server: pushes an event to the client. */
  sendEvent(name: string, data: unknown): void {
    this.sendFrame(encodeJsonFrame(FrameType.EVENT, 0, { name, data }));
  }

  close(): void {
    this.shutdown(new AgentError("ERR_AGENT_DISCONNECTED", "the agent connection was closed"));
    this.socket.end();
  }

  private onChunk(chunk: Buffer): void {
    if (this.isClosed) return;
    try {
      const frames = this.decoder.push(chunk);
      for (const [i, frame] of frames.entries()) {
        if (this.options.restartOnHello && this.helloDone && frame.type === FrameType.HELLO) {
          // A new host: everything from this HELLO on is the next session's.
          const rest = frames.slice(i).map((f) => encodeFrame(f.type, f.id, f.payload));
          rest.push(this.decoder.takePending());
          this.detach();
          // "restart" first: listeners of "close" can tell a replaced session from an ended one.
          this.restarted = true;
          this.emit("restart", Buffer.concat(rest));
          this.shutdown(new AgentError("ERR_AGENT_DISCONNECTED", "a new session replaced this one"));
          return;
        }
        this.onFrame(frame);
      }
    } catch (err) {
      if (err instanceof ProtocolViolation) {
        this.fail(err);
        return;
      }
      throw err;
    }
  }

  /** Tells the peer what was wrong, then drops the connection. */
  private fail(err: ProtocolViolation): void {
    this.sendFrame(encodeJsonFrame(FrameType.ERROR, 0, { code: err.reason, message: err.message }));
    this.shutdown(
      new AgentError("ERR_AGENT_PROTOCOL", `agent protocol error: ${err.message}`, { cause: err }),
    );
    this.emit("protocol-error", err);
    this.socket.end();
    // Give the ERROR frame a moment to leave, then make sure the socket is gone.
    setTimeout(() => this.socket.destroy(), 100).unref();
  }

  private onFrame(frame: Frame): void {
    if (!this.helloDone) {
      this.onHandshake(frame);
      return;
    }
    switch (frame.type) {
      case FrameType.REQUEST:
        this.onRequest(frame);
        return;
      case FrameType.RESPONSE:
        this.onResponse(frame);
        return;
      case FrameType.CANCEL:
        this.inflight.get(frame.id)?.abort();
        return;
      case FrameType.EVENT: {
        const ev = parseJsonPayload(frame);
        if (typeof ev.name !== "string") throw new ProtocolViolation("EVENT without a name", "bad-payload");
        this.emit("event", ev.name, ev.data);
        return;
      }
      case FrameType.DATA:
        this.stream(frame.id).onData(frame.payload);
        return;
      case FrameType.EOF:
        this.stream(frame.id).onEof();
        return;
      case FrameType.WINDOW:
        if (frame.payload.length !== 4)
          throw new ProtocolViolation("WINDOW frame must carry 4 bytes", "bad-payload");
        this.stream(frame.id).onWindow(frame.payload.readUInt32BE(0));
        return;
      case FrameType.ERROR: {
        const e = parseJsonPayload(frame);
        this.shutdown(
          new AgentError("ERR_AGENT_PROTOCOL", `the peer reported a protocol error: ${String(e.message)}`),
        );
        this.socket.end();
        return;
      }
      default:
        throw new ProtocolViolation(
          `unexpected frame 0x${frame.type.toString(16)} after the handshake`,
          "sequence",
        );
    }
  }

  private onHandshake(frame: Frame): void {
    if (this.options.role === "server") {
      if (frame.type !== FrameType.HELLO)
        throw new ProtocolViolation("the first frame must be HELLO", "sequence");
      const hello = parseJsonPayload(frame);
      if (hello.protocol !== PROTOCOL_VERSION) {
        throw new ProtocolViolation(
          `unsupported protocol version ${String(hello.protocol)} (this agent speaks ${PROTOCOL_VERSION})`,
          "sequence",
        );
      }
      this.helloDone = true;
      const ack: HelloAck = {
        protocol: PROTOCOL_VERSION,
        agentVersion: this.options.agentVersion ?? "unknown",
      };
      this.sendFrame(encodeJsonFrame(FrameType.HELLO_ACK, 0, ack));
      this.emit("hello", hello);
      return;
    }
    if (frame.type === FrameType.ERROR) {
      const e = parseJsonPayload(frame);
      const err = new AgentError(
        "ERR_AGENT_PROTOCOL",
        `the agent refused the handshake: ${String(e.message)}`,
      );
      this.helloWaiter?.reject(err);
      this.shutdown(err);
      return;
    }
    if (frame.type !== FrameType.HELLO_ACK) throw new ProtocolViolation("expected HELLO_ACK", "sequence");
    const ack = parseJsonPayload(frame);
    if (ack.protocol !== PROTOCOL_VERSION || typeof ack.agentVersion !== "string") {
      throw new ProtocolViolation(`the agent answered with protocol ${String(ack.protocol)}`, "sequence");
    }
    this.helloDone = true;
    this.helloWaiter?.resolve({ protocol: ack.protocol, agentVersion: ack.agentVersion });
    this.helloWaiter = undefined;
  }

  private onRequest(frame: Frame): void {
    const body = parseJsonPayload(frame);
    const { method, params } = body;
    if (typeof method !== "string") throw new ProtocolViolation("REQUEST without a method", "bad-payload");
    const id = frame.id;
    const handler = this.options.handler;
    const reply = (payload: unknown): void => {
      this.inflight.delete(id);
      this.sendFrame(encodeJsonFrame(FrameType.RESPONSE, id, payload));
    };
    if (!handler) {
      reply({ error: { code: "NOT_SUPPORTED", message: "this side serves no requests" } });
      return;
    }
    if (this.inflight.has(id)) {
      reply({ error: { code: "INVALID_ARGUMENT", message: `request id ${id} is already in flight` } });
      return;
    }
    const ac = new AbortController();
    this.inflight.set(id, ac);
    void Promise.resolve()
      .then(() => handler(method, params ?? {}, { signal: ac.signal, connection: this }))
      .then(
        (result) => reply({ result: result ?? null }),
        (err: unknown) => reply({ error: errorPayload(err, ac.signal.aborted) }),
      );
  }

  private onResponse(frame: Frame): void {
    const body = parseJsonPayload(frame);
    const entry = this.pending.get(frame.id);
    if (!entry) return; // answered after a timeout or cancel: drop it
    if ("error" in body && body.error) {
      const e = body.error as { code?: unknown; message?: unknown; details?: unknown };
      entry.reject(
        new RemoteError(
          typeof e.code === "string" ? e.code : "INTERNAL",
          typeof e.message === "string" ? e.message : "the agent reported an error",
          typeof e.details === "object" && e.details !== null
            ? (e.details as Record<string, unknown>)
            : undefined,
        ),
      );
    } else {
      entry.resolve(body.result);
    }
  }

  private shutdown(err: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeError = err;
    this.helloWaiter?.reject(err);
    this.helloWaiter = undefined;
    for (const p of [...this.pending.values()]) p.reject(err);
    for (const ac of this.inflight.values()) ac.abort();
    this.inflight.clear();
    for (const s of [...this.streams.values()]) s.onClose(err);
    this.emit("close", err);
  }
}

function errorPayload(err: unknown, aborted: boolean): { code: string; message: string; details?: unknown } {
  if (aborted) return { code: "CANCELLED", message: "the request was cancelled" };
  if (err instanceof RemoteError) return { code: err.code, message: err.message, details: err.details };
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { code: typeof code === "string" ? code : "INTERNAL", message: err.message };
  }
  return { code: "INTERNAL", message: String(err) };
}
