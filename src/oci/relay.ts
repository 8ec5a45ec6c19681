import { spawnSync } from "node:child_process";
import { writeSync, closeSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { once } from "node:events";
import type { Readable, Writable } from "node:stream";
import { z } from "zod";
import { messageOf } from "../errors.js";
import { fileLogger, type Logger } from "../log.js";
import { processConfigSchema } from "../sandbox/config.js";
import type { ProcessHandle } from "../sandbox/process.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import { BUNDLE_CONTAINER_ID, findSandbox } from "./sandbox.js";
import { ContainerDir, notFound } from "./state.js";

/**
 * The relay: the host process that stands for a container's process (or a detached exec's).
 * `create` and `exec --detach` start it and write its pid to `--pid-file`; conmon and
 * containerd's runc shim learn the exit status only by waiting for that pid, so it relays the
 * guest process's stdio through the fds it inherited (or the pty slave from cocoon-console)
 * and exits with the guest process's status. It is an ordinary child, not a new session of its
 * own, so when `create` exits it is reparented to the caller's subreaper.
 *
 * Its parent hears from it on fd 3: one line, `ready` or `error <message>`.
 */

export const RELAY_ENV = "COCOON_OCI_RELAY";

export const relayOptionsSchema = z.object({
  mode: z.enum(["init", "exec"]),
  sandboxId: z.string(),
  /** exec mode: the process to run in the container. */
  process: processConfigSchema.optional(),
});
export type RelayOptions = z.infer<typeof relayOptionsSchema>;

/** Requests on the init relay's control socket (one JSON line each, one JSON line answered). */
const requestSchema = z.discriminatedUnion("op", [
  z.object({ op: z.literal("start") }),
  /** Kill of a created container: its process never runs; the relay exits with 128+signal. */
  z.object({ op: z.literal("kill"), signal: z.number().int().min(1).max(64) }),
]);

function tell(line: string): void {
  try {
    writeSync(3, `${line.replace(/\n/g, " ")}\n`);
    closeSync(3);
  } catch {
    // The parent went away or gave no channel: nothing to tell.
  }
}

/** The terminal size of our stdout when it is a terminal (the pty slave). */
function windowSize(): { rows?: number; cols?: number } {
  const out = process.stdout;
  if (!out.isTTY) return {};
  return { rows: out.rows || 24, cols: out.columns || 80 };
}

/**
 * Puts our terminal (stdin) in raw mode and returns what restores it. Not Node's setRawMode:
 * libuv's raw mode keeps output processing (\n -> \r\n) on, which would translate the guest
 * terminal's output a second time. `stty raw -echo` leaves the line discipline to the guest.
 */
function makeTerminalRaw(): () => void {
  if (!process.stdin.isTTY) return () => undefined;
  const stty = (args: string[]) =>
    spawnSync("stty", args, { stdio: [0, "pipe", "ignore"], encoding: "utf8" });
  const saved = stty(["-g"]);
  stty(["raw", "-echo"]);
  const settings = saved.status === 0 ? saved.stdout.trim() : "";
  return () => {
    if (settings) stty([settings]);
  };
}

/**
 * Copies stdin to the guest process and its output to our stdout/stderr; resolves with the
 * exit status once the process ended and its output was written.
 */
async function pump(handle: ProcessHandle, logger: Logger): Promise<number> {
  const input = process.stdin;
  const restoreTerminal = makeTerminalRaw();
  if (handle.stdin) {
    input.pipe(handle.stdin);
    input.on("error", () => undefined);
  } else input.pause();
  const out = process.stdout;
  if (out.isTTY)
    out.on("resize", () => {
      const { rows, cols } = windowSize();
      if (rows && cols) handle.resize(rows, cols).catch(() => undefined);
    });
  const copy = async (from: Readable, to: Writable) => {
    from.pipe(to, { end: false });
    if (!from.readableEnded)
      await Promise.race([once(from, "end"), once(from, "close")]).catch(() => undefined);
  };
  const [exit] = await Promise.all([
    handle.wait().catch((err: unknown) => {
      // The VM went away under the process (deleted with --force, or it died): report a kill.
      logger.warn({ err }, "lost the guest process");
      return { exitCode: 137 };
    }),
    copy(handle.stdout, process.stdout),
    copy(handle.stderr, process.stderr),
  ]);
  restoreTerminal();
  logger.info({ exit }, "the guest process ended");
  return exit.exitCode;
}

/** Serves `start` and `kill` until the container starts (or is killed while created). */
function serveControl(
  dir: ContainerDir,
  sandbox: Sandbox,
  logger: Logger,
): Promise<{ handle: ProcessHandle } | { killed: number }> {
  return new Promise((resolve, reject) => {
    let busy = false;
    const server: Server = createServer((conn) => {
      conn.setEncoding("utf8");
      let buf = "";
      conn.on("error", () => undefined);
      conn.on("data", (chunk: string) => {
        buf += chunk;
        const nl = buf.indexOf("\n");
        if (nl === -1 || busy) return;
        busy = true;
        const answer = (body: object) => conn.end(`${JSON.stringify(body)}\n`);
        void (async () => {
          let raw: unknown;
          try {
            raw = JSON.parse(buf.slice(0, nl));
          } catch {
            raw = undefined;
          }
          const req = requestSchema.safeParse(raw);
          if (!req.success) {
            busy = false;
            answer({ ok: false, error: "bad request" });
            return;
          }
          if (req.data.op === "kill") {
            server.close();
            answer({ ok: true });
            resolve({ killed: 128 + req.data.signal });
            return;
          }
          try {
            const handle = await sandbox.start({ attach: { stdin: true, ...windowSize() } });
            if (!handle) throw new Error("the sandbox started without a main process");
            await dir.setFlag("started", true);
            server.close();
            answer({ ok: true });
            resolve({ handle });
          } catch (err) {
            logger.error({ err }, "start failed");
            busy = false;
            answer({ ok: false, error: messageOf(err) });
          }
        })().catch(reject);
      });
    });
    server.on("error", reject);
    server.listen(dir.socketPath, () => {
      tell("ready");
    });
  });
}

/** The relay's main: returns the exit status to exit with. */
export async function relayMain(root: string, id: string, options: RelayOptions): Promise<number> {
  const dir = new ContainerDir(root, id);
  const logger = fileLogger(dir.logPath, "info");
  // A relay must not die of a closed stdout or of the caller's terminal signals.
  process.stdout.on("error", () => undefined);
  process.stderr.on("error", () => undefined);
  for (const sig of ["SIGHUP", "SIGINT", "SIGPIPE"] as const) process.on(sig, () => undefined);
  let handle: ProcessHandle;
  try {
    const sandbox = await findSandbox(options.sandboxId, logger);
    if (!sandbox) throw notFound(id);
    if (options.mode === "exec") {
      if (!options.process) throw new Error("exec needs a process");
      handle = await sandbox.exec({
        process: options.process,
        containerId: BUNDLE_CONTAINER_ID,
        stdin: true,
        ...windowSize(),
      });
      tell("ready");
    } else {
      const outcome = await serveControl(dir, sandbox, logger);
      if ("killed" in outcome) return outcome.killed;
      handle = outcome.handle;
    }
  } catch (err) {
    logger.error({ err }, "relay failed");
    tell(`error ${messageOf(err)}`);
    return 125;
  }
  return pump(handle, logger);
}
