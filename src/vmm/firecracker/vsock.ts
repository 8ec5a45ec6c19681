import { rm } from "node:fs/promises";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { HypervisorError, messageOf } from "../../errors.js";

/**
 * Hybrid vsock, host side (firecracker-api.md §10). Firecracker exposes the guest's vsock as a
 * unix socket: the host connects to `uds_path`, writes `CONNECT <port>\n`, and reads
 * `OK <host port>\n` once a guest program listening on that port accepted; Firecracker closes
 * the connection when nothing listens. Connections the guest starts to host port P arrive on the
 * unix socket `<uds_path>_<P>`, which the host must listen on beforehand.
 */

export interface HybridVsockConnectOptions {
  /** Total time to keep retrying (the guest may not listen yet). Default 20 s, as the Go SDK. */
  timeoutMs?: number;
  /** Time for one handshake (connect + OK line). Default 2 s: the guest must answer within 2 s. */
  attemptTimeoutMs?: number;
  retryDelayMs?: number;
  signal?: AbortSignal;
}

export interface HybridVsockConnection {
  socket: net.Socket;
  /** The host-side port Firecracker assigned (from `OK <port>`). */
  hostPort: number;
}

const OK_RE = /^OK (\d+)$/;

/** One handshake attempt; rejects when Firecracker closes or answers anything but `OK <n>`. */
export function hybridVsockHandshake(
  udsPath: string,
  port: number,
  timeoutMs = 2_000,
): Promise<HybridVsockConnection> {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) {
    return Promise.reject(new HypervisorError("ERR_INVALID_ARGUMENT", `invalid vsock port ${String(port)}`));
  }
  return new Promise((resolve, reject) => {
    const socket = net.connect(udsPath);
    let buf = Buffer.alloc(0);
    let settled = false;
    const fail = (why: string, cause?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(
        new HypervisorError("ERR_AGENT_DISCONNECTED", `hybrid vsock ${udsPath} port ${port}: ${why}`, {
          cause,
          details: { udsPath, port },
        }),
      );
    };
    const timer = setTimeout(() => fail(`no "OK" within ${timeoutMs} ms`), timeoutMs);
    // Paused-mode reads ('readable'): bytes after the OK line stay in the stream for the caller.
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!settled && (chunk = socket.read() as Buffer | null) !== null) {
        buf = Buffer.concat([buf, chunk]);
        const nl = buf.indexOf(10);
        if (nl === -1) {
          if (buf.length > 64)
            fail(`unexpected answer ${JSON.stringify(buf.toString("latin1").slice(0, 64))}`);
          continue;
        }
        const line = buf.subarray(0, nl).toString("latin1");
        const m = OK_RE.exec(line);
        if (!m) return fail(`unexpected answer ${JSON.stringify(line)}`);
        settled = true;
        clearTimeout(timer);
        socket.off("readable", onReadable);
        socket.off("close", onClose);
        socket.off("error", onError);
        const rest = buf.subarray(nl + 1);
        if (rest.length) socket.unshift(rest);
        resolve({ socket, hostPort: Number(m[1]) });
      }
    };
    const onClose = () =>
      fail("closed by Firecracker (nothing listens on that port in the guest, or the VM is not running)");
    const onError = (err: Error) => fail(messageOf(err), err);
    socket.on("readable", onReadable);
    socket.once("close", onClose);
    socket.once("error", onError);
    socket.once("connect", () => socket.write(`CONNECT ${port}\n`));
  });
}

/** Connects to guest port `port`, retrying until the guest listens or the time is up. */
export async function connectHybridVsock(
  udsPath: string,
  port: number,
  options: HybridVsockConnectOptions = {},
): Promise<HybridVsockConnection> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let last: unknown;
  for (;;) {
    if (options.signal?.aborted)
      throw new HypervisorError("ERR_CANCELLED", `connecting to vsock port ${port} was cancelled`);
    try {
      return await hybridVsockHandshake(udsPath, port, options.attemptTimeoutMs ?? 2_000);
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(options.retryDelayMs ?? 100);
  }
  throw new HypervisorError(
    "ERR_AGENT_TIMEOUT",
    `no guest program accepted vsock port ${port} on ${udsPath}: ${messageOf(last)}`,
    {
      cause: last,
      details: { udsPath, port },
    },
  );
}

/** The unix socket Firecracker connects to when the guest dials host port `port`. */
export function guestInitiatedPath(udsPath: string, port: number): string {
  return `${udsPath}_${port}`;
}

/**
 * Listens for connections the guest initiates to host port `port`. Close the returned server
 * to stop; its socket file is removed then.
 */
export async function listenGuestPort(
  udsPath: string,
  port: number,
  onConnection: (socket: net.Socket) => void,
): Promise<net.Server & { path: string }> {
  const p = guestInitiatedPath(udsPath, port);
  await rm(p, { force: true });
  const server = net.createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(p, () => resolve());
  });
  server.on("close", () => void rm(p, { force: true }));
  return Object.assign(server, { path: p });
}
