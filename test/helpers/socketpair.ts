import net from "node:net";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";

/** Two connected unix sockets (a real kernel socket pair, so backpressure is real). */
export async function socketPair(): Promise<{ a: net.Socket; b: net.Socket; close: () => Promise<void> }> {
  const file = path.join(os.tmpdir(), `cocoon-sp-${randomBytes(6).toString("hex")}.sock`);
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(file, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
  const a = net.connect(file);
  await new Promise<void>((resolve) => a.once("connect", resolve));
  const b = await accepted;
  return {
    a,
    b,
    close: async () => {
      a.destroy();
      b.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(file, { force: true });
    },
  };
}
