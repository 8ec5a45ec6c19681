import { execFile } from "node:child_process";
import type { Readable } from "node:stream";
import type { Launch } from "./child.js";
import { AgentOpError, type AgentErrorCode } from "./errors.js";

export interface RunOptions {
  timeoutMs?: number;
  code?: AgentErrorCode;
  input?: string | Buffer;
}

/** Output kept of a short command (execFile's maxBuffer). */
const MAX_OUTPUT = 16 * 1024 * 1024;

let launcher: Launch | undefined;

/**
 * The agent's short commands go through its process launcher (the cocoon-spawner, spawner.ts)
 * once it has one: node's execFile forks the whole agent, ~50-100 ms each under TCG, and a
 * clone's create runs one (cocoon-guestctl freshen). Tests and a launcher-less agent use
 * execFile.
 */
export function runThrough(launch: Launch | undefined): void {
  launcher = launch;
}

/** Runs a short guest command (mount, runc, cocoon-guestctl...) and fails with its stderr. */
export function run(file: string, args: string[], options: RunOptions = {}): Promise<string> {
  return launcher ? runLaunched(launcher, file, args, options) : runExecFile(file, args, options);
}

function failure(file: string, args: string[], options: RunOptions, detail: string): AgentOpError {
  const last = detail.trim().split("\n").slice(-3).join("; ");
  return new AgentOpError(options.code ?? "IO", `${file} ${args.join(" ")}: ${last}`);
}

function runExecFile(file: string, args: string[], options: RunOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: MAX_OUTPUT },
      (err, stdout, stderr) => {
        if (err) reject(failure(file, args, options, stderr || err.message));
        else resolve(stdout);
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

function collect(stream: Readable | null): Promise<string> {
  if (!stream) return Promise.resolve("");
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on("data", (chunk: Buffer) => {
      if (size < MAX_OUTPUT) chunks.push(chunk);
      size += chunk.length;
    });
    stream.once("close", () => resolve(Buffer.concat(chunks).toString()));
    stream.once("error", () => resolve(Buffer.concat(chunks).toString()));
  });
}

async function runLaunched(
  launch: Launch,
  file: string,
  args: string[],
  options: RunOptions,
): Promise<string> {
  let child;
  try {
    child = await launch({
      argv: [file, ...args],
      env: process.env,
      cwd: "/",
      stdin: options.input !== undefined,
      terminal: false,
    });
  } catch (err) {
    throw failure(file, args, options, (err as Error).message);
  }
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  if (options.input !== undefined) {
    child.stdin?.on("error", () => undefined); // a command that does not read its input
    child.stdin?.end(options.input);
  }
  const timeoutMs = options.timeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const exit = await Promise.race([child.exited, timedOut]);
  clearTimeout(timer);
  if (exit === "timeout") {
    child.kill("SIGKILL");
    throw failure(file, args, options, `timed out after ${timeoutMs} ms`);
  }
  const [out, err] = await Promise.all([stdout, stderr]);
  if (exit.code !== 0)
    throw failure(
      file,
      args,
      options,
      err || (exit.signal ? `killed by ${exit.signal}` : `exit status ${exit.code}`),
    );
  return out;
}
