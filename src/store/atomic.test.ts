import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { tempDir } from "../../test/helpers/tmp.js";
import { readDocument, writeDocument, type DocumentKind } from "./atomic.js";

const kind: DocumentKind<{ name: string; n: number }> = {
  schema: "cocoon.test",
  version: 2,
  data: z.object({ name: z.string(), n: z.number() }),
  migrate: (version, data) => (version === 1 ? { ...(data as object), n: 0 } : data),
};

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

describe("atomic documents", () => {
  it("round-trips and counts revisions, leaving no temp files", async () => {
    const file = path.join(dir, "sub", "doc.json");
    expect(await readDocument(file, kind)).toBeUndefined();
    expect(await writeDocument(file, kind, { name: "a", n: 1 })).toBe(1);
    expect(await writeDocument(file, kind, { name: "a", n: 2 })).toBe(2);
    expect(await readDocument(file, kind)).toEqual({ data: { name: "a", n: 2 }, revision: 2, version: 2 });
    expect(await readdir(path.dirname(file))).toEqual(["doc.json"]);
  });

  it("refuses invalid data before writing", async () => {
    const file = path.join(dir, "doc.json");
    await expect(writeDocument(file, kind, { name: 1 } as never)).rejects.toThrow();
    expect(await readdir(dir)).toEqual([]);
  });

  it("reports a truncated file as corrupt and never overwrites it", async () => {
    const file = path.join(dir, "doc.json");
    await writeDocument(file, kind, { name: "a", n: 1 });
    const full = await readFile(file, "utf8");
    const truncated = full.slice(0, full.length / 2);
    await writeFile(file, truncated);
    await expect(readDocument(file, kind)).rejects.toMatchObject({
      code: "ERR_STATE_CORRUPT",
      message: expect.stringContaining(`state file ${file} is corrupt`),
    });
    await expect(writeDocument(file, kind, { name: "b", n: 2 })).rejects.toMatchObject({
      code: "ERR_STATE_CORRUPT",
    });
    expect(await readFile(file, "utf8")).toBe(truncated);
  });

  it("reports empty files, foreign schemas and bad data as corrupt", async () => {
    const file = path.join(dir, "doc.json");
    await writeFile(file, "");
    await expect(readDocument(file, kind)).rejects.toMatchObject({
      message: expect.stringContaining("empty file"),
    });
    await writeFile(
      file,
      JSON.stringify({ schema: "other", version: 1, revision: 1, updatedAt: "", data: {} }),
    );
    await expect(readDocument(file, kind)).rejects.toMatchObject({
      message: expect.stringContaining('holds "other"'),
    });
    await writeFile(
      file,
      JSON.stringify({
        schema: "cocoon.test",
        version: 2,
        revision: 1,
        updatedAt: "",
        data: { name: 5, n: 1 },
      }),
    );
    await expect(readDocument(file, kind)).rejects.toMatchObject({
      message: expect.stringContaining("invalid data at name"),
    });
    await writeFile(file, JSON.stringify([1, 2]));
    await expect(readDocument(file, kind)).rejects.toMatchObject({ code: "ERR_STATE_CORRUPT" });
  });

  it("refuses a newer schema version and migrates an older one", async () => {
    const file = path.join(dir, "doc.json");
    await writeFile(
      file,
      JSON.stringify({ schema: "cocoon.test", version: 3, revision: 1, updatedAt: "", data: {} }),
    );
    await expect(readDocument(file, kind)).rejects.toMatchObject({ code: "ERR_STATE_VERSION" });
    await writeFile(
      file,
      JSON.stringify({
        schema: "cocoon.test",
        version: 1,
        revision: 4,
        updatedAt: "",
        data: { name: "old" },
      }),
    );
    expect(await readDocument(file, kind)).toEqual({ data: { name: "old", n: 0 }, revision: 4, version: 2 });
  });

  it("detects a lost update with expectedRevision", async () => {
    const file = path.join(dir, "doc.json");
    await writeDocument(file, kind, { name: "a", n: 1 });
    await writeDocument(file, kind, { name: "a", n: 2 }, { expectedRevision: 1 });
    await expect(
      writeDocument(file, kind, { name: "a", n: 3 }, { expectedRevision: 1 }),
    ).rejects.toMatchObject({
      message: expect.stringContaining("changed underneath"),
    });
  });
});
