import { spawn } from "node:child_process";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AcrnUuidPool } from "../../../src/hypervisor/acrn/uuid-pool.js";
import { RuntimePaths } from "../../../src/store/paths.js";
import { Store } from "../../../src/store/store.js";
import { ACRN_UUIDS } from "../../../src/vmm/acrn/uuids.js";
import { tempDir } from "../../helpers/tmp.js";

// Two cocoon processes allocating ACRN UUIDs at the same moment must never get the same one.

const WORKER = path.resolve(import.meta.dirname, "uuid-worker.ts");

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir("cocoon-acrn-pool-")));
afterEach(() => cleanup());

function worker(
  prefix: string,
  count: number,
  holdMs: number,
  peers: number,
  mode = "locked",
): Promise<string[]> {
  const args = [WORKER, dir, prefix, String(count), "8", String(holdMs), String(peers), mode];
  const child = spawn(process.execPath, ["--import", "tsx", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) =>
    child.once("exit", (code) =>
      code === 0 ? resolve(JSON.parse(out) as string[]) : reject(new Error(`worker exited ${code}: ${err}`)),
    ),
  );
}

const pool = () =>
  new AcrnUuidPool(
    new Store(
      new RuntimePaths({ stateRoot: dir, libRoot: path.join(dir, "lib"), assetsDir: path.join(dir, "a") }),
    ),
  );

describe("ACRN UUID pool across processes", () => {
  it("hands each of two concurrent processes different UUIDs, and refuses the ninth VM", async () => {
    const [a, b] = await Promise.all([worker("a", 5, 15, 2), worker("b", 5, 15, 2)]);
    const all = [...a!, ...b!];
    const uuids = all.filter((x) => x !== "ERR_RESOURCE_EXHAUSTED");
    expect(uuids).toHaveLength(8);
    expect(new Set(uuids).size).toBe(8);
    expect(new Set(uuids)).toEqual(new Set(ACRN_UUIDS));
    expect(all.filter((x) => x === "ERR_RESOURCE_EXHAUSTED")).toHaveLength(2);
    const busy = await pool().busy();
    expect(busy).toHaveLength(8);
    // What each process was told is what the pool recorded for it.
    for (const e of busy) {
      const [prefix, i] = e.owner.split("-");
      expect((prefix === "a" ? a : b)![Number(i)]).toBe(e.uuid);
    }
  }, 60_000);

  it("frees in one process what another allocated, and hands it out again", async () => {
    const [first] = await worker("a", 1, 0, 1);
    expect(first).toBe(ACRN_UUIDS[0]);
    expect(await pool().release(ACRN_UUIDS[0], "a-0")).toBe(true);
    expect(await worker("b", 1, 0, 1)).toEqual([ACRN_UUIDS[0]]);
  }, 60_000);

  it("control: the same workload without the lock hands out one UUID twice", async () => {
    const [a, b] = await Promise.all([worker("a", 1, 0, 2, "unlocked"), worker("b", 1, 0, 2, "unlocked")]);
    const uuids = [...a!, ...b!];
    expect(new Set(uuids).size).toBeLessThan(uuids.length);
  }, 60_000);
});
