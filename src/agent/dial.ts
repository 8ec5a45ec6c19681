import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentError, errnoCode, messageOf } from "../errors.js";
import type { AgentChannel } from "../hypervisor/hypervisor.js";
import { acquireLock, type LockHandle } from "../store/lock.js";

/** An open byte stream to the agent, and how to give it back. */
export interface AgentLink {
  socket: net.Socket;
  /** Releases what the link holds (the serial-port lock). Idempotent. */
  release(): Promise<void>;
  /** Which socket it went through, for messages. */
  endpoint: string;
}

export interface DialOptions {
  /** Total time to keep trying (the VMM may still be creating its sockets). */
  timeoutMs: number;
  signal?: AbortSignal;
  retryMs?: number;
}

function connectUnix(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    const onError = (err: Error): void => {
      sock.destroy();
      reject(err);
    };
    sock.once("error", onError);
    sock.once("connect", () => {
      sock.off("error", onError);
      resolve(sock);
    });
  });
}

/** Errors that mean "not there yet": the VMM has not created or opened the socket. */
function transient(err: unknown): boolean {
  const code = errnoCode(err);
  return code === "ENOENT" || code === "ECONNREFUSED" || code === "ECONNRESET" || code === "EAGAIN";
}

/** Firecracker's hybrid vsock: `CONNECT <port>\n`, answered by a line starting with `OK `. */
async function hvsockHandshake(sock: net.Socket, port: number, timeoutMs: number): Promise<void> {
  sock.write(`CONNECT ${port}\n`);
  const line = await new Promise<string>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`no answer to CONNECT ${port}`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(10);
      if (nl === -1) {
        if (buf.length > 256) done(new Error("hybrid vsock answer too long"));
        return;
      }
      const rest = buf.subarray(nl + 1);
      // Anything after the OK line is already agent protocol: hand it back to the stream.
      if (rest.length) sock.unshift(rest);
      done(undefined, buf.subarray(0, nl).toString("utf8"));
    };
    const onClose = (): void => done(new Error(`connection closed during CONNECT ${port}`));
    const done = (err?: Error, text?: string): void => {
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("close", onClose);
      if (err) reject(err);
      else resolve(text!);
    };
    sock.on("data", onData);
    sock.once("close", onClose);
  });
  if (!line.startsWith("OK ")) throw new Error(`hybrid vsock refused CONNECT ${port}: ${line}`);
}

/**
 * Opens a stream to the agent, retrying until `timeoutMs` while the sockets are not there
 * yet. For serial channels it takes the first port whose lock is free: a port carries one
 * session at a time, and the lock (released even if this process dies) says which are taken.
 */
export async function dialAgent(channel: AgentChannel, options: DialOptions): Promise<AgentLink> {
  const deadline = Date.now() + options.timeoutMs;
  const retryMs = options.retryMs ?? 20;
  let lastError: unknown;
  for (;;) {
    if (options.signal?.aborted)
      throw new AgentError("ERR_CANCELLED", "connecting to the agent was cancelled");
    try {
      const link = await tryDial(channel, Math.max(1, deadline - Date.now()));
      if (link) return link;
      lastError = new Error("every agent port is in use by another session");
    } catch (err) {
      if (!transient(err) && channel.kind !== "hvsock") {
        throw new AgentError("ERR_AGENT_DISCONNECTED", `cannot connect to the agent: ${messageOf(err)}`, {
          cause: err,
        });
      }
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new AgentError(
        "ERR_AGENT_TIMEOUT",
        `could not reach the agent within ${options.timeoutMs} ms: ${messageOf(lastError)}`,
        {
          cause: lastError,
        },
      );
    }
    await sleep(retryMs, undefined, { signal: options.signal }).catch(() => undefined);
  }
}

async function tryDial(channel: AgentChannel, remainingMs: number): Promise<AgentLink | undefined> {
  switch (channel.kind) {
    case "unix": {
      const socket = await connectUnix(channel.path);
      return { socket, endpoint: channel.path, release: async () => undefined };
    }
    case "hvsock": {
      const socket = await connectUnix(channel.path);
      try {
        await hvsockHandshake(socket, channel.port, Math.min(remainingMs, 10_000));
      } catch (err) {
        socket.destroy();
        throw err;
      }
      return { socket, endpoint: `${channel.path}:${channel.port}`, release: async () => undefined };
    }
    case "serial": {
      let sawMissing: unknown;
      for (const path of channel.paths) {
        let lock: LockHandle;
        try {
          lock = await acquireLock(`${path}.lock`, { timeoutMs: 0, purpose: "agent session" });
        } catch {
          continue; // taken by another session
        }
        try {
          const socket = await connectUnix(path);
          let released = false;
          const release = async (): Promise<void> => {
            if (released) return;
            released = true;
            socket.destroy();
            await lock.release();
          };
          socket.once("close", () => void release());
          return { socket, endpoint: path, release };
        } catch (err) {
          await lock.release();
          if (!transient(err)) throw err;
          sawMissing = err;
        }
      }
      if (sawMissing) throw sawMissing;
      return undefined;
    }
  }
}
