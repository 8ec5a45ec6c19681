import { describe, expect, it } from "vitest";
import { logLine } from "./main.js";
import { checkContainerId, list, parseArgs } from "./flags.js";
import { parseSignal, signalName } from "./signals.js";
import { sandboxIdOf, stateJson } from "./state.js";

describe("cocoon-runtime's runc command line", () => {
  it("reads conmon's create with global flags before the command, in --flag=value and -flag forms", () => {
    const p = parseArgs([
      "--systemd-cgroup",
      "--log-format=json",
      "-log",
      "/run/x/oci-log",
      "create",
      "-bundle",
      "/b",
      "--pid-file=/p",
      "--no-pivot",
      "--no-new-keyring",
      "--console-socket",
      "/s",
      "abc",
    ]);
    expect(p.global).toEqual({ "systemd-cgroup": true, "log-format": "json", log: "/run/x/oci-log" });
    expect(p.command).toBe("create");
    expect(p.flags).toEqual({
      bundle: "/b",
      "pid-file": "/p",
      "no-pivot": true,
      "no-new-keyring": true,
      "console-socket": "/s",
    });
    expect(p.args).toEqual(["abc"]);
  });

  it("keeps everything after the id of an inline exec as the command, flags included", () => {
    const p = parseArgs(["exec", "-e", "A=1", "--env", "B=2", "-t", "c1", "sh", "-c", "ls -l"]);
    expect(list(p.flags, "env")).toEqual(["A=1", "B=2"]);
    expect(p.flags["tty"]).toBe(true);
    expect(p.args).toEqual(["c1", "sh", "-c", "ls -l"]);
  });

  it("takes kill's signal as a second argument and delete's --force after the id", () => {
    expect(parseArgs(["kill", "--all", "c1", "9"])).toMatchObject({
      flags: { all: true },
      args: ["c1", "9"],
    });
    expect(parseArgs(["delete", "c1", "--force"])).toMatchObject({ flags: { force: true }, args: ["c1"] });
  });

  it("refuses unknown flags, missing values, missing ids and extra arguments", () => {
    expect(() => parseArgs(["create", "--frobnicate", "x"])).toThrow(/not defined: -frobnicate/);
    expect(() => parseArgs(["create", "--bundle"])).toThrow(/needs an argument/);
    expect(() => parseArgs(["start"])).toThrow(/requires exactly one argument/);
    expect(() => parseArgs(["state", "a", "b"])).toThrow(/at most 1/);
    expect(() => parseArgs(["frob", "a"])).toThrow(/unknown command/);
    expect(() => parseArgs(["--detach=maybe", "create"])).toThrow(/not defined/);
    expect(() => parseArgs(["exec", "--detach=maybe", "c"])).toThrow(/invalid boolean/);
  });

  it("accepts --version without a command, and ids that are file names only", () => {
    expect(parseArgs(["--version"]).global["version"]).toBe(true);
    expect(parseArgs(["-v"]).command).toBeUndefined();
    expect(checkContainerId("a".repeat(64))).toHaveLength(64);
    for (const bad of ["../x", "a/b", ".", "", "-x"]) expect(() => checkContainerId(bad)).toThrow(/invalid/);
  });

  it("reads signals by name, short name or number and names them as the agent wants", () => {
    expect(parseSignal("KILL")).toBe(9);
    expect(parseSignal("SIGTERM")).toBe(15);
    expect(parseSignal("sigusr1")).toBe(10);
    expect(parseSignal("2")).toBe(2);
    expect(() => parseSignal("0")).toThrow(/unknown signal/);
    expect(() => parseSignal("NOPE")).toThrow(/unknown signal/);
    expect(signalName(9)).toBe("SIGKILL");
  });

  it("writes a failure as exactly one JSON object with level, time and msg (podman parses the whole file)", () => {
    const t = new Date("2026-01-02T03:04:05Z");
    const line = logLine("json", 'container "x" does not exist', t);
    expect(line.endsWith("\n")).toBe(true);
    expect(JSON.parse(line)).toEqual({
      level: "error",
      time: "2026-01-02T03:04:05.000Z",
      msg: 'container "x" does not exist',
    });
    expect(logLine("text", "boom", t)).toBe('time="2026-01-02T03:04:05.000Z" level=error msg="boom"\n');
  });

  it("reports pid 0 once stopped and a stable sandbox id per root and container id", () => {
    const rec = {
      id: "c",
      bundle: "/b",
      rootfs: "/b/rootfs",
      created: "2026-01-01T00:00:00.000Z",
      sandboxId: "oci-x",
      pid: 42,
      pidStart: 1,
      annotations: {},
      env: {},
    };
    expect(stateJson("c", rec, "running")).toMatchObject({ pid: 42, status: "running", bundle: "/b" });
    expect(stateJson("c", rec, "stopped")).toMatchObject({ pid: 0, status: "stopped" });
    expect(sandboxIdOf("/r", "c")).toBe(sandboxIdOf("/r/", "c"));
    expect(sandboxIdOf("/r", "c")).not.toBe(sandboxIdOf("/r2", "c"));
    expect(sandboxIdOf("/r", "c")).toMatch(/^oci-[0-9a-f]{16}$/);
  });
});
