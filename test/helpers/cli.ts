import { buildProgram } from "../../src/cli/main.js";
import { CommanderError } from "commander";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in-process with captured output. */
export async function runCli(args: string[]): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  let code = 0;
  const program = buildProgram(
    {
      out: (t) => void (stdout += t.endsWith("\n") ? t : t + "\n"),
      err: (t) => void (stderr += t.endsWith("\n") ? t : t + "\n"),
    },
    (c) => (code = c),
  );
  try {
    await program.parseAsync(["node", "cocoon", ...args]);
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    code = err.exitCode === 0 ? 0 : 2;
  }
  return { code, stdout, stderr };
}
