import { mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { tempDir } from "../../../test/helpers/tmp.js";
import { acquireLock } from "../../store/lock.js";
import { collectPartialSnapshots } from "./partial.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

it("removes half-made snapshots nobody is making, keeps the one being made and finished ones", async () => {
  await mkdir(path.join(dir, "done"));
  await mkdir(path.join(dir, "crashed.partial"));
  await mkdir(path.join(dir, "busy.partial"));
  const lock = await acquireLock(path.join(dir, "busy.lock"));
  try {
    expect(await collectPartialSnapshots(dir, { dryRun: true })).toEqual([path.join(dir, "crashed.partial")]);
    expect(await readdir(dir)).toContain("crashed.partial");
    expect(await collectPartialSnapshots(dir)).toEqual([path.join(dir, "crashed.partial")]);
    expect((await readdir(dir)).sort()).toEqual(["busy.lock", "busy.partial", "done"]);
  } finally {
    await lock.release();
  }
});
