import { spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { AgentOpError } from "./errors.js";

/** How a process ended, as node's "exit" event tells it. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A started process as GuestProcess needs it, whoever started it: node's child_process or
 * the cocoon-spawner helper (spawner.ts). Its pipes are node streams either way, so output
 * pumping, backpressure and stdin EOF work the same.
 */
export interface LaunchedChild {
  readonly pid: number;
  /** null when the process got /dev/null as its stdin. */
  readonly stdin: Writable | null;
  readonly stdout: Readable;
  /** null for a terminal: its stderr is the terminal. */
  readonly stderr: Readable | null;
  /** fd 3 of cocoon-pty (terminal window sizes). */
  readonly control: Writable | undefined;
  /** Resolves once the process has ended and been reaped. */
  readonly exited: Promise<ChildExit>;
  readonly hasExited: boolean;
  kill(signal: NodeJS.Signals): void;
}

export interface LaunchOptions {
  /** argv[0] is looked up on the PATH of `env`, as node's spawn does. */
  argv: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  uid?: number | undefined;
  gid?: number | undefined;
  /** A stdin pipe (else /dev/null). */
  stdin: boolean;
  /** argv runs cocoon-pty: stderr is inherited and fd 3 is the window-size pipe. */
  terminal: boolean;
}

export type Launch = (options: LaunchOptions) => Promise<LaunchedChild>;

/** The error a start failure answers with: ENOENT and EACCES have codes of their own. */
export function startError(argv0: string, errno: string | undefined, message: string): AgentOpError {
  if (errno === "ENOENT") return new AgentOpError("EXEC_NOT_FOUND", `${argv0}: no such file or directory`);
  if (errno === "EACCES") return new AgentOpError("EXEC_NOT_EXECUTABLE", `${argv0}: permission denied`);
  return new AgentOpError("INTERNAL", `cannot start ${argv0}: ${message}`);
}

/**
 * Starts a process with node's child_process: forks the agent's whole node process, which is
 * slow under TCG (issue 14), but needs no helper. Used for terminals, and whenever the spawner
 * is not there.
 */
export async function spawnWithNode(options: LaunchOptions): Promise<LaunchedChild> {
  const { argv } = options;
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: options.cwd,
    env: options.env,
    // a terminal's stderr is the terminal; fd 3 carries window-size changes to cocoon-pty
    stdio: options.terminal
      ? ["pipe", "pipe", "inherit", "pipe"]
      : [options.stdin ? "pipe" : "ignore", "pipe", "pipe"],
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
    detached: true, // own session and process group: signals aimed at the agent miss it
  });
  // Listened to before the start is known: a quick process may exit before "spawn" is handled.
  const exited = new Promise<ChildExit>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  await new Promise<void>((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", (err: NodeJS.ErrnoException) => reject(startError(argv[0]!, err.code, err.message)));
  });
  return {
    pid: child.pid ?? 0,
    stdin: child.stdin,
    stdout: child.stdout!,
    stderr: child.stderr,
    control: options.terminal ? (child.stdio[3] as Writable | undefined) : undefined,
    exited,
    get hasExited() {
      return child.exitCode !== null || child.signalCode !== null;
    },
    kill: (signal) => void child.kill(signal),
  };
}
