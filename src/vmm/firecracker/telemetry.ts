import { constants, openSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { HypervisorError, messageOf } from "../../errors.js";
import { runChecked } from "../../host/process.js";

/**
 * Firecracker's logger and metrics outputs (firecracker-api.md §11): a FIFO or a file, one text
 * line per log record, one JSON object per metrics flush. A reader opens a FIFO O_RDWR so that
 * Firecracker's writes never fail for want of a reader and the reader never sees EOF when
 * Firecracker exits; a regular file is followed by polling.
 */

/** Creates a named pipe (mode 0600) with coreutils' mkfifo (Node has no mkfifo). */
export async function makeFifo(path: string): Promise<void> {
  await runChecked("mkfifo", ["-m", "0600", "--", path], { timeoutMs: 10_000 });
}

/** Reads newline-terminated lines from a FIFO or a growing file. */
export class LineReader {
  private buf = "";
  private readonly queue: string[] = [];
  private readonly history: string[] = [];
  private waiters: (() => void)[] = [];
  private socket: net.Socket | undefined;
  private closed = false;
  private pollLoop: Promise<void> | undefined;

  private constructor(readonly path: string) {}

  static async open(path: string): Promise<LineReader> {
    const reader = new LineReader(path);
    const st = await stat(path);
    if (st.isFIFO()) {
      // A plain fd (not a FileHandle): the socket owns it and closes it.
      const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
      const socket = new net.Socket({ fd, readable: true, writable: false });
      socket.on("data", (chunk: Buffer) => reader.feed(chunk.toString("utf8")));
      socket.on("error", () => undefined);
      reader.socket = socket;
    } else {
      reader.pollLoop = reader.poll();
    }
    return reader;
  }

  private async poll(): Promise<void> {
    const fh = await open(this.path, "r");
    let offset = 0;
    const chunk = Buffer.alloc(64 * 1024);
    try {
      while (!this.closed) {
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, offset);
        if (bytesRead > 0) {
          offset += bytesRead;
          this.feed(chunk.subarray(0, bytesRead).toString("utf8"));
        } else {
          await sleep(20);
        }
      }
    } finally {
      await fh.close();
    }
  }

  private feed(text: string): void {
    this.buf += text;
    let nl;
    while ((nl = this.buf.indexOf("\n")) !== -1) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.queue.push(line);
      this.history.push(line);
      if (this.history.length > 10_000) this.history.shift();
    }
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** Every line seen so far (the last 10 000). */
  get lines(): readonly string[] {
    return this.history;
  }

  /** Takes the lines read but not yet taken. */
  drain(): string[] {
    return this.queue.splice(0, this.queue.length);
  }

  /** The next line not taken yet, waiting up to `timeoutMs`. */
  async next(timeoutMs = 5_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      if (this.closed) throw new HypervisorError("ERR_INVALID_STATE", `the reader of ${this.path} is closed`);
      const left = deadline - Date.now();
      if (left <= 0)
        throw new HypervisorError("ERR_VMM_TIMEOUT", `no line from ${this.path} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.queue.shift()!;
  }

  /** Waits until a line (already seen or new) contains `text` or matches `re`. */
  async waitFor(match: string | RegExp, timeoutMs = 5_000): Promise<string> {
    const test = (l: string) => (typeof match === "string" ? l.includes(match) : match.test(l));
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      const found = this.history.slice(seen).find(test);
      if (found !== undefined) return found;
      seen = this.history.length;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new HypervisorError(
          "ERR_VMM_TIMEOUT",
          `no line matching ${String(match)} in ${this.path} within ${timeoutMs} ms`,
        );
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.socket?.destroy();
    await this.pollLoop?.catch(() => undefined);
    for (const fn of this.waiters) fn();
    this.waiters = [];
  }
}

// -- log lines --------------------------------------------------------------------------------

export interface LogRecord {
  timestamp: string;
  instanceId: string;
  thread: string;
  level?: string;
  origin?: string;
  message: string;
}

const LOG_RE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+) \[([^\]]*)\] (.*)$/;
const LEVELS = new Set(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]);

/** Parses `<time> [<id>:<thread>[:<LEVEL>][:<file>:<line>]] <message>`; undefined for other lines. */
export function parseLogLine(line: string): LogRecord | undefined {
  const m = LOG_RE.exec(line);
  if (!m) return undefined;
  const tags = (m[2] ?? "").split(":");
  if (tags.length < 2) return undefined;
  const rec: LogRecord = { timestamp: m[1]!, instanceId: tags[0]!, thread: tags[1]!, message: m[3] ?? "" };
  let i = 2;
  if (tags[i] !== undefined && LEVELS.has(tags[i]!)) rec.level = tags[i++];
  if (tags.length - i >= 2) rec.origin = tags.slice(i).join(":");
  return rec;
}

/** The exit code from `Firecracker exiting successfully|with error. exit_code=N`. */
export function parseExitCode(lines: readonly string[]): number | undefined {
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /Firecracker exiting (?:successfully|with error)\. exit_code=(\d+)/.exec(lines[i] ?? "");
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** Latencies from Debug logs: each `Total previous API call duration: N us.` in µs. */
export function apiCallDurations(lines: readonly string[]): number[] {
  return lines.flatMap((l) => {
    const m = /Total previous API call duration: (\d+) us\./.exec(l);
    return m ? [Number(m[1])] : [];
  });
}

// -- metrics ----------------------------------------------------------------------------------

const metricValue = z.union([z.number(), z.record(z.string(), z.number())]);
const metricsLineSchema = z
  .object({ utc_timestamp_ms: z.number() })
  .catchall(z.union([z.record(z.string(), metricValue), z.string(), z.number()]));

export type MetricsLine = { utc_timestamp_ms: number } & Record<string, unknown>;

/** Parses one metrics line (JSON object: `utc_timestamp_ms` plus one object per group). */
export function parseMetricsLine(line: string): MetricsLine {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (err) {
    throw new HypervisorError("ERR_VMM_API", `a Firecracker metrics line is not JSON: ${messageOf(err)}`, {
      details: { line: line.slice(0, 200) },
    });
  }
  const parsed = metricsLineSchema.safeParse(raw);
  if (!parsed.success) {
    throw new HypervisorError(
      "ERR_VMM_API",
      `a Firecracker metrics line has an unexpected shape: ${parsed.error.issues[0]?.message ?? "?"}`,
    );
  }
  return parsed.data as MetricsLine;
}

/** A counter from a parsed line, e.g. metric(line, "put_api_requests", "actions_count"). */
export function metric(line: MetricsLine, group: string, name: string): number | undefined {
  const g = line[group];
  if (typeof g !== "object" || g === null) return undefined;
  const v = (g as Record<string, unknown>)[name];
  return typeof v === "number" ? v : undefined;
}
