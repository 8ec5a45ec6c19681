/**
 * What the guest's node runs (AGENT_LAUNCHER in ../image/rootfs.ts): loads the agent bundle
 * with its V8 code cache and starts the agent; at image build, with WRITE_CODE_CACHE_FLAG,
 * writes that cache instead. See code-cache.ts for why and for the fallback.
 */
import path from "node:path";
import {
  loadAgentBundle,
  readAgentCodeCache,
  WRITE_CODE_CACHE_FLAG,
  writeAgentCodeCache,
} from "./code-cache.js";
import { markStart } from "./start-timeline.js";

markStart("loader");

const dir = path.dirname(process.argv[1] ?? ".");
if (process.argv[2] === WRITE_CODE_CACHE_FLAG) {
  writeAgentCodeCache(dir);
} else {
  const cache = readAgentCodeCache(dir);
  markStart("code cache read");
  const { exports, cacheRejected } = loadAgentBundle(dir, cache);
  if (!cache) process.stderr.write("cocoon-agent: no code cache: compiled the bundle from source\n");
  else if (cacheRejected)
    process.stderr.write("cocoon-agent: V8 refused the code cache: compiled the bundle from source\n");
  if (typeof exports.startAgent !== "function") throw new Error("the agent bundle exports no startAgent()");
  void (exports.startAgent as () => Promise<void>)();
}
