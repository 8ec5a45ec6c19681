import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import {
  hostMemoryKb,
  isProcessAlive,
  parseMemTotalKb,
  parseProcStat,
  parseRunningOnVmm,
  parseTscKhz,
  readProcStat,
  runningOnVmm,
} from "./proc.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

describe("meminfo", () => {
  it("reads MemTotal in kB, skipping malformed lines", async () => {
    const file = path.join(dir, "meminfo");
    await writeFile(
      file,
      [
        "MemFree: 10 kB",
        "MemTotal:",
        "MemTotal: abc kB",
        "MemTotal: 5 MB",
        "MemTotal:       24685212 kB",
        "",
      ].join("\n"),
    );
    await expect(hostMemoryKb(file)).resolves.toBe(24685212);
  });

  it("is an error when MemTotal is missing or the file is unreadable", async () => {
    expect(() => parseMemTotalKb("MemFree: 1 kB\n", "x")).toThrow(
      expect.objectContaining({ code: "ERR_HOST_PROBE", message: "no MemTotal line in x" }),
    );
    await expect(hostMemoryKb(path.join(dir, "missing"))).rejects.toMatchObject({ code: "ERR_HOST_PROBE" });
  });

  it("reads the real /proc/meminfo", async () => {
    expect(await hostMemoryKb()).toBeGreaterThan(0);
  });
});

describe("cpuinfo", () => {
  it("finds the hypervisor flag on the flags line", async () => {
    const file = path.join(dir, "cpuinfo");
    await writeFile(file, "processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n");
    await expect(runningOnVmm(file)).resolves.toBe(true);
    expect(parseRunningOnVmm("flags: fpu vme\n")).toBe(false);
  });

  it("reads only the first flags line", () => {
    expect(parseRunningOnVmm("flags : fpu\nflags : hypervisor\n")).toBe(false);
  });

  it("is an error when there is no flags line", () => {
    expect(() => parseRunningOnVmm("processor : 0\nmodel name : x\n", "c")).toThrow(
      expect.objectContaining({ code: "ERR_HOST_PROBE", message: 'no "flags" line in c' }),
    );
  });
});

describe("TSC frequency", () => {
  it("reads cpu MHz when the TSC is constant", () => {
    expect(parseTscKhz("processor : 0\ncpu MHz\t\t: 2596.146\nflags\t\t: fpu constant_tsc tsc\n")).toBe(
      2596146,
    );
    expect(parseTscKhz("cpu MHz : 2596.146\nflags : fpu tsc\n")).toBeUndefined();
    expect(parseTscKhz("flags : constant_tsc\n")).toBeUndefined();
  });
});

describe("process stat", () => {
  it("parses command names with spaces and parentheses", () => {
    const stat = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 98765 0 0";
    expect(parseProcStat(stat)).toEqual({
      pid: 1234,
      comm: "qemu (x) y",
      state: "S",
      ppid: 1,
      startTime: 98765,
    });
  });

  it("knows this process is alive and a recycled start time is not", async () => {
    const self = await readProcStat(process.pid);
    expect(self?.pid).toBe(process.pid);
    expect(await isProcessAlive(process.pid)).toBe(true);
    expect(await isProcessAlive(process.pid, self!.startTime)).toBe(true);
    expect(await isProcessAlive(process.pid, self!.startTime + 1)).toBe(false);
    expect(await isProcessAlive(0)).toBe(false);
    expect(await isProcessAlive(2 ** 22 + 12345)).toBe(false);
  });
});
