import { execFile } from "node:child_process";
import { AgentOpError, type AgentErrorCode } from "./errors.js";

/** Runs a short guest command (mount, runc, hostname...) and fails with its stderr. */
export function run(
  file: string,
  args: string[],
  options: { timeoutMs?: number; code?: AgentErrorCode; input?: string | Buffer } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          const detail = (stderr || err.message).trim().split("\n").slice(-3).join("; ");
          reject(new AgentOpError(options.code ?? "IO", `${file} ${args.join(" ")}: ${detail}`));
        } else {
          resolve(stdout);
        }
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}
