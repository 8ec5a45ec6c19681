/**
 * `npm run bench`: every benchmark suite (or those named in BENCH_SUITES), results printed and
 * written as JSON to bench/results/.
 */
import { runBootBench } from "./boot.js";
import { printFacts, runDatapathBench, type DatapathFacts } from "./datapath.js";
import { runFactoryBench } from "./factory.js";
import { runResourceBench } from "./resources.js";
import { runShimBench } from "./shim.js";
import { runNetworkBench } from "./network.js";
import { runWorkloadBench } from "./workload.js";
import { printComparison, writeResults, type Comparison } from "./lib.js";

let facts: DatapathFacts | undefined;
const suites: [string, () => Promise<Comparison[]>][] = [
  ["boot", runBootBench],
  // the agent's data path against the raw channel, in one guest (issue 14)
  [
    "datapath",
    async () => {
      const r = await runDatapathBench();
      facts = r.facts;
      return r.results;
    },
  ],
  ["workload", runWorkloadBench],
  ["resources", async () => (await runResourceBench()).results],
  // VM templates (docs/factory.md)
  ["factory", runFactoryBench],
  ["shim", runShimBench], // containerd shim (issue 10)
  ["network", runNetworkBench], // networking (issue 9)
];
// BENCH_SUITES=boot,datapath runs a subset (one run, one JSON file).
const only = process.env.BENCH_SUITES?.split(",").filter(Boolean);
const all: Comparison[] = [];
for (const [name, run] of suites) {
  if (only && !only.includes(name)) continue;
  console.log(`== ${name}`);
  const results = await run();
  results.forEach(printComparison);
  all.push(...results);
  if (name === "datapath" && facts) printFacts(facts);
}
console.log(`\nwrote ${await writeResults("all", all, facts ? { facts } : {})}`);
