import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../../test/helpers/tmp.js";
import { RuntimePaths } from "../../store/paths.js";
import { Store } from "../../store/store.js";
import { ACRN_UUIDS } from "../../vmm/acrn/uuids.js";
import { AcrnUuidPool } from "./uuid-pool.js";

let dir: string;
let cleanup: () => Promise<void>;
let store: Store;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir("cocoon-acrn-uuid-"));
  store = new Store(
    new RuntimePaths({
      stateRoot: path.join(dir, "run"),
      libRoot: path.join(dir, "lib"),
      assetsDir: path.join(dir, "a"),
    }),
  );
});
afterEach(() => cleanup());

describe("ACRN UUID pool", () => {
  it("takes the first free UUID in ACRN's order and frees it for its owner only", async () => {
    const pool = new AcrnUuidPool(store);
    expect(await pool.allocate("a", 8)).toBe(ACRN_UUIDS[0]);
    expect(await pool.allocate("b", 8)).toBe(ACRN_UUIDS[1]);
    expect(await pool.release(ACRN_UUIDS[0], "b")).toBe(false); // not b's
    expect(await pool.release(ACRN_UUIDS[0], "a")).toBe(true);
    expect(await pool.release(ACRN_UUIDS[0], "a")).toBe(false); // already free
    expect(await pool.allocate("c", 8)).toBe(ACRN_UUIDS[0]); // the freed one comes back first
    expect((await pool.busy()).map((e) => e.owner)).toEqual(["c", "b"]);
  });

  it("gives an owner that already holds a UUID the same one back", async () => {
    const pool = new AcrnUuidPool(store);
    const first = await pool.allocate("a", 8);
    expect(await pool.allocate("a", 8)).toBe(first);
    expect(await pool.busy()).toHaveLength(1);
  });

  it("refuses past the platform limit, naming it, and recovers after a release", async () => {
    const pool = new AcrnUuidPool(store);
    await pool.allocate("a", 2);
    await pool.allocate("b", 2);
    await expect(pool.allocate("c", 2)).rejects.toMatchObject({
      code: "ERR_RESOURCE_EXHAUSTED",
      message: "no free ACRN VM UUID: all 2 VMs this ACRN platform allows are running (limit 2)",
    });
    await pool.release(ACRN_UUIDS[1], "b");
    expect(await pool.allocate("c", 2)).toBe(ACRN_UUIDS[1]);
  });

  it("never goes past ACRN's eight UUIDs, whatever the limit says", async () => {
    const pool = new AcrnUuidPool(store);
    for (let i = 0; i < 8; i++) await pool.allocate(`vm${i}`, 255);
    await expect(pool.allocate("vm8", 255)).rejects.toMatchObject({
      code: "ERR_RESOURCE_EXHAUSTED",
      message: expect.stringContaining("limit 8"),
    });
    expect(new Set((await pool.busy()).map((e) => e.uuid)).size).toBe(8);
  });

  it("refuses a limit of zero with its own message", async () => {
    await expect(new AcrnUuidPool(store).allocate("a", 0)).rejects.toMatchObject({
      code: "ERR_RESOURCE_EXHAUSTED",
      message: expect.stringContaining("limit is 0"),
    });
  });

  it("leaves a corrupt pool file alone and says so", async () => {
    const file = path.join(store.paths.globalDir, "acrn-uuids.json");
    await new AcrnUuidPool(store).allocate("a", 8);
    await writeFile(
      file,
      JSON.stringify({
        schema: "cocoon.acrn-uuid-pool",
        version: 1,
        revision: 1,
        updatedAt: "x",
        data: { busy: [{ uuid: "nope", owner: "a", since: "x" }] },
      }),
    );
    await expect(new AcrnUuidPool(store).allocate("b", 8)).rejects.toMatchObject({
      code: "ERR_STATE_CORRUPT",
    });
  });
});
