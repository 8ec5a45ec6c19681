import type { ProcessExit } from "../agent/protocol/methods.js";
import type { ProcessHandle } from "../sandbox/process.js";
import type { Sandbox } from "../sandbox/sandbox.js";

export interface TerminalIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

const FORWARDED: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];

/** Window size of the user's terminal (24x80 when stdout is not one). */
export function windowSize(io: TerminalIo): { rows: number; cols: number } {
  return { rows: io.stdout.rows || 24, cols: io.stdout.columns || 80 };
}

/**
 * Connects a process in a sandbox to this terminal: output to stdout/stderr, stdin when
 * asked, raw mode and window-size changes for a terminal, and signals this process receives
 * forwarded to it. Resolves with its exit status once every byte of output is written.
 */
export async function attachToTerminal(
  sandbox: Sandbox,
  handle: ProcessHandle,
  options: { interactive: boolean; tty: boolean },
  io: TerminalIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
): Promise<ProcessExit> {
  const cleanups: (() => void)[] = [];
  const raw = options.tty && options.interactive && io.stdin.isTTY;
  if (raw) {
    io.stdin.setRawMode(true);
    cleanups.push(() => io.stdin.setRawMode(false));
  }
  if (options.tty && io.stdout.isTTY) {
    const onResize = (): void => {
      const { rows, cols } = windowSize(io);
      void sandbox.resizeTerminal(handle.execId, rows, cols).catch(() => undefined);
    };
    io.stdout.on("resize", onResize);
    cleanups.push(() => io.stdout.off("resize", onResize));
  }
  if (options.interactive && handle.stdin) {
    const sink = handle.stdin;
    const onData = (chunk: Buffer): void => {
      if (!sink.write(chunk)) {
        io.stdin.pause();
        sink.once("drain", () => io.stdin.resume());
      }
    };
    const onEnd = (): void => void sink.end();
    io.stdin.on("data", onData);
    io.stdin.once("end", onEnd);
    io.stdin.resume();
    cleanups.push(() => {
      io.stdin.off("data", onData);
      io.stdin.off("end", onEnd);
      io.stdin.pause();
    });
  }
  for (const sig of FORWARDED) {
    const forward = (): void => void handle.signal(sig).catch(() => undefined);
    process.on(sig, forward);
    cleanups.push(() => process.off(sig, forward));
  }
  const pump = (from: NodeJS.ReadableStream, to: NodeJS.WriteStream): Promise<void> =>
    new Promise((resolve) => {
      from.on("data", (chunk: Buffer) => {
        if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => from.resume());
        }
      });
      from.once("end", () => resolve());
      from.once("error", () => resolve());
    });
  try {
    const [exit] = await Promise.all([
      handle.wait(),
      pump(handle.stdout, io.stdout),
      pump(handle.stderr, io.stderr),
    ]);
    return exit;
  } finally {
    for (const c of cleanups.reverse()) c();
  }
}
