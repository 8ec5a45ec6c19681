/**
 * The agent's V8 startup snapshot (issue 14, cold start). At image build the guest's own node
 * runs the loader with `--build-snapshot`: the loader evaluates the agent bundle (as for the
 * code cache, without starting the agent) and names the function that starts it as the
 * snapshot's main. Node then writes its whole heap (its own bootstrap, the built-in modules the
 * bundle required, the bundle's evaluated modules) to AGENT_SNAPSHOT_FILE. At boot the launcher
 * runs `node --snapshot-blob agent.blob`: node deserializes that heap instead of bootstrapping,
 * running its CommonJS loader, reading, compiling and evaluating the bundle, and calls the main.
 *
 * The fallback: node refuses a blob from another node binary or V8 flags (exit 14) and dies on
 * a damaged one. The launcher (rootfs.ts, agentLauncherScript) then starts the agent from the
 * bundle with the code cache (code-cache.ts), as without a blob. The image build checks the
 * blob once (SNAPSHOT_CHECK_ENV) and leaves it out when node cannot start from it.
 *
 * What a snapshot keeps, the agent keeps: nothing the bundle does at module level may depend on
 * the machine it runs on (main.ts reads the guest's state in startAgent()), and the start
 * timeline's marks are reset in the main (they were taken on the build host).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import v8 from "node:v8";
import { AGENT_BUNDLE_FILE, type AgentBundleExports, type CommonJsWrapper } from "./code-cache.js";
import { markStart, resetStartMarks } from "./start-timeline.js";

/** The startup snapshot, next to the bundle in the guest, produced at image build. */
export const AGENT_SNAPSHOT_FILE = "agent.blob";
/**
 * Set in the environment of a `node --snapshot-blob` run: the main only says it could start
 * (prints SNAPSHOT_CHECK_OUTPUT) and returns, so the image build can check a blob on the host.
 */
export const SNAPSHOT_CHECK_ENV = "COCOON_AGENT_SNAPSHOT_CHECK";
export const SNAPSHOT_CHECK_OUTPUT = "cocoon-agent: snapshot ok";

/** Whether this node process is building a startup snapshot (`--build-snapshot`). */
export function buildingSnapshot(): boolean {
  return v8.startupSnapshot.isBuildingSnapshot();
}

/**
 * Snapshot build: evaluates the bundle in `dir` and makes `start(exports)` the snapshot's main.
 * `guestDir` is where the bundle is in the guest: its __filename, __dirname and the file name
 * in stack traces. `builderRequire` is the require node gives the snapshot's entry: it takes
 * built-in modules only, which is all the bundle requires. (Not vm.Script as for the code cache: node's snapshot builder does not
 * support the vm module; an indirect eval compiles the same CommonJS wrapper.)
 */
export function prepareAgentSnapshot(
  dir: string,
  guestDir: string,
  builderRequire: NodeJS.Require,
  start: (exports: AgentBundleExports) => void,
): void {
  const source = readFileSync(path.join(dir, AGENT_BUNDLE_FILE), "utf8");
  const filename = path.posix.join(guestDir, AGENT_BUNDLE_FILE);
  // The wrapper shares the bundle's first line, so line numbers in stack traces are the file's.
  // an indirect eval: global scope, as a script would be
  const wrapper = (0, eval)(
    `(function (exports, require, module, __filename, __dirname) {${source}\n})\n//# sourceURL=${filename}`,
  ) as CommonJsWrapper;
  const module = { exports: {} as AgentBundleExports };
  wrapper(module.exports, builderRequire, module, filename, guestDir);
  const exports = module.exports;
  if (typeof exports.startAgent !== "function") throw new Error("the agent bundle exports no startAgent()");
  v8.startupSnapshot.setDeserializeMainFunction(() => {
    resetStartMarks();
    markStart("snapshot main");
    if (process.env[SNAPSHOT_CHECK_ENV] === "1") {
      process.stdout.write(`${SNAPSHOT_CHECK_OUTPUT}\n`);
      return;
    }
    start(exports);
  });
}
