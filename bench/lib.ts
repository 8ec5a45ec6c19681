import { mkdir, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

// The CLI's default network is the bridge (docs/network.md): benches that run the CLI on the
// machine's own namespace must not make cocoon0 and NAT rules there. bench/network.ts asks for
// a network explicitly, inside namespaces it makes.
process.env.COCOON_NETWORK ??= "none";

export interface Stats {
  n: number;
  min: number;
  median: number;
  mean: number;
  max: number;
}

export function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n % 2 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
  return {
    n,
    min: round(sorted[0]!),
    median: round(median),
    mean: round(sorted.reduce((a, b) => a + b, 0) / n),
    max: round(sorted[n - 1]!),
  };
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export interface Comparison {
  name: string;
  unit: string;
  subject: { label: string; stats: Stats };
  baseline: { label: string; stats: Stats };
  /** subject median / baseline median. */
  ratio: number;
  note?: string;
}

export function compare(
  name: string,
  unit: string,
  subject: [string, number[]],
  baseline: [string, number[]],
  note?: string,
): Comparison {
  const s = stats(subject[1]);
  const b = stats(baseline[1]);
  return {
    name,
    unit,
    subject: { label: subject[0], stats: s },
    baseline: { label: baseline[0], stats: b },
    ratio: round(s.median / b.median, 3),
    ...(note ? { note } : {}),
  };
}

export function printComparison(c: Comparison): void {
  const fmt = (s: Stats): string => `median ${s.median} ${c.unit} (min ${s.min}, max ${s.max}, n=${s.n})`;
  console.log(`\n${c.name}`);
  console.log(`  ${c.subject.label.padEnd(34)} ${fmt(c.subject.stats)}`);
  console.log(`  ${c.baseline.label.padEnd(34)} ${fmt(c.baseline.stats)}`);
  console.log(`  ratio ${c.ratio}${c.note ? `  (${c.note})` : ""}`);
}

/** Writes results as JSON: a timestamped file and latest.json. */
export async function writeResults(
  suite: string,
  results: Comparison[],
  extra: Record<string, unknown> = {},
): Promise<string> {
  const dir = path.resolve(import.meta.dirname, "results");
  await mkdir(dir, { recursive: true });
  const doc = {
    suite,
    date: new Date().toISOString(),
    host: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model,
      memoryGiB: round(os.totalmem() / 2 ** 30, 1),
      node: process.version,
    },
    ...extra,
    results,
  };
  const stamp = doc.date.replace(/[:.]/g, "-");
  const file = path.join(dir, `${suite}-${stamp}.json`);
  await writeFile(file, JSON.stringify(doc, null, 2) + "\n");
  await writeFile(path.join(dir, `${suite}-latest.json`), JSON.stringify(doc, null, 2) + "\n");
  return file;
}

/** A process's proportional set size in KiB (`smaps_rollup`: shared pages split among their users). */
export async function pssKiB(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
}
