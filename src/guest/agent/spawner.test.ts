import { execFileSync } from "node:child_process";
import { chmod, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../../../test/helpers/tmp.js";
import { SPAWNER_SOURCE } from "../image/rootfs.js";
import type { LaunchOptions } from "./child.js";
import { ProcessTable } from "./processes.js";
import { run, runThrough } from "./run.js";
import { encodeRelease, encodeSpawn, parseReply, SpawnerLauncher } from "./spawner.js";

const base: LaunchOptions = {
  argv: ["true"],
  env: { PATH: "/usr/bin:/bin" },
  cwd: "/",
  stdin: false,
  terminal: false,
};

describe("the spawner protocol", () => {
  it("frames a spawn request as length + NUL-terminated fields", () => {
    const buf = encodeSpawn("7", {
      ...base,
      argv: ["sh", "-c", "x"],
      env: { A: "1", GONE: undefined },
      uid: 1000,
      gid: 100,
      stdin: true,
      cwd: "/tmp",
    });
    expect(buf.readUInt32LE(0)).toBe(buf.length - 4);
    expect(buf.subarray(4).toString().split("\0")).toEqual([
      "spawn",
      "7",
      "is",
      "1000",
      "100",
      "/tmp",
      "3",
      "sh",
      "-c",
      "x",
      "A=1",
      "",
    ]);
    expect(encodeSpawn("1", base).subarray(4).toString().split("\0").slice(2, 5)).toEqual(["s", "-", "-"]);
    expect(encodeRelease("7").subarray(4).toString()).toBe("release\u00007\u0000");
  });

  it("refuses NUL bytes, which would split a field", () => {
    expect(() => encodeSpawn("1", { ...base, argv: ["a\0b"] })).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT" }),
    );
  });

  it("parses replies", () => {
    expect(parseReply("ready 42")).toEqual({ kind: "ready", pid: 42 });
    expect(parseReply("ok 3 100 - 5 7")).toEqual({
      kind: "ok",
      id: "3",
      pid: 100,
      stdinFd: undefined,
      stdoutFd: 5,
      stderrFd: 7,
    });
    expect(parseReply("ok 3 100 4 5 7")).toMatchObject({ stdinFd: 4 });
    expect(parseReply("err 3 2")).toEqual({ kind: "err", id: "3", errno: 2 });
    expect(parseReply("exit 100 code 3")).toEqual({
      kind: "exit",
      pid: 100,
      exit: { code: 3, signal: null },
    });
    expect(parseReply("exit 100 signal 9")).toEqual({
      kind: "exit",
      pid: 100,
      exit: { code: null, signal: "SIGKILL" },
    });
    for (const bad of ["", "ok 3 x - 5 7", "ok 3 1 x 5 7", "exit 1 other 2", "err 3", "nope"])
      expect(parseReply(bad)).toBeUndefined();
  });
});

function text(r: Readable): Promise<string> {
  return new Promise((resolve) => {
    let s = "";
    r.setEncoding("utf8");
    r.on("data", (c: string) => (s += c));
    r.on("end", () => resolve(s));
  });
}

// The real helper, built as the image build does, starting processes on this host.
describe("cocoon-spawner", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let helper: string;
  let launcher: SpawnerLauncher;
  const logs: string[] = [];

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    helper = path.join(dir, "cocoon-spawner");
    execFileSync("gcc", ["-O2", "-static", "-Wall", "-Werror", "-o", helper, SPAWNER_SOURCE]);
    launcher = new SpawnerLauncher(helper, (m) => logs.push(m));
  });
  afterAll(async () => {
    await launcher.stop();
    await cleanup();
  });

  it("runs a program with its argv, env and cwd, and reports its exit code", async () => {
    const child = await launcher.launch({
      ...base,
      argv: ["sh", "-c", 'echo "$X $(pwd)"; echo err >&2; exit 3'],
      env: { PATH: "/usr/bin:/bin", X: "hello" },
      cwd: dir,
    });
    expect(child.pid).toBeGreaterThan(0);
    expect(child.stdin).toBeNull();
    const [out, err, exit] = await Promise.all([text(child.stdout), text(child.stderr!), child.exited]);
    expect(out).toBe(`hello ${dir}\n`);
    expect(err).toBe("err\n");
    expect(exit).toEqual({ code: 3, signal: null });
    expect(child.hasExited).toBe(true);
    expect(logs).toEqual([]);
  });

  it("tells a missing program from one that cannot be run", async () => {
    await expect(launcher.launch({ ...base, argv: ["no-such-program"] })).rejects.toMatchObject({
      code: "EXEC_NOT_FOUND",
    });
    const data = path.join(dir, "data");
    await writeFile(data, "");
    await chmod(data, 0o644);
    await expect(launcher.launch({ ...base, argv: [data] })).rejects.toMatchObject({
      code: "EXEC_NOT_EXECUTABLE",
    });
    await expect(launcher.launch({ ...base, argv: ["data"], env: { PATH: dir } })).rejects.toMatchObject({
      code: "EXEC_NOT_EXECUTABLE",
    });
  });

  it("feeds stdin until EOF, and reports a death by signal by name", async () => {
    const cat = await launcher.launch({ ...base, argv: ["cat"], stdin: true });
    const out = text(cat.stdout);
    cat.stdin!.write("abc");
    cat.stdin!.end("def");
    expect(await out).toBe("abcdef");
    expect(await cat.exited).toEqual({ code: 0, signal: null });

    const sleeper = await launcher.launch({ ...base, argv: ["sleep", "30"] });
    // its own session and process group, as node's detached spawn
    const stat = execFileSync("ps", ["-o", "sid=,pgid=", "-p", String(sleeper.pid)])
      .toString()
      .trim();
    expect(stat.split(/\s+/).map(Number)).toEqual([sleeper.pid, sleeper.pid]);
    sleeper.kill("SIGTERM");
    expect(await sleeper.exited).toEqual({ code: null, signal: "SIGTERM" });
  });

  it("gives a process the same output through a GuestProcess, with 128+N for a wrapped program", async () => {
    const table = new ProcessTable(launcher.launch);
    const p = await table.launch({
      execId: "w",
      args: ["x"],
      argv: ["sh", "-c", "exit 137"],
      env: { PATH: "/usr/bin:/bin" },
      cwd: "/",
      terminal: false,
      rows: 0,
      cols: 0,
      wrapped: true,
      openStdin: false,
    });
    expect(await p.done).toEqual({ exitCode: 137, signal: "SIGKILL" });
    expect(p.running).toBe(false);
  });

  it("leaks no descriptor over many processes", async () => {
    const run = async (): Promise<void> => {
      const c = await launcher.launch({ ...base, argv: ["true"], stdin: true });
      c.stdin!.end();
      await Promise.all([text(c.stdout), text(c.stderr!), c.exited]);
    };
    await run();
    await new Promise((r) => setTimeout(r, 50));
    const before = (await readdir("/proc/self/fd")).length;
    for (let i = 0; i < 100; i++) await run();
    await new Promise((r) => setTimeout(r, 50));
    expect((await readdir("/proc/self/fd")).length).toBeLessThanOrEqual(before);
  });

  it("falls back to node's spawn when the helper is missing, and says so once", async () => {
    const messages: string[] = [];
    const missing = new SpawnerLauncher(path.join(dir, "missing"), (m) => messages.push(m));
    for (let i = 0; i < 2; i++) {
      const c = await missing.launch({ ...base, argv: ["echo", "hi"] });
      expect(await text(c.stdout)).toBe("hi\n");
      expect(await c.exited).toEqual({ code: 0, signal: null });
    }
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatch(/cannot start .*missing.*node's spawn/);
  });

  it("runs the agent's short commands (run.ts): output, input, failures with their stderr", async () => {
    runThrough(launcher.launch);
    try {
      expect(await run("sh", ["-c", "echo out; echo noise >&2"])).toBe("out\n");
      expect(await run("sh", ["-c", "wc -c"], { input: Buffer.alloc(100_000) })).toMatch(/^\s*100000\s*$/);
      await expect(
        run("sh", ["-c", "echo bad thing >&2; exit 2"], { code: "INVALID_STATE" }),
      ).rejects.toMatchObject({
        code: "INVALID_STATE",
        message: "sh -c echo bad thing >&2; exit 2: bad thing",
      });
      await expect(run(path.join(dir, "nope"), [])).rejects.toMatchObject({
        code: "IO",
        message: expect.stringMatching(/nope: .*no such file or directory/),
      });
      await expect(run("sleep", ["30"], { timeoutMs: 200 })).rejects.toMatchObject({
        message: "sleep 30: timed out after 200 ms",
      });
    } finally {
      runThrough(undefined);
    }
  });

  it("restarts a helper that died; its processes' exits are still reported", async () => {
    const messages: string[] = [];
    const own = new SpawnerLauncher(helper, (m) => messages.push(m));
    const sleeper = await own.launch({ ...base, argv: ["sleep", "30"] });
    const spawnerPid = Number(
      execFileSync("ps", ["-o", "ppid=", "-p", String(sleeper.pid)])
        .toString()
        .trim(),
    );
    process.kill(spawnerPid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 100));
    sleeper.kill("SIGKILL");
    expect(await sleeper.exited).toEqual({ code: 255, signal: null }); // the status went with the helper
    const c = await own.launch({ ...base, argv: ["sh", "-c", "exit 4"] });
    expect(await c.exited).toEqual({ code: 4, signal: null });
    expect(messages.join("\n")).toMatch(/restarting/);
    await own.stop();
  });
});
