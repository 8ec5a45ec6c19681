/**
 * The warm pool's filler, run detached by WarmPool.spawnRefill: starts clones until the pool
 * holds its target, then exits. Its one argument is the job as JSON (validated: it crosses a
 * process boundary).
 */
import "../../hypervisor/drivers.js";
import path from "node:path";
import { silentLogger } from "../../log.js";
import { RuntimePaths } from "../../store/paths.js";
import { Store } from "../../store/store.js";
import { refillJobSchema, WarmPool } from "./pool.js";

const job = refillJobSchema.parse(JSON.parse(process.argv[2] ?? "null"));
const stateRoot = path.resolve(job.poolDir, "../..");
const paths = new RuntimePaths({ stateRoot, libRoot: job.jailerBase, assetsDir: "" });
const pool = new WarmPool(job.poolDir, {
  store: new Store(paths),
  logger: silentLogger(),
  jailerBase: job.jailerBase,
});
await pool.fill(job);
