import { readFile, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runtime } from "../../src/sandbox/runtime.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import { cocoon } from "../helpers/cli-process.js";
import { ASSETS_DIR, entriesUnder, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

/**
 * Snapshots of running sandboxes on real QEMU: a process counting in the guest keeps counting
 * in a sandbox restored from the snapshot (after its source is gone), guest files are as they
 * were, bad snapshots are refused before any VM starts, and `snapshot rm` leaves nothing.
 */

let root: string;
let cleanupRoot: () => Promise<void>;
let runtime: Runtime;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup: cleanupRoot } = await testRoot());
  const configPath = path.join(root, "cocoon.toml");
  await writeFile(configPath, "[hypervisor.qemu]\ndefault_memory = 512\n");
  env = { COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: configPath };
  runtime = await Runtime.open({ root, configPath, env: { COCOON_ASSETS: ASSETS_DIR } });
}, 20 * 60_000);

afterAll(async () => {
  for (const s of await runtime.listSandboxes().catch(() => []))
    await (await runtime.loadSandbox(s.id)).delete({ force: true }).catch(() => undefined);
  for (const s of await runtime.listSnapshots().catch(() => []))
    await runtime.snapshots.remove(s.name).catch(() => undefined);
  expect(await processesMentioning(root)).toEqual([]);
  await cleanupRoot();
});

async function cli(args: string[]): Promise<string> {
  const r = await cocoon(args, env).result;
  if (r.code !== 0) throw new Error(`cocoon ${args.join(" ")} exited ${r.code}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** Runs a short command in the guest and returns its stdout. */
async function inGuest(sb: Sandbox, script: string): Promise<string> {
  const out = await (await sb.exec({ process: { args: ["sh", "-c", script] }, inGuest: true })).output();
  expect(out.exit.exitCode, out.stderr.toString()).toBe(0);
  return out.stdout.toString().trim();
}

async function count(sb: Sandbox): Promise<number> {
  return Number(await inGuest(sb, "cat /tmp/count"));
}

/** Waits (without a time bound of its own: the test timeout is the bound) for the count to pass `n`. */
async function countPasses(sb: Sandbox, n: number): Promise<number> {
  for (;;) {
    const c = await count(sb);
    if (c > n) return c;
    await sleep(200);
  }
}

const COUNTER =
  "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done";

describe("snapshots of running sandboxes on real QEMU VMs", () => {
  it("a counting process keeps counting after snapshot create + run --from-snapshot, with its files", async () => {
    expect((await cli(["run", "-d", "--name", "source", "--", "sh", "-c", COUNTER])).trim()).toBe("source");
    const source = await runtime.loadSandbox("source");
    const c0 = await countPasses(source, 0);
    const pid = await inGuest(source, "pidof sh | tr ' ' '\\n' | sort -n | head -1");
    await inGuest(
      source,
      "echo written-before > /root/marker 2>/dev/null || echo written-before > /tmp/marker",
    );
    await source.release();

    const snap = JSON.parse(await cli(["snapshot", "create", "source", "snap1", "--json"])) as {
      name: string;
      stateBytes: number;
    };
    expect(snap.name).toBe("snap1");
    expect(snap.stateBytes).toBeGreaterThan(0);
    // The source ran on after the snapshot.
    const stillSource = await runtime.loadSandbox("source");
    const cAfterSnap = await count(stillSource);
    await countPasses(stillSource, cAfterSnap);
    await stillSource.release();
    // The snapshot owes nothing to its source.
    await cli(["rm", "-f", "source"]);

    expect((await cli(["run", "-d", "--from-snapshot", "snap1", "--name", "restored"])).trim()).toBe(
      "restored",
    );
    const restored = await runtime.loadSandbox("restored");
    expect(restored.state).toBe("running");
    const c1 = await count(restored);
    // It resumed where the snapshot was taken: past the count seen before, not from zero.
    expect(c1).toBeGreaterThanOrEqual(c0);
    await countPasses(restored, c1);
    // The same process, and the guest's files as they were.
    expect(await inGuest(restored, "pidof sh | tr ' ' '\\n' | sort -n | head -1")).toBe(pid);
    expect(await inGuest(restored, "cat /root/marker 2>/dev/null || cat /tmp/marker")).toBe("written-before");
    // The guest clock is the host's, not the snapshot's.
    const before = Math.floor(Date.now() / 1000);
    const guestSecs = Number(await inGuest(restored, "date +%s"));
    expect(guestSecs).toBeGreaterThanOrEqual(before - 2);
    expect(guestSecs).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 2);
    await restored.delete({ force: true });
  });

  it("the library restores it too (Runtime.restoreSandbox) and lists it", async () => {
    const list = await runtime.listSnapshots();
    expect(list.map((s) => [s.name, s.source, s.restorable])).toEqual([["snap1", "source", true]]);
    const sb = await runtime.restoreSandbox("snap1", { id: "lib-restored" });
    try {
      await countPasses(sb, await count(sb));
    } finally {
      await sb.delete({ force: true });
    }
  });

  it("refuses a snapshot from another cocoon version, another machine type or with a cut-short file", async () => {
    const meta = path.join(runtime.snapshots.dir("snap1"), "snapshot.json");
    const original = await readFile(meta, "utf8");
    const attempt = async (): Promise<{ code: number | null; stderr: string }> => {
      const r = await cocoon(["run", "-d", "--from-snapshot", "snap1", "--name", "bad"], env).result;
      return { code: r.code, stderr: r.stderr.toString() };
    };
    try {
      await writeFile(meta, original.replace(/"cocoonVersion": "[^"]*"/, '"cocoonVersion": "0.0.1-other"'));
      let r = await attempt();
      expect(r.code).toBe(125); // run: the command did not get to run
      expect(r.stderr).toMatch(/made by cocoon 0\.0\.1-other.*\[ERR_SNAPSHOT_INCOMPATIBLE\]/);

      await writeFile(meta, original.replace(/"machine": "microvm"/, '"machine": "q35"'));
      r = await attempt();
      expect(r.code).toBe(125); // run: the command did not get to run
      expect(r.stderr).toMatch(/machine type q35.*\[ERR_SNAPSHOT_INCOMPATIBLE\]/);

      await writeFile(meta, original);
      await truncate(path.join(runtime.snapshots.dir("snap1"), "state"), 4096);
      r = await attempt();
      expect(r.code).toBe(125); // run: the command did not get to run
      expect(r.stderr).toMatch(/snapshot "snap1" is damaged.*\[ERR_STATE_CORRUPT\]/);
    } finally {
      await writeFile(meta, original);
    }
    // Refused before a VM started: nothing of "bad" exists.
    expect(await runtime.listSandboxes()).toEqual([]);
    expect(await processesMentioning(path.join(root, "run", "vm"))).toEqual([]);
  });

  it("snapshot rm leaves no file, process or mount", async () => {
    expect((await cli(["snapshot", "rm", "snap1"])).trim()).toBe("snap1");
    expect(await entriesUnder(runtime.snapshots.root)).toEqual([]);
    expect(await processesMentioning(root)).toEqual([]);
    const mounts = (await readFile("/proc/self/mountinfo", "utf8"))
      .split("\n")
      .filter((l) => l.includes(root));
    expect(mounts).toEqual([]);
    const again = await cocoon(["snapshot", "rm", "snap1"], env).result;
    expect(again.code).toBe(3);
  });
});
