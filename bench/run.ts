/** `npm run bench`: every benchmark suite, results printed and written as JSON to bench/results/. */
import { runBootBench } from "./boot.js";
import { runFactoryBench } from "./factory.js";
import { runResourceBench } from "./resources.js";
import { runShimBench } from "./shim.js";
import { runNetworkBench } from "./network.js";
import { runWorkloadBench } from "./workload.js";
import { printComparison, writeResults, type Comparison } from "./lib.js";

const suites: [string, () => Promise<Comparison[]>][] = [
  ["boot", runBootBench],
  ["workload", runWorkloadBench],
  ["resources", async () => (await runResourceBench()).results],
  // VM templates (docs/factory.md)
  ["factory", runFactoryBench],
  ["shim", runShimBench], // containerd shim (issue 10)
  ["network", runNetworkBench], // networking (issue 9)
];
const all: Comparison[] = [];
for (const [name, run] of suites) {
  console.log(`== ${name}`);
  const results = await run();
  results.forEach(printComparison);
  all.push(...results);
}
console.log(`\nwrote ${await writeResults("all", all)}`);
