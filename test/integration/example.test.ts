import { execFileSync } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ASSETS_DIR, guestAssets, processesMentioning, testRoot } from "../helpers/env.js";

let root: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  await guestAssets();
  ({ root, cleanup } = await testRoot());
}, 20 * 60_000);

afterAll(async () => {
  expect(await processesMentioning(root)).toEqual([]);
  await cleanup();
});

describe("the README's library example", () => {
  it("runs as documented", () => {
    const example = path.resolve(import.meta.dirname, "../../examples/library.mjs");
    const out = execFileSync(process.execPath, [example], {
      env: { ...process.env, COCOON_ROOT: root, COCOON_ASSETS: ASSETS_DIR, COCOON_CONFIG: "" },
      encoding: "utf8",
      timeout: 180_000,
    });
    expect(out).toMatch(/^hello from Linux 6\.1\.\d+ \(exit 0\)\n$/);
  });
});
