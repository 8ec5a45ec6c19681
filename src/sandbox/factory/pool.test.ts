import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../../test/helpers/tmp.js";
import { silentLogger } from "../../log.js";
import { writeDocument } from "../../store/atomic.js";
import { RuntimePaths, rootsFromBase } from "../../store/paths.js";
import { Store } from "../../store/store.js";
import { POOL_ENTRY_DOC, WarmPool } from "./pool.js";

/**
 * The warm pool's bookkeeping, without VMs: a live process stands in for a clone's QEMU. The
 * clones themselves are tested on real VMs in test/integration/factory.test.ts.
 */

let dir: string;
let cleanup: () => Promise<void>;
let pool: WarmPool;
const children: ChildProcess[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  const paths = new RuntimePaths({ ...rootsFromBase(dir), assetsDir: path.join(dir, "assets") });
  pool = new WarmPool(path.join(dir, "pool"), {
    store: new Store(paths),
    logger: silentLogger(),
    jailerBase: dir,
  });
  await mkdir(pool.dir, { recursive: true });
});
afterEach(async () => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
  await cleanup();
});

/** A ready clone whose "VM" is a live sleep (or the given dead pid). */
async function addReady(id: string, key: string, pid?: number): Promise<void> {
  let vmPid = pid;
  if (vmPid === undefined) {
    const c = spawn("sleep", ["60"], { stdio: "ignore" });
    children.push(c);
    vmPid = c.pid!;
  }
  await mkdir(path.join(pool.dir, id));
  await writeDocument(path.join(pool.dir, `${id}.ready.json`), POOL_ENTRY_DOC, {
    id,
    key,
    vmDir: path.join(pool.dir, id),
    createdAt: new Date().toISOString(),
    hypervisorState: { type: "qemu", pid: vmPid },
  });
}

/** A pid that is certainly not running: a child that has exited and been reaped. */
async function deadPid(): Promise<number> {
  const c = spawn("true", { stdio: "ignore" });
  await new Promise((r) => c.once("exit", r));
  return c.pid!;
}

describe("the warm pool", () => {
  it("hands a clone out once: two concurrent takes of one ready clone get it and nothing", async () => {
    await addReady("wp-aa", "k1");
    const [a, b] = await Promise.all([pool.take("k1"), pool.take("k1")]);
    expect([a?.id, b?.id].filter(Boolean)).toEqual(["wp-aa"]);
    expect(await pool.status()).toEqual({ ready: 0, starting: 0, taken: 1 });
    await pool.release((a ?? b)!);
    expect(await pool.status()).toEqual({ ready: 0, starting: 0, taken: 0 });
  });

  it("two concurrent takes of two ready clones get two different clones", async () => {
    await addReady("wp-aa", "k1");
    await addReady("wp-bb", "k1");
    const [a, b] = await Promise.all([pool.take("k1"), pool.take("k1")]);
    expect(new Set([a?.id, b?.id])).toEqual(new Set(["wp-aa", "wp-bb"]));
  });

  it("discards clones of another template and clones whose VM died, and takes the next", async () => {
    await addReady("wp-01", "old-key");
    await addReady("wp-02", "k1", await deadPid());
    await addReady("wp-03", "k1");
    expect((await pool.take("k1"))?.id).toBe("wp-03");
    expect((await readdir(pool.dir)).sort()).toEqual(["wp-03", `wp-03.taken-${process.pid}.json`]);
  });

  it("gc removes records whose holder died and ready clones whose VM died, not live ones", async () => {
    const dead = await deadPid();
    await addReady("wp-01", "k1");
    await addReady("wp-02", "k1", dead);
    await mkdir(path.join(pool.dir, "wp-03"));
    await writeFile(path.join(pool.dir, `wp-03.starting-${dead}.json`), "");
    await mkdir(path.join(pool.dir, "wp-04"));
    await writeFile(path.join(pool.dir, `wp-04.taken-${dead}.json`), "");
    await mkdir(path.join(pool.dir, "wp-05"));
    await writeFile(path.join(pool.dir, `wp-05.taken-${dead}.json`), "");
    const inUse = path.join(pool.dir, "wp-05");
    const removed = await pool.collect({ vmDirsInUse: async () => new Set([inUse]) });
    expect(removed.sort()).toEqual([
      "warm clone wp-02 (ready)",
      "warm clone wp-03 (starting)",
      "warm clone wp-04 (taken)",
      "warm clone wp-05 (taken)",
    ]);
    // wp-05's sandbox owns its VM directory now: only the record went.
    expect((await readdir(pool.dir)).sort()).toEqual(["wp-01", "wp-01.ready.json", "wp-05"]);
    // A directory nobody records or uses goes too.
    await mkdir(path.join(pool.dir, "wp-06"));
    expect(await pool.collect({ vmDirsInUse: async () => new Set([inUse]) })).toEqual([
      "warm clone wp-06 (no record)",
    ]);
    expect((await readdir(pool.dir)).sort()).toEqual(["wp-01", "wp-01.ready.json", "wp-05"]);
  });

  it("destroy removes every clone and record, not the VMs sandboxes took", async () => {
    await addReady("wp-01", "k1");
    await mkdir(path.join(pool.dir, "wp-02"));
    await mkdir(path.join(pool.dir, "wp-03"));
    const used = path.join(pool.dir, "wp-03");
    expect(await pool.destroy(async () => new Set([used]))).toBe(1);
    expect(await readdir(pool.dir)).toEqual(["wp-03"]);
  });
});
