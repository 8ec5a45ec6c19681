import { spawn, spawnSync } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { emptyHypervisorConfig } from "../hypervisor/config.js";
import { isProcessAlive } from "../host/proc.js";
import { silentLogger } from "../log.js";
import { OWNER_ENV } from "../monitor/spec.js";
import { RuntimePaths, rootsFromBase } from "../store/paths.js";
import { Store } from "../store/store.js";
import { validateSandboxConfig } from "./config.js";
import { collectGarbage, type GcContext } from "./gc.js";
import { SANDBOX_DOC, type SandboxDoc } from "./state.js";

let dir: string;
let cleanup: () => Promise<void>;
let ctx: GcContext;
const deleted: string[] = [];
const kills: (() => void)[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  const paths = new RuntimePaths({ ...rootsFromBase(dir), assetsDir: path.join(dir, "assets") });
  const store = new Store(paths);
  deleted.length = 0;
  ctx = {
    paths,
    store,
    logger: silentLogger(),
    deleteSandbox: async (id) => {
      deleted.push(id);
      await store.removeSandbox(id);
    },
  };
});
afterEach(async () => {
  for (const k of kills.splice(0)) k();
  await cleanup();
});

function record(id: string, extra: Partial<SandboxDoc> = {}): Promise<number> {
  const config = validateSandboxConfig({
    id,
    hypervisorType: "mock",
    hypervisorConfig: { ...emptyHypervisorConfig(), kernelPath: "/k", imagePath: "/i" },
    agentConfig: { dialTimeoutMs: 1_000, requestTimeoutMs: 1_000 },
  });
  return ctx.store.writeSandbox(id, "sandbox", SANDBOX_DOC, {
    config: { ...config, hypervisorConfig: config.hypervisorConfig as unknown as Record<string, unknown> },
    state: "ready",
    createdAt: new Date().toISOString(),
    containers: [],
    ...extra,
  });
}

const deadPid = (): number => spawnSync("true").pid!;

/** The mess a crash leaves: returns the orphan process's pid. */
async function makeMess(): Promise<number> {
  const { paths } = ctx;
  await record("half", { creating: { pid: deadPid() } });
  await record("alive", { creating: { pid: process.pid } });
  await mkdir(paths.vmDir("alive"), { recursive: true });
  await mkdir(paths.vmDir("ghost"), { recursive: true });
  await mkdir(paths.sharedDir("ghost"), { recursive: true });
  await mkdir(paths.locksDir, { recursive: true });
  const dead = JSON.stringify({ pid: deadPid(), nonce: "n", acquiredAt: new Date().toISOString() });
  await writeFile(path.join(paths.locksDir, "sbs-stale.lock"), dead);
  await writeFile(path.join(paths.locksDir, "sbs-stale.lock.abc.tmp"), dead);
  const live = JSON.stringify({ pid: process.pid, nonce: "m", acquiredAt: new Date().toISOString() });
  await writeFile(path.join(paths.locksDir, "sbs-held.lock"), live);
  const orphan = spawn("sleep", ["600"], {
    env: { ...process.env, [OWNER_ENV]: paths.vmDir("ghost") },
    stdio: "ignore",
  });
  kills.push(() => orphan.kill("SIGKILL"));
  await new Promise((r) => setTimeout(r, 100));
  return orphan.pid!;
}

describe("cocoon gc", () => {
  it("lists without removing in a dry run", async () => {
    const orphan = await makeMess();
    const found = await collectGarbage(ctx, { dryRun: true });
    expect(found.every((g) => !g.removed)).toBe(true);
    expect(found.map((g) => g.kind).sort()).toEqual([
      "directory",
      "directory",
      "lock",
      "lock",
      "process",
      "sandbox",
    ]);
    expect(deleted).toEqual([]);
    expect(await isProcessAlive(orphan)).toBe(true);
  });

  it("removes what no live owner holds and nothing else, and says what it removed", async () => {
    const orphan = await makeMess();
    const found = await collectGarbage(ctx);
    expect(found.filter((g) => !g.removed)).toEqual([]);
    expect(deleted).toEqual(["half"]);
    expect(found.find((g) => g.kind === "sandbox")?.what).toMatch(
      /^half \(creating the sandbox was interrupted/,
    );
    expect(found.find((g) => g.kind === "process")).toMatchObject({
      sandbox: "ghost",
      what: `sleep (pid ${orphan})`,
    });
    expect(await isProcessAlive(orphan)).toBe(false);
    expect(await readdir(path.join(ctx.paths.stateRoot, "vm"))).toEqual(["alive"]);
    expect(await readdir(path.join(ctx.paths.stateRoot, "shared"))).toEqual([]);
    expect(await readdir(ctx.paths.locksDir)).toEqual(["sbs-held.lock"]);
    expect(await ctx.store.listSandboxes()).toEqual(["alive"]);
    // a second run finds nothing
    expect(await collectGarbage(ctx)).toEqual([]);
  });
});
