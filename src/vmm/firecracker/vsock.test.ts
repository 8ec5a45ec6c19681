import { rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { connectHybridVsock, guestInitiatedPath, hybridVsockHandshake, listenGuestPort } from "./vsock.js";

/** A stand-in for Firecracker's vsock socket that answers each CONNECT as `answer` says. */
async function fakeMuxer(
  file: string,
  answer: (port: number, sock: net.Socket) => void,
): Promise<net.Server> {
  const server = net.createServer((sock) => {
    sock.once("data", (c: Buffer) => {
      const m = /^CONNECT (\d+)\n/.exec(c.toString());
      if (!m) return sock.destroy();
      answer(Number(m[1]), sock);
    });
  });
  await new Promise<void>((r) => server.listen(file, () => r()));
  return server;
}

describe("hybrid vsock", () => {
  const files: string[] = [];
  const servers: net.Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) s.close();
    for (const f of files.splice(0)) await rm(f, { force: true });
  });
  const sockPath = () => {
    const f = path.join(os.tmpdir(), `cocoon-vsock-${process.pid}-${files.length}.sock`);
    files.push(f);
    return f;
  };

  it("completes the CONNECT/OK handshake and keeps bytes sent right after OK", async () => {
    const file = sockPath();
    servers.push(await fakeMuxer(file, (port, sock) => sock.write(`OK ${1073741824 + port}\nhello`)));
    const { socket, hostPort } = await hybridVsockHandshake(file, 52);
    expect(hostPort).toBe(1073741876);
    const data = await new Promise<string>((r) => socket.once("data", (c: Buffer) => r(c.toString())));
    expect(data).toBe("hello");
    socket.destroy();
  });

  it("fails when Firecracker closes (nothing listens in the guest) or answers garbage", async () => {
    const closing = sockPath();
    servers.push(await fakeMuxer(closing, (_p, sock) => sock.destroy()));
    await expect(hybridVsockHandshake(closing, 1)).rejects.toThrow(/closed by Firecracker/);
    const garbage = sockPath();
    servers.push(await fakeMuxer(garbage, (_p, sock) => sock.write("NO\n")));
    await expect(hybridVsockHandshake(garbage, 1)).rejects.toThrow(/unexpected answer "NO"/);
    await expect(hybridVsockHandshake(closing, -1)).rejects.toThrow(/invalid vsock port/);
  });

  it("retries until the guest listens, then gives up with a timeout", async () => {
    const file = sockPath();
    let calls = 0;
    servers.push(
      await fakeMuxer(file, (port, sock) => (++calls < 3 ? sock.destroy() : sock.write(`OK ${port}\n`))),
    );
    const ok = await connectHybridVsock(file, 9, { timeoutMs: 2_000, retryDelayMs: 10 });
    expect(calls).toBe(3);
    ok.socket.destroy();
    await expect(connectHybridVsock(sockPath(), 9, { timeoutMs: 100, retryDelayMs: 10 })).rejects.toThrow(
      /no guest program accepted vsock port 9/,
    );
  });

  it("listens for guest-initiated connections on <uds>_<port>", async () => {
    const uds = sockPath();
    expect(guestInitiatedPath(uds, 52)).toBe(`${uds}_52`);
    const got = new Promise<string>((resolve) => {
      void listenGuestPort(uds, 52, (s) => s.once("data", (c: Buffer) => resolve(c.toString()))).then(
        (server) => {
          servers.push(server);
          const c = net.connect(`${uds}_52`, () => c.end("from guest"));
        },
      );
    });
    expect(await got).toBe("from guest");
  });
});
