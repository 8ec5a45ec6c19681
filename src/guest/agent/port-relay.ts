/**
 * Serving a virtio-serial port through cocoon-portrelay (src/guest/portrelay/cocoon-portrelay.c,
 * which documents the protocol): the helper does the port's small reads and writes natively
 * and hands each host session to the agent as two pipes, which node reads and writes from its
 * event loop instead of one thread-pool hop per 4 KiB (issue 14, stream throughput).
 *
 * Opt-in (`cocoon.portrelay=1`). When the helper is missing, cannot start or dies, the port is
 * served the old way (serial.ts) from then on.
 */
import { spawn } from "node:child_process";
import { constants as fsConstants, existsSync, openSync } from "node:fs";
import net from "node:net";
import { Duplex } from "node:stream";
import { servePort } from "./serial.js";

export const PORT_RELAY_HELPER = "/usr/bin/cocoon-portrelay";

/** Opens the agent's end of a pipe the helper holds (works for pipes, as spawner.ts does). */
function reopen(pid: number, fd: number, write: boolean): net.Socket {
  const flags = (write ? fsConstants.O_WRONLY : fsConstants.O_RDONLY) | fsConstants.O_NONBLOCK;
  const own = openSync(`/proc/${pid}/fd/${fd}`, flags);
  return new net.Socket({ fd: own, readable: !write, writable: write });
}

/**
 * Serves `device` for ever through the helper; falls back to serial.ts's servePort when the
 * helper is missing or ends.
 */
export async function serveRelayedPort(
  device: string,
  onSession: (stream: Duplex) => Promise<void>,
  log: (m: string) => void,
  helper = PORT_RELAY_HELPER,
): Promise<never> {
  if (!existsSync(helper)) {
    log(`${helper} is missing: serving ${device} without it`);
    return servePort(device, onSession, log);
  }
  const relay = spawn(helper, [device], { stdio: ["pipe", "pipe", "inherit"] });
  const gone = new Promise<string>((resolve) => {
    relay.once("error", (err) => resolve(err.message));
    relay.once("exit", (code, signal) => resolve(signal ? `killed by ${signal}` : `exit ${code}`));
  });
  relay.stdin!.on("error", () => undefined);
  const lines = relay.stdout!;
  lines.setEncoding("utf8");
  let text = "";
  let current: Promise<void> = Promise.resolve();
  lines.on("data", (chunk: string) => {
    text += chunk;
    for (let nl = text.indexOf("\n"); nl !== -1; nl = text.indexOf("\n")) {
      const line = text.slice(0, nl);
      text = text.slice(nl + 1);
      const m = /^session (\d+) (\d+)$/.exec(line);
      if (!m) continue; // "ready"
      // Sessions come one after another: the helper starts the next only after the last ended.
      current = current.then(() => runSession(relay.pid!, Number(m[1]), Number(m[2])));
    }
  });

  const runSession = async (pid: number, readFd: number, writeFd: number): Promise<void> => {
    let input: net.Socket;
    let output: net.Socket;
    try {
      input = reopen(pid, readFd, false);
      output = reopen(pid, writeFd, true);
    } catch (err) {
      log(`cannot open the relay's pipes for ${device}: ${(err as Error).message}`);
      relay.kill("SIGKILL");
      return;
    } finally {
      relay.stdin!.write("opened\n");
    }
    const session = Duplex.from({ readable: input, writable: output });
    session.on("error", () => undefined);
    await onSession(session).catch((err: Error) => log(`session on ${device} failed: ${err.message}`));
    // Our ends closed: the helper drops what the host still sends until it leaves.
    input.destroy();
    output.destroy();
    session.destroy();
  };

  const why = await gone;
  log(`cocoon-portrelay for ${device} ended (${why}): serving it without the helper`);
  return servePort(device, onSession, log);
}
