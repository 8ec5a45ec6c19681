import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

export const COCOON_BIN = path.resolve(import.meta.dirname, "../../bin/cocoon.js");

export interface Spawned {
  child: ChildProcess;
  /** Resolves with everything printed and the exit status. */
  result: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: Buffer }>;
  /** Resolves once stdout contains `text`. */
  waitFor(text: string): Promise<void>;
}

/** Runs the real `cocoon` executable in its own process, as a user would. */
export function cocoon(args: string[], env: NodeJS.ProcessEnv, input?: Buffer | string): Spawned {
  const child = spawn(process.execPath, [COCOON_BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const waiters: { text: string; resolve: () => void }[] = [];
  child.stdout!.on("data", (c: Buffer) => {
    out.push(c);
    const all = Buffer.concat(out).toString();
    for (const w of waiters.splice(0)) {
      if (all.includes(w.text)) w.resolve();
      else waiters.push(w);
    }
  });
  child.stderr!.on("data", (c: Buffer) => err.push(c));
  if (input !== undefined) child.stdin!.end(input);
  const result = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: Buffer;
    stderr: Buffer;
  }>((resolve) => {
    child.once("close", (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }),
    );
  });
  return {
    child,
    result,
    waitFor: (text) =>
      new Promise((resolve) => {
        if (Buffer.concat(out).toString().includes(text)) resolve();
        else waiters.push({ text, resolve });
      }),
  };
}
