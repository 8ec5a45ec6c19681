import { AgentError, type ErrorCode } from "../errors.js";
import type { AgentChannel } from "../hypervisor/hypervisor.js";
import { Connection, RemoteError, type HelloAck, type Stream } from "./protocol/connection.js";
import { METHODS, type MethodName, type ParamsOf, type ResultOf } from "./protocol/methods.js";
import { dialAgent, type AgentLink } from "./dial.js";
import { COCOON_VERSION } from "../package-root.js";

/** Agent error codes → cocoon error codes. */
const REMOTE_CODES: Record<string, ErrorCode> = {
  INVALID_ARGUMENT: "ERR_INVALID_ARGUMENT",
  NOT_FOUND: "ERR_NOT_FOUND",
  ALREADY_EXISTS: "ERR_ALREADY_EXISTS",
  INVALID_STATE: "ERR_INVALID_STATE",
  NOT_SUPPORTED: "ERR_NOT_SUPPORTED",
  CANCELLED: "ERR_CANCELLED",
  EXEC_NOT_FOUND: "ERR_EXEC_NOT_FOUND",
  EXEC_NOT_EXECUTABLE: "ERR_EXEC_NOT_EXECUTABLE",
};

export interface AgentConnectOptions {
  /** Time to reach the agent and complete the handshake (covers a guest still booting). */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Default time each request may take. */
  requestTimeoutMs?: number;
}

/**
 * The host side of the agent protocol: one session with the guest agent. Requests are typed
 * by method and their answers validated; agent errors become AgentErrors with cocoon codes
 * (the agent's own code is kept in `details.agentCode`).
 */
export class AgentClient {
  private constructor(
    private readonly conn: Connection,
    private readonly link: AgentLink,
    readonly hello: HelloAck,
    private readonly requestTimeoutMs: number,
  ) {}

  static async connect(channel: AgentChannel, options: AgentConnectOptions): Promise<AgentClient> {
    const deadline = Date.now() + options.timeoutMs;
    const link = await dialAgent(channel, { timeoutMs: options.timeoutMs, signal: options.signal });
    const conn = new Connection(link.socket, { role: "client" });
    conn.once("close", () => void link.release());
    try {
      const hello = await conn.hello(`cocoon/${COCOON_VERSION}`, Math.max(1, deadline - Date.now()));
      return new AgentClient(conn, link, hello, options.requestTimeoutMs ?? 60_000);
    } catch (err) {
      conn.close();
      await link.release();
      throw err;
    }
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  get endpoint(): string {
    return this.link.endpoint;
  }

  /** Calls a method; `timeoutMs` overrides the default request timeout (0: none). */
  async call<M extends MethodName>(
    method: M,
    params: ParamsOf<M>,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<ResultOf<M>> {
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    let raw: unknown;
    try {
      raw = await this.conn.request(method, params, {
        ...(timeoutMs > 0 ? { timeoutMs } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (err) {
      if (err instanceof RemoteError) {
        throw new AgentError(REMOTE_CODES[err.code] ?? "ERR_AGENT_REMOTE", err.message, {
          details: { agentCode: err.code, method, ...(err.details ?? {}) },
        });
      }
      throw err;
    }
    const parsed = METHODS[method].result.safeParse(raw);
    if (!parsed.success) {
      throw new AgentError(
        "ERR_AGENT_PROTOCOL",
        `the agent's answer to ${method} is malformed: ${parsed.error.issues[0]?.message}`,
      );
    }
    return parsed.data as ResultOf<M>;
  }

  /** A new stream on this session (for stdio). */
  openStream(): Stream {
    return this.conn.openStream();
  }

  stream(id: number): Stream {
    return this.conn.stream(id);
  }

  onEvent(listener: (name: string, data: unknown) => void): () => void {
    this.conn.on("event", listener);
    return () => this.conn.off("event", listener);
  }

  onClose(listener: (err: Error) => void): void {
    this.conn.once("close", listener);
  }

  async close(): Promise<void> {
    this.conn.close();
    await this.link.release();
  }
}

/** Waits until the agent answers a health check: the boot is complete. */
export async function waitForAgent(channel: AgentChannel, options: AgentConnectOptions): Promise<HelloAck> {
  const client = await AgentClient.connect(channel, options);
  try {
    const health = await client.call(
      "health.check",
      {},
      { timeoutMs: 10_000, ...(options.signal ? { signal: options.signal } : {}) },
    );
    if (health.status !== "SERVING")
      throw new AgentError("ERR_AGENT_REMOTE", `the agent reports ${health.status}`);
    return client.hello;
  } finally {
    await client.close();
  }
}
