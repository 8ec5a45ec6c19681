import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  AGENT_BUNDLE_FILE,
  AGENT_CODE_CACHE_FILE,
  loadAgentBundle,
  readAgentCodeCache,
  writeAgentCodeCache,
} from "./code-cache.js";

// A stand-in bundle: CommonJS that uses require and exports startAgent.
const BUNDLE = `"use strict";
const { basename } = require("node:path");
module.exports = {
  startAgent: () => basename(__filename),
  line: () => new Error("here").stack,
  dynamic: () => import("node:os").then((os) => typeof os.cpus),
};
`;

describe("agent code cache", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "cocoon-codecache-"));
    await writeFile(path.join(dir, AGENT_BUNDLE_FILE), BUNDLE);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("writes a cache that V8 then accepts, and the bundle behaves as loaded without one", () => {
    expect(readAgentCodeCache(dir)).toBeUndefined();
    writeAgentCodeCache(dir);
    const cache = readAgentCodeCache(dir);
    expect(cache?.length).toBeGreaterThan(0);
    const loaded = loadAgentBundle(dir, cache);
    expect(loaded.cacheRejected).toBe(false);
    expect((loaded.exports.startAgent as () => string)()).toBe(AGENT_BUNDLE_FILE);
  });

  it("compiles from source when V8 refuses the cache", async () => {
    await writeFile(path.join(dir, AGENT_CODE_CACHE_FILE), "not a code cache");
    const loaded = loadAgentBundle(dir, readAgentCodeCache(dir));
    expect(loaded.cacheRejected).toBe(true);
    expect((loaded.exports.startAgent as () => string)()).toBe(AGENT_BUNDLE_FILE);
  });

  it("keeps the file's line numbers in stack traces", () => {
    const { exports } = loadAgentBundle(dir);
    const stack = (exports as { line: () => string }).line();
    expect(stack).toContain(`${path.join(dir, AGENT_BUNDLE_FILE)}:5:`);
  });

  it("lets the bundle import() a builtin (the profiling hook does)", async () => {
    writeAgentCodeCache(dir);
    const { exports } = loadAgentBundle(dir, readAgentCodeCache(dir));
    await expect((exports as { dynamic: () => Promise<string> }).dynamic()).resolves.toBe("function");
  });
});
