import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { openSync, writeSync, closeSync, constants } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  LineReader,
  apiCallDurations,
  makeFifo,
  metric,
  parseExitCode,
  parseLogLine,
  parseMetricsLine,
} from "./telemetry.js";

describe("log lines", () => {
  it("parses Firecracker's log line format", () => {
    expect(
      parseLogLine(
        '2026-01-02T03:04:05.123456789 [probe2:fc_api:INFO] The API server received a Put request on "/metrics" with body "{}".',
      ),
    ).toEqual({
      timestamp: "2026-01-02T03:04:05.123456789",
      instanceId: "probe2",
      thread: "fc_api",
      level: "INFO",
      message: 'The API server received a Put request on "/metrics" with body "{}".',
    });
    expect(parseLogLine("2026-01-02T03:04:05.1 [id:fc_vcpu 0:WARN:src/vmm/src/lib.rs:42] x")).toMatchObject({
      thread: "fc_vcpu 0",
      level: "WARN",
      origin: "src/vmm/src/lib.rs:42",
    });
    const plain = parseLogLine("2026-01-02T03:04:05.1 [anonymous-instance:main] Running Firecracker v1.0.0");
    expect(plain).toMatchObject({
      instanceId: "anonymous-instance",
      thread: "main",
      message: "Running Firecracker v1.0.0",
    });
    expect(plain?.level).toBeUndefined();
    expect(parseLogLine("not a log line")).toBeUndefined();
    expect(parseExitCode(["a", "... Firecracker exiting with error. exit_code=152"])).toBe(152);
    expect(
      apiCallDurations([
        "Total previous API call duration: 12 us.",
        "x",
        "Total previous API call duration: 7 us.",
      ]),
    ).toEqual([12, 7]);
  });
});

describe("metrics lines", () => {
  it("parses a flush and reads counters", () => {
    const line = parseMetricsLine(
      '{"utc_timestamp_ms":1,"put_api_requests":{"actions_count":2},"vcpu":{"exit_io_in_agg":{"min_us":1,"max_us":3,"sum_us":4}}}',
    );
    expect(metric(line, "put_api_requests", "actions_count")).toBe(2);
    expect(metric(line, "nope", "x")).toBeUndefined();
    expect(() => parseMetricsLine("{")).toThrow(/not JSON/);
    expect(() => parseMetricsLine('{"api_server":{}}')).toThrow(/unexpected shape/);
  });
});

describe("LineReader", () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it("reads a FIFO without blocking the writer and keeps partial lines until complete", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "cocoon-fifo-"));
    dirs.push(dir);
    const fifo = path.join(dir, "log.fifo");
    await makeFifo(fifo);
    const reader = await LineReader.open(fifo);
    // Firecracker opens its end O_RDWR|O_NONBLOCK, so it never waits for a reader.
    const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
    writeSync(fd, "first\nsec");
    expect(await reader.next()).toBe("first");
    writeSync(fd, "ond\n");
    expect(await reader.next()).toBe("second");
    closeSync(fd);
    await expect(reader.next(50)).rejects.toThrow(/no line/);
    await reader.close();
  });

  it("follows a growing regular file and waits for a match", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "cocoon-log-"));
    dirs.push(dir);
    const file = path.join(dir, "fc.log");
    await writeFile(file, "one\n");
    const reader = await LineReader.open(file);
    const waiting = reader.waitFor(/three/, 2_000);
    await appendFile(file, "two\nthree\n");
    expect(await waiting).toBe("three");
    expect(reader.drain()).toEqual(["one", "two", "three"]);
    await reader.close();
  });
});
