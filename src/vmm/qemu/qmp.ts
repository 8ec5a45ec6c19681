import { EventEmitter } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { HypervisorError, errnoCode, messageOf } from "../../errors.js";

/**
 * A QMP (QEMU Machine Protocol) client. QMP is line-delimited JSON on a unix socket: QEMU
 * greets, the client negotiates capabilities, then sends commands and gets one answer each
 * (matched by `id`), with asynchronous events (SHUTDOWN, STOP, RESUME, DEVICE_DELETED, ...)
 * interleaved.
 */

const greetingSchema = z.object({
  QMP: z.object({
    version: z.object({
      qemu: z.object({ major: z.number(), minor: z.number(), micro: z.number() }),
      package: z.string().optional(),
    }),
    capabilities: z.array(z.string()),
  }),
});
const eventSchema = z.object({
  event: z.string(),
  data: z.unknown().optional(),
  timestamp: z.unknown().optional(),
});
const messageSchema = z.union([
  z.object({ return: z.unknown(), id: z.unknown().optional() }),
  z.object({ error: z.object({ class: z.string(), desc: z.string() }), id: z.unknown().optional() }),
  eventSchema,
]);

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A command QEMU refused: `errorClass` is QMP's class (GenericError, DeviceNotFound, ...). */
export class QmpError extends HypervisorError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super("ERR_VMM_API", `QEMU refused ${command}: ${desc}`, { details: { command, class: errorClass } });
  }
}

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** Keep retrying while the socket does not exist yet (QEMU starting). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Default per-command timeout. */
  commandTimeoutMs?: number;
}

export class QmpClient extends EventEmitter {
  private buffer = "";
  private nextId = 1;
  private readonly pending = new Map<string, PendingCommand>();
  private closedError: Error | undefined;
  version = "";

  private constructor(
    private readonly socket: net.Socket,
    private readonly commandTimeoutMs: number,
  ) {
    super();
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    let socket: net.Socket | undefined;
    let lastErr: unknown;
    while (!socket) {
      if (options.signal?.aborted)
        throw new HypervisorError("ERR_CANCELLED", "connecting to QMP was cancelled");
      try {
        socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(path);
          s.once("connect", () => {
            s.removeAllListeners("error");
            resolve(s);
          });
          s.once("error", (e) => {
            s.destroy();
            reject(e);
          });
        });
      } catch (err) {
        lastErr = err;
        const code = errnoCode(err);
        if (code !== "ENOENT" && code !== "ECONNREFUSED") {
          throw new HypervisorError("ERR_VMM_API", `cannot connect to QMP at ${path}: ${messageOf(err)}`, {
            cause: err,
          });
        }
        if (Date.now() >= deadline) {
          throw new HypervisorError(
            "ERR_VMM_TIMEOUT",
            `QMP socket ${path} did not come up: ${messageOf(lastErr)}`,
            { cause: err },
          );
        }
        await sleep(10, undefined, { signal: options.signal }).catch(() => undefined);
      }
    }
    const client = new QmpClient(socket, options.commandTimeoutMs ?? 30_000);
    try {
      await client.start(Math.max(1, deadline - Date.now()));
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  private start(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new HypervisorError("ERR_VMM_TIMEOUT", "QEMU sent no QMP greeting")),
        timeoutMs,
      );
      let greeted = false;
      this.socket.setEncoding("utf8");
      this.socket.on("data", (chunk: string) => {
        this.buffer += chunk;
        let nl: number;
        while ((nl = this.buffer.indexOf("\n")) !== -1) {
          const line = this.buffer.slice(0, nl).trim();
          this.buffer = this.buffer.slice(nl + 1);
          if (!line) continue;
          if (!greeted) {
            const parsed = safeJson(line);
            // QEMU keeps monitor output that a previous client's connection did not take (an
            // event emitted as it closed) and flushes it to the next client before the greeting.
            if (eventSchema.safeParse(parsed).success) continue;
            greeted = true;
            const g = greetingSchema.safeParse(parsed);
            if (!g.success) {
              clearTimeout(timer);
              reject(new HypervisorError("ERR_VMM_API", `unexpected QMP greeting: ${line.slice(0, 200)}`));
              return;
            }
            const v = g.data.QMP.version.qemu;
            this.version = `${v.major}.${v.minor}.${v.micro}`;
            this.execute("qmp_capabilities").then(
              () => {
                clearTimeout(timer);
                resolve();
              },
              (err: Error) => {
                clearTimeout(timer);
                reject(err);
              },
            );
            continue;
          }
          this.onLine(line);
        }
      });
      const onGone = (err?: Error): void => {
        clearTimeout(timer);
        const e = new HypervisorError(
          "ERR_VMM_EXITED",
          `the QMP connection closed${err ? `: ${err.message}` : ""}`,
          { cause: err },
        );
        if (!greeted) reject(e);
        this.shutdown(e);
      };
      this.socket.on("error", (err) => onGone(err));
      this.socket.on("close", () => onGone());
    });
  }

  private onLine(line: string): void {
    const parsed = messageSchema.safeParse(safeJson(line));
    if (!parsed.success) {
      this.emit("protocol-error", new Error(`unparseable QMP message: ${line.slice(0, 200)}`));
      return;
    }
    const msg = parsed.data;
    if ("event" in msg) {
      const ev: QmpEvent = { event: msg.event, data: (msg.data ?? {}) as Record<string, unknown> };
      this.emit("event", ev);
      this.emit(msg.event, ev.data);
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const entry = id ? this.pending.get(id) : undefined;
    if (!entry || !id) return;
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if ("error" in msg) entry.reject(new QmpError(entry.command, msg.error.class, msg.error.desc));
    else entry.resolve(msg.return);
  }

  /** Runs a QMP command and resolves with its `return` value. */
  execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = this.commandTimeoutMs,
  ): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new HypervisorError("ERR_VMM_TIMEOUT", `QEMU did not answer ${command} within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      this.socket.write(
        JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + "\n",
      );
    });
  }

  /** Resolves with the first event named `name` that passes `match`, or fails after the timeout. */
  waitForEvent(
    name: string,
    match: (data: Record<string, unknown>) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const onEvent = (data: Record<string, unknown>): void => {
        if (!match(data)) return;
        cleanup();
        resolve(data);
      };
      const onClose = (err: Error): void => {
        cleanup();
        reject(err);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new HypervisorError("ERR_VMM_TIMEOUT", `QEMU sent no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off(name, onEvent);
        this.off("close", onClose);
      };
      this.on(name, onEvent);
      this.once("close", onClose);
    });
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  private shutdown(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.emit("close", err);
  }

  close(): void {
    this.shutdown(new HypervisorError("ERR_VMM_EXITED", "the QMP connection was closed"));
    this.socket.destroy();
  }
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
