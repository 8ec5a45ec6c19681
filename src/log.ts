import { mkdirSync } from "node:fs";
import path from "node:path";
import { pino, type Logger } from "pino";

export type { Logger } from "pino";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** A logger that drops everything: the library default, so embedding cocoon prints nothing. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

/**
 * A JSON logger appending to `file` (created with its directory). Writes are synchronous so
 * that the last lines before a crash are not lost.
 */
export function fileLogger(file: string, level: LogLevel): Logger {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: file, sync: true, mkdir: true }),
  );
}
