/** `npm run bench:shim`: the containerd shim suite alone, written as JSON to bench/results/. */
import { printComparison, writeResults } from "./lib.js";
import { runShimBench } from "./shim.js";

const results = await runShimBench();
results.forEach(printComparison);
console.log(`\nwrote ${await writeResults("shim", results)}`);
