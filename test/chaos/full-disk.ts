/**
 * A state root on a tiny tmpfs that fills up while a sandbox is created: the create must fail
 * with a clear one-line error (or succeed), `ps` must still work on the full root, every
 * record must be whole (never corrupt, never half-written), no temp file may be left, and
 * once there is room again `rm -f`/`gc` must leave nothing.
 */
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { readDocument } from "../../src/store/atomic.js";
import { SANDBOX_DOC } from "../../src/sandbox/state.js";
import { entriesUnder } from "../helpers/env.js";
import { tinyTmpfs } from "../helpers/tmpfs.js";
import { MEMORY, chaosContext, check, leaks, type Fault } from "./harness.js";

/** Temp files a failed write could leave: the store's `.x.json.<hex>.tmp`, a lock's `<lock>.<nonce>.tmp`. */
async function tempFilesUnder(dir: string): Promise<string[]> {
  return (await entriesUnder(dir))
    .filter((e) => e.entry.isFile() && e.entry.name.endsWith(".tmp"))
    .map((e) => path.relative(dir, e.path));
}

/** Every sandbox record must read back whole. */
async function recordsAreWhole(root: string): Promise<string[]> {
  const bad: string[] = [];
  const sbs = path.join(root, "run", "sbs");
  for (const id of await readdir(sbs).catch(() => [])) {
    const file = path.join(sbs, id, "sandbox.json");
    try {
      await readDocument(file, SANDBOX_DOC);
    } catch (err) {
      bad.push(`${id}: ${(err as Error).message}`);
    }
  }
  // a lock is taken by link(2) of a whole temp file: an empty one is half-written
  for (const e of await readdir(path.join(root, "run", "locks")).catch(() => [])) {
    const st = await stat(path.join(root, "run", "locks", e)).catch(() => undefined);
    if (st?.isFile() && st.size === 0) bad.push(`locks/${e}: empty`);
  }
  return bad;
}

/** One fault per amount of room left on the state root when `create` starts. */
export function fullDiskFault(freeKiB: number): Fault {
  return {
    name: `state-root-full-mid-create-${freeKiB}k`,
    async run(outer) {
      const fs = await tinyTmpfs(1024);
      const ctx = chaosContext(fs.dir, outer.say);
      try {
        // Lay out the root (logs, locks) while there is room, as an existing install has.
        await ctx.ok(["ps", "-a"]);
        await fs.fill(freeKiB);
        const id = "c-full";
        const r = await ctx.cli(["create", "--name", id, ...MEMORY, "--", "sleep", "3600"]).result;
        const stderr = r.stderr.toString().trim();
        let outcome: string;
        if (r.code === 0) {
          outcome = "create succeeded in the room left";
        } else {
          check(/\[ERR_[A-Z_]+\]/.test(stderr), `the error has no code: ${stderr}`);
          // ERR_INTERNAL is what an unexpected error becomes: a full disk is expected, and must say so
          check(!/ERR_INTERNAL/.test(stderr), `a full disk gave an internal error: ${stderr}`);
          check(!/^\s+at /m.test(stderr), `the error shows a stack trace: ${stderr}`);
          check(stderr.split("\n").length <= 3, `the error is not short: ${stderr}`);
          outcome = `create failed: ${stderr.split("\n")[0]}`;
        }
        const ps = await ctx.cli(["ps", "-a", "--json"]).result;
        check(ps.code === 0, `ps -a fails on the full root: ${ps.stderr.toString().trim()}`);
        const bad = await recordsAreWhole(fs.dir);
        check(bad.length === 0, `corrupt or half-written records: ${bad.join("; ")}`);
        const temps = await tempFilesUnder(fs.dir);
        check(temps.length === 0, `temp files left: ${temps.join(", ")}`);
        await fs.unfill();
        const rm = await ctx.cli(["rm", "-f", id]).result;
        if (rm.code !== 0)
          check(/ERR_NOT_FOUND/.test(rm.stderr.toString()), `rm -f failed: ${rm.stderr.toString()}`);
        await ctx.ok(["gc"]);
        const left = await leaks(fs.dir);
        check(left.length === 0, `left behind: ${left.join("; ")}`);
        return {
          injected: `state root on a 1 MiB tmpfs with ${freeKiB} KiB free at create`,
          state: outcome,
          cleanup:
            "rm -f + gc after freeing room: nothing left; ps worked while full; records whole; no temp files",
        };
      } finally {
        await fs.cleanup();
      }
    },
  };
}
