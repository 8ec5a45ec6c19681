import fc from "fast-check";
import { Command, CommanderError } from "commander";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildProgram } from "../../src/cli/main.js";
import { parseEnv, parseMemory } from "../../src/cli/commands/sandbox.js";
import { isCocoonError } from "../../src/errors.js";
import { tempDir } from "../helpers/tmp.js";
import { isOneLine, record, report, runs } from "./runs.js";

let dir: string;
let cleanup: () => Promise<void>;
let cfg: string;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  cfg = path.join(dir, "config.toml");
  await writeFile(cfg, '[runtime]\nhypervisor = "mock"\n');
});
afterAll(async () => {
  report("cli");
  await cleanup();
});

const words = [
  "run",
  "create",
  "start",
  "exec",
  "ps",
  "inspect",
  "logs",
  "pause",
  "resume",
  "stop",
  "kill",
  "rm",
  "cp",
  "wait",
  "gc",
  "check",
  "config",
  "show",
  "image",
  "build",
  "ls",
  "prune",
  "help",
  "--",
  "-",
  "-a",
  "-d",
  "-e",
  "-f",
  "-i",
  "-s",
  "-t",
  "-u",
  "-v",
  "-w",
  "--all",
  "--attach",
  "--force",
  "--follow",
  "--guest",
  "--help",
  "--json",
  "--jobs",
  "--log-level",
  "--memory",
  "--cpus",
  "--name",
  "--rm",
  "--detach",
  "--section",
  "--signal",
  "--dry-run",
  "--version",
  "--user",
  "--env",
  "--tty",
  "--container",
  "--hostname",
  "--workdir",
  "--rootfs",
  "--interactive",
  "--unknown",
  "-xyz",
  "SIGKILL",
  "SIGNOPE",
  "512M",
  "2G",
  "0",
  "-1",
  "abc",
  "k1",
  "k1:/etc/hosts",
  "/tmp/x",
  "A=B",
  "=B",
  "1000:1000",
  "debug",
  "loud",
  "",
];
const token = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...words) },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constantFrom(...words).map((w) => `${w}=${w}`) },
);
const argvArb = fc.array(token, { maxLength: 8 });

/** Output lines that look like a stack trace. */
function stackLines(text: string): string[] {
  return text.split("\n").filter((l) => /^\s+at\s.+[(:]\d+/.test(l));
}

interface Outcome {
  stdout: string;
  stderr: string;
  code: number;
}

/** Parses argv with every command's action replaced: commander, option parsers and hooks only. */
async function parseOnly(argv: string[]): Promise<Outcome> {
  const out = { stdout: "", stderr: "", code: 0 };
  const program = buildProgram(
    { out: (t) => void (out.stdout += t + "\n"), err: (t) => void (out.stderr += t + "\n") },
    (c) => (out.code = c),
  );
  const stub = (cmd: Command): void => {
    for (const sub of cmd.commands) {
      if (sub.commands.length) stub(sub);
      else sub.action(() => undefined);
    }
  };
  stub(program);
  try {
    await program.parseAsync(["node", "cocoon", ...argv]);
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    out.code = err.exitCode === 0 ? 0 : 2;
  }
  return out;
}

/** Commands whose real action is safe on a throwaway root with no sandboxes (no VM, no build). */
const SAFE = [
  "ps",
  "inspect",
  "logs",
  "pause",
  "resume",
  "stop",
  "kill",
  "rm",
  "cp",
  "wait",
  "exec",
  "start",
];

/** Runs the real actions of the safe commands (others stubbed) against a temp root and mock config. */
async function runSafely(argv: string[]): Promise<Outcome> {
  const out = { stdout: "", stderr: "", code: 0 };
  const program = buildProgram(
    { out: (t) => void (out.stdout += t + "\n"), err: (t) => void (out.stderr += t + "\n") },
    (c) => (out.code = c),
  );
  const stub = (cmd: Command, top: boolean): void => {
    for (const sub of cmd.commands) {
      if (sub.commands.length) stub(sub, false);
      else if (!(top && SAFE.includes(sub.name()))) sub.action(() => undefined);
    }
  };
  stub(program, true);
  // Never let a generated flag point the real actions elsewhere.
  const clean = argv.filter((a) => !/^--(root|config|hypervisor)/.test(a));
  try {
    await program.parseAsync(["node", "cocoon", ...clean, "--root", dir, "--config", cfg]);
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    out.code = err.exitCode === 0 ? 0 : 2;
  }
  return out;
}

function checkOutcome(o: Outcome): void {
  expect(stackLines(o.stdout + o.stderr)).toEqual([]);
  for (const line of o.stderr.split("\n").filter(Boolean)) {
    // One-line errors: commander's "error: …", cocoon's "cocoon: … [ERR_…]", the usage hint, help text.
    expect(line.length).toBeLessThan(400);
  }
  expect(o.stderr).not.toContain("[ERR_INTERNAL]");
}

describe("fuzz: CLI arguments", () => {
  it("random argv never throws a non-commander error or prints a stack (parsing)", async () => {
    const n = runs(6_000);
    await fc.assert(
      fc.asyncProperty(argvArb, async (argv) => checkOutcome(await parseOnly(argv))),
      {
        numRuns: n,
      },
    );
    record("parse", n);
  });

  it("random argv for the read/act commands on an empty root fails with coded one-line errors", async () => {
    const n = runs(300);
    let reachedAction = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.tuple(
          fc.constantFrom(...SAFE),
          fc.constantFrom("k1", "nosuch", "Bad Id!", "k1:/etc/hosts", "/tmp/x", "-"),
          fc.array(token, { maxLength: 4 }),
        ),
        async ([cmd, target, argv]) => {
          const o = await runSafely([cmd, target, ...argv]);
          checkOutcome(o);
          const cocoonLines = o.stderr.split("\n").filter((l) => l.startsWith("cocoon: "));
          if (cocoonLines.length) reachedAction++;
          for (const l of cocoonLines)
            expect(l).toMatch(/ \[ERR_[A-Z_]+\]$|^cocoon: (removed|would remove|could not remove) /);
        },
      ),
      { numRuns: n },
    );
    // The generator must get past parsing often enough for the real actions to be fuzzed.
    expect(reachedAction).toBeGreaterThan(n / 20);
    console.log(`cli actions: ${reachedAction} of ${n} cases reached a command's action`);
    record("actions", n);
  });

  it("option value parsers refuse bad values with a coded one-line error", () => {
    const n = runs(4_000);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 10 }),
          fc.constantFrom("64", "63", "1G", "512MiB", "512mb", " 1g", "9".repeat(400)),
        ),
        (v) => {
          for (const fn of [() => parseMemory(v), () => parseEnv([v], {})]) {
            try {
              fn();
            } catch (err) {
              expect(isCocoonError(err)).toBe(true);
              expect(isOneLine((err as Error).message)).toBe(true);
            }
          }
        },
      ),
      { numRuns: n },
    );
    record("value-parsers", n);
  });
});
