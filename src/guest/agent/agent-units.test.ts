import { chmod, mkdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { socketPair } from "../../../test/helpers/socketpair.js";
import { tempDir } from "../../../test/helpers/tmp.js";
import { Connection } from "../../agent/protocol/connection.js";
import { parseEnv, parseMemory } from "../../cli/commands/sandbox.js";
import { checkExecutable, resolveInRoot } from "./exec-path.js";
import { ociSpec } from "./oci.js";
import { OutputPump } from "./output.js";
import { decodeExit } from "./processes.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

describe("paths inside a container root", () => {
  it("keeps .. and absolute symlinks inside the root", async () => {
    await mkdir(path.join(dir, "etc"), { recursive: true });
    await writeFile(path.join(dir, "etc/hosts"), "x");
    await symlink("/etc/hosts", path.join(dir, "abs-link"));
    await symlink("../../../../etc", path.join(dir, "escape"));
    expect(await resolveInRoot(dir, "/../../etc/hosts")).toBe(path.join(dir, "etc/hosts"));
    expect(await resolveInRoot(dir, "/abs-link")).toBe(path.join(dir, "etc/hosts"));
    expect(await resolveInRoot(dir, "/escape/hosts")).toBe(path.join(dir, "etc/hosts"));
    expect(await resolveInRoot(dir, "/new/file")).toBe(path.join(dir, "new/file"));
  });

  it("finds programs on PATH and tells missing from not executable", async () => {
    await mkdir(path.join(dir, "bin"));
    await writeFile(path.join(dir, "bin/tool"), "#!/bin/sh\n");
    await chmod(path.join(dir, "bin/tool"), 0o755);
    await writeFile(path.join(dir, "bin/data"), "");
    await chmod(path.join(dir, "bin/data"), 0o644);
    await expect(checkExecutable(dir, "tool", ["PATH=/bin"], "/")).resolves.toBeUndefined();
    await expect(checkExecutable(dir, "/bin/tool", [], "/")).resolves.toBeUndefined();
    await expect(checkExecutable(dir, "nope", ["PATH=/bin"], "/")).rejects.toMatchObject({
      code: "EXEC_NOT_FOUND",
    });
    await expect(checkExecutable(dir, "./bin/nope", [], "/")).rejects.toMatchObject({
      code: "EXEC_NOT_FOUND",
      message: "./bin/nope: no such file",
    });
    await expect(checkExecutable(dir, "data", ["PATH=/bin"], "/")).rejects.toMatchObject({
      code: "EXEC_NOT_EXECUTABLE",
    });
  });

  it("looks programs up in the guest's own root as the kernel does", async () => {
    await mkdir(path.join(dir, "bin"));
    await writeFile(path.join(dir, "bin/tool"), "#!/bin/sh\n");
    await chmod(path.join(dir, "bin/tool"), 0o755);
    await writeFile(path.join(dir, "bin/data"), "");
    await symlink(path.join(dir, "bin/tool"), path.join(dir, "bin/link"));
    const bin = path.join(dir, "bin");
    await expect(checkExecutable("/", "tool", [`PATH=/nonexistent:${bin}`], "/")).resolves.toBeUndefined();
    await expect(checkExecutable("/", "link", [`PATH=${bin}`], "/")).resolves.toBeUndefined();
    await expect(checkExecutable("/", "./bin/tool", [], dir)).resolves.toBeUndefined();
    await expect(checkExecutable("/", "tool", ["PATH=/nonexistent"], "/")).rejects.toMatchObject({
      code: "EXEC_NOT_FOUND",
    });
    await expect(checkExecutable("/", "bin", [`PATH=${dir}`], "/")).rejects.toMatchObject({
      code: "EXEC_NOT_FOUND",
    });
    await expect(checkExecutable("/", "data", [`PATH=${bin}`], "/")).rejects.toMatchObject({
      code: "EXEC_NOT_EXECUTABLE",
    });
  });
});

describe("exit statuses", () => {
  it("decodes signals, and 128+N from wrappers", () => {
    expect(decodeExit(0, null, false)).toEqual({ exitCode: 0 });
    expect(decodeExit(null, "SIGKILL", false)).toEqual({ exitCode: 137, signal: "SIGKILL" });
    expect(decodeExit(143, null, true)).toEqual({ exitCode: 143, signal: "SIGTERM" });
    expect(decodeExit(143, null, false)).toEqual({ exitCode: 143 });
    expect(decodeExit(3, null, true)).toEqual({ exitCode: 3 });
  });
});

describe("output pump", () => {
  it("buffers while nobody reads, pauses past its limit, then delivers everything and EOF", async () => {
    const pair = await socketPair();
    try {
      const server = new Connection(pair.b, { role: "server", handler: async () => ({}) });
      const client = new Connection(pair.a, { role: "client" });
      await client.hello("t");
      const source = new PassThrough();
      const pump = new OutputPump(source, 1024);
      source.write(Buffer.alloc(600, 1));
      source.write(Buffer.alloc(600, 2));
      await new Promise((r) => setImmediate(r));
      expect(pump.buffered).toBe(1200);
      expect(source.isPaused()).toBe(true);
      source.end(Buffer.alloc(10, 3));
      const s = client.openStream();
      const chunks: Buffer[] = [];
      s.readable.on("data", (c: Buffer) => chunks.push(c));
      const ended = new Promise((r) => s.readable.once("end", r));
      pump.bind(server.stream(s.id));
      await ended;
      const all = Buffer.concat(chunks);
      expect(all.length).toBe(1210);
      expect(all[0]).toBe(1);
      expect(all[1209]).toBe(3);
    } finally {
      await pair.close();
    }
  });
});

describe("OCI spec", () => {
  it("isolates the container: namespaces, its own root and hostname, default env", () => {
    const spec = ociSpec({
      containerId: "c1",
      rootfs: "/run/cocoon/containers/c1/rootfs",
      readonlyRootfs: false,
      hostname: "h",
      args: ["sh"],
      env: ["A=1"],
      cwd: "/",
      uid: 0,
      gid: 0,
      etcFiles: { hosts: "/b/hosts", hostname: "/b/hostname" },
    }) as {
      process: { env: string[]; terminal: boolean };
      linux: { namespaces: { type: string }[] };
      hostname: string;
      root: { path: string };
    };
    expect(spec.linux.namespaces.map((n) => n.type).sort()).toEqual(["cgroup", "ipc", "mount", "pid", "uts"]);
    expect(spec.hostname).toBe("h");
    expect(spec.root.path).toBe("/run/cocoon/containers/c1/rootfs");
    expect(spec.process.env).toContain("A=1");
    expect(spec.process.env.some((e) => e.startsWith("PATH="))).toBe(true);
    expect(spec.process.terminal).toBe(false);
  });
});

describe("CLI argument parsing", () => {
  it("parses -e and --memory", () => {
    expect(parseEnv(["A=1", "B"], { B: "two" })).toEqual(["A=1", "B=two"]);
    expect(() => parseEnv(["MISSING"], {})).toThrow(/no such variable/);
    expect(() => parseEnv(["=x"], {})).toThrow(/the name is empty/);
    expect(parseMemory("512")).toBe(512);
    expect(parseMemory("2G")).toBe(2048);
    expect(parseMemory("768M")).toBe(768);
    expect(() => parseMemory("lots")).toThrow(/invalid --memory/);
    expect(() => parseMemory("16")).toThrow(/too small/);
  });
});
