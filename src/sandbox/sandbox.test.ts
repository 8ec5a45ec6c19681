import { mkdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { Connection } from "../agent/protocol/connection.js";
import { emptyHypervisorConfig } from "../hypervisor/config.js";
import { silentLogger } from "../log.js";
import { dispatcher, type Handlers } from "../guest/agent/dispatch.js";
import { AgentOpError } from "../guest/agent/errors.js";
import { RuntimePaths, rootsFromBase } from "../store/paths.js";
import { Store } from "../store/store.js";
import { validateSandboxConfig } from "./config.js";
import { Sandbox, type SandboxContext } from "./sandbox.js";
import { checkTransition, SANDBOX_STATES } from "./state.js";

let dir: string;
let cleanup: () => Promise<void>;
let ctx: SandboxContext;
const servers: net.Server[] = [];
const sockets = new Set<net.Socket>();
const calls: string[] = [];

/**
 * A stand-in for the guest agent, served where the mock hypervisor says the agent is: the
 * sandbox layer's orchestration can be checked without a VM (the real agent runs in the
 * integration tests).
 */
const fakeAgent: Handlers = {
  "health.check": async () => ({ status: "SERVING" }),
  "sandbox.create": async (p) => (calls.push(`sandbox.create ${p.hostname}`), { mounted: [] }),
  "sandbox.destroy": async () => (calls.push("sandbox.destroy"), { killed: 0 }),
  "container.create": async (p) => (
    calls.push(`container.create ${p.containerId} ${p.rootfs.driver}`),
    { containerId: p.containerId, state: "created", hostname: p.hostname, rootfs: "/x" }
  ),
  "container.start": async (p) => (calls.push(`container.start ${p.containerId}`), { pid: 42 }),
  "process.start": async (p) => {
    if (p.process.args[0] === "missing")
      throw new AgentOpError("EXEC_NOT_FOUND", "missing: executable file not found in $PATH");
    calls.push(`process.start ${p.execId}`);
    return { pid: 43 };
  },
  "process.list": async () => ({ processes: [] }),
};

async function serveFakeAgent(vmDir: string): Promise<void> {
  await mkdir(vmDir, { recursive: true });
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.once("close", () => sockets.delete(sock));
    new Connection(sock, { role: "server", handler: dispatcher(fakeAgent), agentVersion: "fake" });
  });
  await new Promise<void>((r) => server.listen(path.join(vmDir, "agent.sock"), r));
  servers.push(server);
}

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  const roots = rootsFromBase(dir);
  const paths = new RuntimePaths({ ...roots, assetsDir: path.join(dir, "assets") });
  ctx = { paths, store: new Store(paths), logger: silentLogger() };
  calls.length = 0;
});

afterEach(async () => {
  for (const sock of sockets) sock.destroy();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  await cleanup();
});

function config(id: string, extra: Record<string, unknown> = {}) {
  return validateSandboxConfig({
    id,
    hypervisorType: "mock",
    hypervisorConfig: {
      ...emptyHypervisorConfig(),
      kernelPath: "/k",
      imagePath: "/i",
      sharedFS: "virtio-fs",
    },
    agentConfig: { dialTimeoutMs: 5_000, requestTimeoutMs: 5_000 },
    ...extra,
  });
}

async function mockSandbox(id: string, extra: Record<string, unknown> = {}): Promise<Sandbox> {
  await serveFakeAgent(ctx.paths.vmDir(id));
  return Sandbox.create(ctx, config(id, extra));
}

describe("sandbox config", () => {
  it("refuses an empty id", () => {
    expect(() => config("")).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: "the sandbox id is empty" }),
    );
  });

  it("refuses an unknown hypervisor type instead of falling back", () => {
    expect(() => validateSandboxConfig({ ...config("a"), hypervisorType: "xen" })).toThrow(
      expect.objectContaining({
        code: "ERR_UNKNOWN_HYPERVISOR",
        message: expect.stringContaining('unknown hypervisor type "xen"'),
      }),
    );
  });

  it("refuses duplicate containers, bad ids and a guest process next to containers", () => {
    const c = { id: "c", rootfs: { type: "dir", path: "/r" }, process: { args: ["sh"] } } as const;
    expect(() => config("a", { containers: [c, c] })).toThrow(/two containers have the id c/);
    expect(() => config("a", { containers: [{ ...c, id: "../x" }] })).toThrow(
      /invalid sandbox config at containers.0.id/,
    );
    expect(() => config("a", { containers: [c], guestProcess: { args: ["sh"] } })).toThrow(
      /either containers or a guest process/,
    );
    expect(() => config("a", { containers: [{ ...c, rootfs: { type: "dir", path: "relative" } }] })).toThrow(
      /must be absolute/,
    );
  });
});

describe("sandbox state machine", () => {
  it("allows exactly ready→running|stopped, running→paused|stopped, paused→running|stopped", () => {
    const allowed = new Set([
      "ready>running",
      "ready>stopped",
      "running>paused",
      "running>stopped",
      "paused>running",
      "paused>stopped",
    ]);
    for (const from of SANDBOX_STATES) {
      for (const to of SANDBOX_STATES) {
        const ok = allowed.has(`${from}>${to}`);
        if (ok) expect(() => checkTransition("s", from, to)).not.toThrow();
        else
          expect(() => checkTransition("s", from, to)).toThrow(
            expect.objectContaining({ code: "ERR_INVALID_STATE" }),
          );
      }
    }
  });
});

describe("Sandbox on the mock hypervisor", () => {
  it("walks ready → running ⇄ paused → stopped, persisting every step", async () => {
    const sb = await mockSandbox("life", { guestProcess: { args: ["sleep", "1"] } });
    expect(sb.state).toBe("ready");
    expect(calls).toEqual(["sandbox.create life"]);
    await sb.start();
    expect(calls).toContain("process.start main");
    const other = await Sandbox.load(ctx, "life");
    expect(other.state).toBe("running");
    await other.pause();
    await expect(sb.exec({ process: { args: ["true"] } })).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
    });
    await sb.resume();
    await expect(sb.resume()).rejects.toMatchObject({ code: "ERR_INVALID_STATE" });
    await sb.stop();
    expect(calls).toContain("sandbox.destroy");
    await expect(sb.pause()).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
      message: "sandbox life cannot go from stopped to paused",
    });
    await sb.delete();
    expect(await ctx.store.sandboxExists("life")).toBe(false);
    await expect(Sandbox.load(ctx, "life")).rejects.toMatchObject({
      code: "ERR_NOT_FOUND",
      message: 'no sandbox "life"',
    });
  });

  it("deletes only from ready, paused or stopped unless forced", async () => {
    const sb = await mockSandbox("del", { guestProcess: { args: ["sleep", "1"] } });
    await sb.start();
    await expect(sb.delete()).rejects.toMatchObject({
      code: "ERR_INVALID_STATE",
      message: expect.stringContaining("is running"),
    });
    await sb.pause();
    await sb.delete();
    expect(await ctx.store.sandboxExists("del")).toBe(false);
  });

  it("refuses a second sandbox with the same id", async () => {
    await mockSandbox("dup", { guestProcess: { args: ["true"] } });
    await expect(Sandbox.create(ctx, config("dup"))).rejects.toMatchObject({ code: "ERR_ALREADY_EXISTS" });
  });

  it("creates containers on their shared rootfs and tells missing containers apart", async () => {
    const rootfs = path.join(dir, "rootfs");
    await mkdir(rootfs);
    const sb = await mockSandbox("ctr", {
      containers: [{ id: "web", rootfs: { type: "dir", path: rootfs }, process: { args: ["sh"] } }],
    });
    expect(calls).toContain("container.create web virtio-fs");
    expect(sb.findContainer("web").rootfs).toMatchObject({ kind: "share", hostPath: rootfs });
    expect(() => sb.findContainer("")).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: "the container id is empty" }),
    );
    expect(() => sb.findContainer("db")).toThrow(
      expect.objectContaining({ code: "ERR_NOT_FOUND", message: 'sandbox ctr has no container "db"' }),
    );
    expect(sb.getAllContainers().map((c) => c.config.id)).toEqual(["web"]);
    await sb.start();
    expect(calls).toContain("container.start web");
    await expect(sb.exec({ containerId: "db", process: { args: ["true"] } })).rejects.toMatchObject({
      code: "ERR_NOT_FOUND",
    });
    await expect(sb.exec({ process: { args: ["missing"] } })).rejects.toMatchObject({
      code: "ERR_EXEC_NOT_FOUND",
    });
  });

  it("refuses a rootfs that is missing, leaving nothing behind", async () => {
    await serveFakeAgent(ctx.paths.vmDir("gone"));
    await expect(
      Sandbox.create(
        ctx,
        config("gone", {
          containers: [
            { id: "c", rootfs: { type: "tar", path: path.join(dir, "no.tar") }, process: { args: ["sh"] } },
          ],
        }),
      ),
    ).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: `the rootfs tarball ${path.join(dir, "no.tar")} does not exist`,
    });
    expect(await ctx.store.sandboxExists("gone")).toBe(false);
  });

  it("sets annotations safely from concurrent writers", async () => {
    const sb = await mockSandbox("ann", { guestProcess: { args: ["true"] }, annotations: { keep: "1" } });
    const twin = await Sandbox.load(ctx, "ann");
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? sb : twin).setAnnotations({ [`k${i}`]: String(i) })),
    );
    const fresh = await Sandbox.load(ctx, "ann");
    expect(fresh.getAnnotations()).toEqual({
      keep: "1",
      ...Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`, String(i)])),
    });
  });

  it("reports a corrupt state file instead of overwriting it", async () => {
    await mockSandbox("bad", { guestProcess: { args: ["true"] } });
    await writeFile(path.join(ctx.paths.sandboxDir("bad"), "sandbox.json"), "{ truncated");
    await expect(Sandbox.load(ctx, "bad")).rejects.toMatchObject({ code: "ERR_STATE_CORRUPT" });
  });
});
