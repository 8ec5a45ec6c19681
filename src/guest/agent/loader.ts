/**
 * What the guest's node runs (the launcher in ../image/rootfs.ts) when it does not start from
 * the agent's startup snapshot: loads the agent bundle with its V8 code cache and starts the
 * agent. At image build it also makes both: with WRITE_CODE_CACHE_FLAG it writes the code
 * cache (code-cache.ts), and under `node --build-snapshot` it evaluates the bundle into the
 * startup snapshot, whose main starts the agent (snapshot.ts).
 */
import path from "node:path";
import {
  AGENT_BUNDLE_FILE,
  AGENT_GUEST_DIR,
  type AgentBundleExports,
  loadAgentBundle,
  readAgentCodeCache,
  WRITE_CODE_CACHE_FLAG,
  writeAgentCodeCache,
} from "./code-cache.js";
import { buildingSnapshot, prepareAgentSnapshot } from "./snapshot.js";
import { markStart } from "./start-timeline.js";

markStart("loader");

function start(exports: AgentBundleExports): void {
  if (typeof exports.startAgent !== "function") throw new Error("the agent bundle exports no startAgent()");
  void (exports.startAgent as () => Promise<void>)();
}

const dir = path.dirname(path.resolve(process.argv[1] ?? "."));
if (buildingSnapshot()) {
  prepareAgentSnapshot(dir, AGENT_GUEST_DIR, require, start);
} else if (process.argv[2] === WRITE_CODE_CACHE_FLAG) {
  writeAgentCodeCache(dir, path.posix.join(AGENT_GUEST_DIR, AGENT_BUNDLE_FILE));
} else {
  const cache = readAgentCodeCache(dir);
  markStart("code cache read");
  const { exports, cacheRejected } = loadAgentBundle(dir, cache);
  if (!cache) process.stderr.write("cocoon-agent: no code cache: compiled the bundle from source\n");
  else if (cacheRejected)
    process.stderr.write("cocoon-agent: V8 refused the code cache: compiled the bundle from source\n");
  start(exports);
}
