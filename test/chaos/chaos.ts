/**
 * The chaos suite (issue 12): faults injected into real QEMU sandboxes — SIGKILLs of the VMM,
 * virtiofsd, the monitor and the cocoon CLI at bad moments, a state root that fills up, and a
 * create/exec/rm soak — each followed by the checks that the state is true and that nothing
 * leaked. Prints per fault what was injected and what was found; ends with `N passed, N failed`.
 *
 *   npm run chaos                 the long form (soak of 100 cycles, more full-disk points)
 *   npm run chaos -- --short      the CI form, run by scripts/test.sh (soak of 10 cycles)
 *   npm run chaos -- --only NAME  the faults whose name contains NAME (repeatable)
 *   --no-build                    dist/ is current (scripts/test.sh built it for the integration tests)
 *
 * Needs root (a tmpfs is mounted), the guest assets (scripts/setup.sh) and QEMU.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { parseArgs } from "node:util";
import { guestAssets, testRoot } from "../helpers/env.js";
import buildDist from "../integration/global-setup.js";
import { FAULTS } from "./faults.js";
import { fullDiskFault } from "./full-disk.js";
import { chaosContext, leaks, type Fault } from "./harness.js";
import { soakFault } from "./soak.js";

const { values } = parseArgs({
  options: {
    short: { type: "boolean", default: false },
    only: { type: "string", multiple: true },
    "no-build": { type: "boolean", default: false },
  },
});
const short = values.short ?? false;

const faults: Fault[] = [
  ...FAULTS,
  ...(short ? [0, 16] : [0, 8, 16, 32, 64]).map(fullDiskFault),
  soakFault(short ? 10 : 100),
].filter((f) => !values.only?.length || values.only.some((o) => f.name.includes(o)));

function say(line: string): void {
  process.stdout.write(line + "\n");
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    say("chaos: needs root (it mounts a tmpfs and kills processes it started)");
    return 1;
  }
  // The faults run bin/cocoon.js, which loads dist/: build it from the current sources.
  if (!values["no-build"]) buildDist();
  await guestAssets();
  // A private TMPDIR for everything started from here, so the soak counts cocoon's temp files.
  const tmp = await mkdtemp("/tmp/cocoon-chaos-tmp-");
  process.env.TMPDIR = tmp;
  say(`chaos (${short ? "short" : "long"} form): ${faults.length} faults`);
  let passed = 0;
  let failed = 0;
  const suiteStart = Date.now();
  for (const fault of faults) {
    const { root, cleanup } = await testRoot();
    const ctx = chaosContext(root, say);
    const start = Date.now();
    say(`\n[${fault.name}]`);
    try {
      const o = await fault.run(ctx);
      say(`  injected: ${o.injected}`);
      if (o.state !== undefined) say(`  state:    ${o.state}`);
      if (o.stateTrueMs !== undefined) {
        say(
          `  truth:    ps -a true ${o.stateTrueMs} ms after the fault${o.stateTrueMs > 1_000 ? " (over the 1 s goal)" : ""}` +
            (o.recordedMs !== undefined
              ? `; the monitor recorded the VMM's end after ${o.recordedMs} ms`
              : ""),
        );
      }
      say(`  leaks:    none — ${o.cleanup}`);
      say(`  PASS (${((Date.now() - start) / 1000).toFixed(1)} s)`);
      passed++;
    } catch (err) {
      say(`  FAIL: ${err instanceof Error ? err.message : String(err)}`);
      failed++;
      // Leave nothing for the next fault, and say what this one left.
      const ids = await ctx
        .cli(["ps", "-a", "--json"])
        .result.then((r) => (JSON.parse(r.stdout.toString() || "[]") as { id: string }[]).map((s) => s.id))
        .catch(() => []);
      if (ids.length) await ctx.cli(["rm", "-f", ...ids]).result;
      await ctx.cli(["gc"]).result;
      const left = await leaks(root);
      if (left.length) say(`  left after rm -f + gc: ${left.join("; ")}`);
    } finally {
      await cleanup().catch(() => undefined);
    }
  }
  await rm(tmp, { recursive: true, force: true });
  say(`\nchaos took ${((Date.now() - suiteStart) / 1000).toFixed(0)} s`);
  say(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
