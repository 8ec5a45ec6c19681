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
import { bundleAgent } from "../image/rootfs.js";

// A stand-in bundle: CommonJS that uses require and exports startAgent.
const BUNDLE = `"use strict";
const { basename } = require("node:path");
module.exports = {
  startAgent: () => basename(__filename),
  line: () => new Error("here").stack,
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

  it("names the bundle as given (as in the guest) in stack traces", () => {
    const { exports } = loadAgentBundle(dir, undefined, "/usr/lib/cocoon/agent-bundle.cjs");
    const stack = (exports as { line: () => string }).line();
    expect(stack).toContain("/usr/lib/cocoon/agent-bundle.cjs:5:");
  });

  // A function from the code cache keeps the dynamic import callback of the process that wrote
  // the cache, which a fresh node does not have: import() in the guest would throw
  // ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING (the agent died so under cocoon.cpuprof=1).
  it("the real agent bundle has no dynamic import()", async () => {
    const { bundle } = await bundleAgent();
    expect(bundle).not.toMatch(/\bimport\(\s*["'`]/);
  }, 60_000);
});
