import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { QmpClient } from "./qmp.js";

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 2, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}';

/** A QMP server that writes `before` lines, then the greeting, and answers every command. */
async function fakeQmp(before: string[]): Promise<{ socketPath: string; close: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "cocoon-qmp-"));
  const socketPath = path.join(dir, "qmp.sock");
  const server = net.createServer((c) => {
    c.write([...before, GREETING].map((l) => `${l}\r\n`).join(""));
    c.setEncoding("utf8");
    let buf = "";
    c.on("data", (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf("\n")) !== -1) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { id?: unknown };
        buf = buf.slice(nl + 1);
        c.write(`${JSON.stringify({ return: {}, id: cmd.id })}\r\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    socketPath,
    close: async () => {
      await new Promise((r) => server.close(r));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

describe("QmpClient greeting", () => {
  it("skips an event QEMU flushed to this connection before its greeting", async () => {
    const srv = await fakeQmp(['{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}']);
    cleanup = srv.close;
    const qmp = await QmpClient.connect(srv.socketPath, { timeoutMs: 5_000 });
    expect(qmp.version).toBe("7.2.2");
    qmp.close();
  });

  it("refuses a first line that is neither an event nor a greeting", async () => {
    const srv = await fakeQmp(['{"return": {}}']);
    cleanup = srv.close;
    await expect(QmpClient.connect(srv.socketPath, { timeoutMs: 5_000 })).rejects.toThrow(
      /unexpected QMP greeting/,
    );
  });
});
