/**
 * The agent's V8 code cache (issue 14, cold start). Under TCG, parsing and compiling the ~850 KB
 * agent bundle is a large part of the time from node's exec to the agent's first answer. The
 * image build runs the guest's own node binary once over the bundle (`loader.ts` with
 * WRITE_CODE_CACHE_FLAG): it compiles and evaluates the bundle, without starting the agent,
 * and saves V8's code cache, which then holds the bytecode of every function evaluation ran.
 * At boot the loader compiles the bundle with that cache.
 *
 * The fallback is V8's own: a cache it cannot use (another node or V8 version, other V8 flags,
 * a truncated file) is refused (`cachedDataRejected`) and the script is compiled from source as
 * without a cache; a missing cache file is a normal compile too. Either way the agent starts,
 * only slower, and the loader says so on stderr.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import vm from "node:vm";
import { markStart } from "./start-timeline.js";

/** Where the loader, the bundle, its code cache and its startup snapshot are in the guest. */
export const AGENT_GUEST_DIR = "/usr/lib/cocoon";
/** The agent bundle (CommonJS), next to the loader in the guest. */
export const AGENT_BUNDLE_FILE = "agent-bundle.cjs";
/** The code cache for AGENT_BUNDLE_FILE, produced at image build. */
export const AGENT_CODE_CACHE_FILE = "agent-bundle.codecache";
/** The loader's argument that writes the code cache instead of starting the agent. */
export const WRITE_CODE_CACHE_FLAG = "--write-code-cache";

/** What the bundle exports (src/guest/agent/main.ts). */
export interface AgentBundleExports {
  startAgent?: unknown;
}

/** The function node's CommonJS loader wraps a module's source in. */
export type CommonJsWrapper = (
  exports: AgentBundleExports,
  require: NodeJS.Require,
  module: { exports: AgentBundleExports },
  filename: string,
  dirname: string,
) => void;

export interface LoadedAgentBundle {
  exports: AgentBundleExports;
  /** The compiled script, for its code cache. */
  script: vm.Script;
  /** A cache was given and V8 refused it: the bundle was compiled from source. */
  cacheRejected: boolean;
}

/**
 * Compiles (with `cachedData` when given) and evaluates the bundle in `dir`, as node's CommonJS
 * loader would: the same wrapper both when the cache is written and when it is used, since V8
 * checks the cache against the source it compiles.
 */
export function loadAgentBundle(
  dir: string,
  cachedData?: Buffer,
  filename = path.join(dir, AGENT_BUNDLE_FILE),
): LoadedAgentBundle {
  const source = readFileSync(path.join(dir, AGENT_BUNDLE_FILE), "utf8");
  markStart("bundle read");
  // The wrapper's own line is line 0, so line numbers in stack traces are the file's.
  const script = new vm.Script(
    `(function (exports, require, module, __filename, __dirname) {\n${source}\n})`,
    {
      filename,
      lineOffset: -1,
      // No importModuleDynamically: the bundle must not use import(). A function from the code
      // cache keeps the host-defined options of the script that wrote the cache, not this one's,
      // so its import() would throw ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING in the guest; and the
      // option costs an ExperimentalWarning at each start.
      ...(cachedData ? { cachedData } : {}),
    },
  );
  markStart("bundle compiled");
  const wrapper = script.runInThisContext() as CommonJsWrapper;
  const module = { exports: {} as AgentBundleExports };
  wrapper(module.exports, createRequire(filename), module, filename, path.dirname(filename));
  markStart("bundle evaluated");
  return {
    exports: module.exports,
    script,
    cacheRejected: cachedData !== undefined && script.cachedDataRejected === true,
  };
}

/**
 * Image build: evaluates the bundle in `dir` (the agent is not started) and writes its code
 * cache. `filename` is the bundle's name in the guest: the functions from the cache keep the
 * name they were compiled under, in stack traces too.
 */
export function writeAgentCodeCache(dir: string, filename?: string): void {
  const { script } = loadAgentBundle(dir, undefined, filename);
  writeFileSync(path.join(dir, AGENT_CODE_CACHE_FILE), script.createCachedData());
}

/** The cache file's content, or undefined when there is none (a normal compile follows). */
export function readAgentCodeCache(dir: string): Buffer | undefined {
  try {
    return readFileSync(path.join(dir, AGENT_CODE_CACHE_FILE));
  } catch {
    return undefined;
  }
}
