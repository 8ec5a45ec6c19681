import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import path from "node:path";
import { pino, type DestinationStream, type Logger } from "pino";

export type { Logger } from "pino";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** A logger that drops everything: the library default, so embedding cocoon prints nothing. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

/**
 * An append-only log file whose writes are synchronous (the last lines before a crash are
 * not lost) and never throw: a line that cannot be written (a full disk, an I/O error) is
 * dropped and counted. pino's own file destination throws from `logger.info()` on ENOSPC,
 * which made a read-only command like `ps` fail on a full state root.
 */
export class DroppingFileDestination implements DestinationStream {
  private fd: number | undefined;
  /** Lines that could not be written (whole or in part). */
  dropped = 0;

  constructor(file: string) {
    this.fd = openSync(file, "a", 0o600);
  }

  write(line: string): void {
    if (this.fd === undefined) return;
    try {
      const buf = Buffer.from(line);
      let off = 0;
      while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off);
    } catch {
      this.dropped++;
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** A JSON logger appending to `file` (created with its directory); see DroppingFileDestination. */
export function fileLogger(file: string, level: LogLevel): Logger {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    new DroppingFileDestination(file),
  );
}
