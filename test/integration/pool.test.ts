import { writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PoolStatus } from "../../src/sandbox/factory/pool.js";
import { Runtime } from "../../src/sandbox/runtime.js";
import { cocoon } from "../helpers/cli-process.js";
import { ASSETS_DIR, entriesUnder, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

/**
 * The warm pool (Kata's VM cache) on real QEMU: `[factory] cache = 2` keeps two clones booted;
 * a create takes one and the pool refills in the background; two creates at once, from two
 * cocoon processes, get two different clones; `factory destroy` leaves nothing behind.
 */

let root: string;
let cleanupRoot: () => Promise<void>;
let runtime: Runtime;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  const configPath = path.join(root, "cocoon.toml");
  await writeFile(
    configPath,
    "[hypervisor.qemu]\ndefault_memory = 512\n\n[factory]\nenable_template = true\ncache = 2\n",
  );
  env = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: configPath };
  runtime = await Runtime.open({ root, configPath, env: { COCOON_ASSETS: ASSETS_DIR } });
}, 20 * 60_000);

afterAll(async () => {
  for (const s of await runtime.listSandboxes().catch(() => []))
    await (await runtime.loadSandbox(s.id)).delete({ force: true }).catch(() => undefined);
  await runtime.factory.destroy().catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function cli(args: string[]): Promise<string> {
  const r = await cocoon(args, env).result;
  if (r.code !== 0) throw new Error(`cocoon ${args.join(" ")} exited ${r.code}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

async function poolStatus(): Promise<PoolStatus> {
  return (JSON.parse(await cli(["factory", "status", "--json"])) as { pool: PoolStatus }).pool;
}

/** Waits (bounded by the test timeout) until the pool holds `n` ready clones. */
async function poolHolds(n: number): Promise<void> {
  while ((await poolStatus()).ready < n) await sleep(500);
}

/** The VM directory a sandbox runs in (a pool clone keeps its own). */
async function vmDirOf(id: string): Promise<string> {
  const sb = await runtime.loadSandbox(id);
  const dir = path.dirname(sb.consoleLogPath());
  await sb.release();
  return dir;
}

describe("the warm pool on real QEMU VMs", () => {
  it("a create starts the refill; the next create takes a ready clone and the pool refills", async () => {
    await cli(["factory", "init"]);
    // Nothing is ready yet: this create clones directly, and starts the filler.
    await cli(["create", "--name", "first", "--", "sleep", "600"]);
    expect(await vmDirOf("first")).toBe(path.join(root, "run", "vm", "first"));
    await poolHolds(2);
    await cli(["create", "--name", "second", "--", "sleep", "600"]);
    const dir = await vmDirOf("second");
    expect(path.dirname(dir)).toBe(runtime.factory.pool.dir);
    // It works like any sandbox, under its own identity.
    const sb = await runtime.loadSandbox("second");
    await sb.start({ keepRunning: true });
    const out = await (await sb.exec({ process: { args: ["hostname"] }, inGuest: true })).output();
    expect(out.stdout.toString()).toBe("second\n");
    await sb.release();
    await poolHolds(2);
  });

  it("two creates at once from two processes get two different clones", async () => {
    await poolHolds(2);
    await Promise.all([
      cli(["create", "--name", "con-a", "--", "sleep", "600"]),
      cli(["create", "--name", "con-b", "--", "sleep", "600"]),
    ]);
    const [a, b] = [await vmDirOf("con-a"), await vmDirOf("con-b")];
    expect(path.dirname(a)).toBe(runtime.factory.pool.dir);
    expect(path.dirname(b)).toBe(runtime.factory.pool.dir);
    expect(a).not.toBe(b);
    for (const id of ["con-a", "con-b"]) {
      const sb = await runtime.loadSandbox(id);
      await sb.start({ keepRunning: true });
      const out = await (await sb.exec({ process: { args: ["hostname"] }, inGuest: true })).output();
      expect(out.stdout.toString()).toBe(`${id}\n`);
      await sb.delete({ force: true });
    }
    // Deleting a sandbox made from a clone removes the clone's VM directory.
    expect(await entriesUnder(a)).toEqual([]);
  });

  it("factory destroy stops the warm clones and leaves sandboxes made from clones running", async () => {
    await poolHolds(2);
    const out = JSON.parse(await cli(["factory", "destroy", "--json"])) as {
      removed: boolean;
      clones: number;
    };
    expect(out).toEqual({ removed: true, clones: 2 });
    expect(await poolStatus()).toEqual({ ready: 0, starting: 0, taken: 0 });
    const second = await runtime.loadSandbox("second");
    const hn = await (await second.exec({ process: { args: ["hostname"] }, inGuest: true })).output();
    expect(hn.stdout.toString()).toBe("second\n");
    await second.delete({ force: true });
    await (await runtime.loadSandbox("first")).delete({ force: true });
    expect(await entriesUnder(runtime.factory.pool.dir)).toEqual([]);
    expect(await processesMentioning(root)).toEqual([]);
  });
});
