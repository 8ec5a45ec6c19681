import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { tempDir } from "../../test/helpers/tmp.js";
import { RuntimePaths, checkId, rootsFromBase } from "./paths.js";
import { Store } from "./store.js";

const kind = { schema: "cocoon.t", version: 1, data: z.object({ v: z.number() }) };

let dir: string;
let cleanup: () => Promise<void>;
let store: Store;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  const roots = rootsFromBase(dir);
  store = new Store(new RuntimePaths({ ...roots, assetsDir: `${roots.libRoot}/assets` }));
});
afterEach(() => cleanup());

describe("store", () => {
  it("lays sandboxes out under <state>/sbs/<id> and lists them", async () => {
    expect(await store.listSandboxes()).toEqual([]);
    await store.writeSandbox("b", "state", kind, { v: 1 });
    await store.writeSandbox("a", "state", kind, { v: 2 });
    expect(await store.listSandboxes()).toEqual(["a", "b"]);
    expect(store.paths.sandboxDir("a")).toBe(`${dir}/run/sbs/a`);
    expect((await store.readSandbox("a", "state", kind))?.data).toEqual({ v: 2 });
    await store.removeSandbox("a");
    await store.removeSandbox("a");
    expect(await store.sandboxExists("a")).toBe(false);
  });

  it("keeps global documents apart from sandboxes", async () => {
    await store.writeGlobal("pool", kind, { v: 3 });
    expect((await store.readGlobal("pool", kind))?.data).toEqual({ v: 3 });
    expect(await store.listSandboxes()).toEqual([]);
  });

  it("holds a sandbox lock while the directory is removed", async () => {
    await store.writeSandbox("x", "state", kind, { v: 1 });
    await store.withSandboxLock("x", () => store.removeSandbox("x"));
    expect(await store.sandboxExists("x")).toBe(false);
  });

  it("refuses ids that are not safe path components", () => {
    for (const bad of ["", "../x", "a/b", ".hidden", "x".repeat(65), "sp ace"]) {
      expect(() => checkId("sandbox", bad)).toThrow(
        expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }),
      );
    }
    expect(checkId("sandbox", "web-1.a_b")).toBe("web-1.a_b");
    expect(() => store.paths.sandboxDir("../etc")).toThrow(/invalid sandbox id/);
  });
});
