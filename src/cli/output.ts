import { CocoonError, ExitCode, isCocoonError, messageOf } from "../errors.js";

/** Where the CLI writes; injectable so tests can capture output. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: Io = {
  out: (text) => process.stdout.write(text.endsWith("\n") ? text : text + "\n"),
  err: (text) => process.stderr.write(text.endsWith("\n") ? text : text + "\n"),
};

/** Formats a table of rows with padded columns (no borders, like `docker ps`). */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/**
 * Prints an error as one line (plus an optional hint line) and returns the exit status.
 * Never prints a stack: unexpected errors point at the log file instead.
 */
export function reportError(
  io: Io,
  err: unknown,
  options: { json?: boolean; logFile?: string } = {},
): number {
  const cocoon: CocoonError = isCocoonError(err)
    ? err
    : new CocoonError("ERR_INTERNAL", messageOf(err), { cause: err });
  if (options.json) {
    io.err(JSON.stringify({ error: cocoon.toJSON() }));
  } else {
    io.err(`cocoon: ${cocoon.message} [${cocoon.code}]`);
    if (cocoon.hint) io.err(`hint: ${cocoon.hint}`);
    if (cocoon.code === "ERR_INTERNAL" && options.logFile) io.err(`details are in ${options.logFile}`);
  }
  return cocoon.exitCode || ExitCode.internal;
}
