/** `npm run bench:resources`: the resource control suite alone, written as JSON to bench/results/. */
import { printComparison, writeResults } from "./lib.js";
import { runResourceBench } from "./resources.js";

const { results, extra } = await runResourceBench();
results.forEach(printComparison);
console.log(extra);
console.log(`\nwrote ${await writeResults("resources", results, extra)}`);
