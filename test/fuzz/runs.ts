/**
 * How many cases each fuzz property runs: `base` in CI, scaled by FUZZ_RUNS (a multiplier,
 * e.g. FUZZ_RUNS=10 for the long `npm run chaos` form). Each file prints what it ran.
 */
export function runs(base: number): number {
  const scale = Number(process.env.FUZZ_RUNS ?? "1");
  return Math.max(1, Math.round(base * (Number.isFinite(scale) && scale > 0 ? scale : 1)));
}

const counts = new Map<string, number>();
export function record(name: string, n: number): void {
  counts.set(name, (counts.get(name) ?? 0) + n);
}
export function report(file: string): void {
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const parts = [...counts.entries()].map(([k, v]) => `${k}=${v}`).join(" ");
  console.log(`fuzz ${file}: ${total} cases (${parts})`);
}

/** A clear rejection: one line, no stack frames. */
export function isOneLine(message: string): boolean {
  return message.length > 0 && !message.includes("\n") && !/\bat .+:\d+:\d+/.test(message);
}
