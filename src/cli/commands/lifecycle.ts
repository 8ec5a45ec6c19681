import type { Command } from "commander";
import type { Garbage } from "../../sandbox/gc.js";
import { Runtime } from "../../sandbox/runtime.js";
import type { CliContext } from "../context.js";
import type { Runner } from "../main.js";
import { table } from "../output.js";

/** What a crash left behind, said on stderr before `ps` or `rm -f` go on (gc's check, quietly). */
export async function cleanUpAfterCrashes(ctx: CliContext): Promise<Garbage[]> {
  const found = await Runtime.fromConfig(ctx.loaded, ctx.logger).collectGarbage();
  for (const g of found) ctx.io.err(`cocoon: ${describeGarbage(g)}`);
  return found;
}

function describeGarbage(g: Garbage): string {
  const verb = g.removed ? "removed" : g.error ? "could not remove" : "would remove";
  return `${verb} ${g.kind === "process" ? "orphaned process" : g.kind} ${g.what}${g.error ? `: ${g.error}` : ""}`;
}

export function registerLifecycleCommands(program: Command, run: Runner): void {
  program
    .command("wait")
    .description(
      "block until a sandbox stops (its main process ends, or its VM), then print and exit with the main process's status",
    )
    .argument("<id>", "sandbox id")
    .action((id: string) =>
      run(async (ctx) => {
        const sandbox = await Runtime.fromConfig(ctx.loaded, ctx.logger).loadSandbox(id);
        const cause = await sandbox.waitStopped();
        await sandbox.release();
        // docker prints the status; without a main-process status (the VM died, or it was
        // stopped before its process ended) there is none: say why on stderr and exit 255.
        const status = cause?.exitCode;
        if (ctx.json) ctx.io.out(JSON.stringify({ id, exitCode: status ?? null, stopCause: cause ?? null }));
        else if (status !== undefined) ctx.io.out(String(status));
        if (status === undefined) {
          ctx.io.err(
            `cocoon: ${id} stopped${cause ? `: ${cause.message}` : ""} (no exit status of its main process)`,
          );
          return 255;
        }
        return status;
      }),
    );

  program
    .command("gc")
    .description(
      "remove what no live owner holds: half-created sandboxes, orphaned VMMs and helpers, stray directories and mounts, stale locks",
    )
    .option("--dry-run", "only list what would be removed")
    .action((o: { dryRun?: boolean }) =>
      run(async (ctx) => {
        const found = await Runtime.fromConfig(ctx.loaded, ctx.logger).collectGarbage({
          dryRun: o.dryRun ?? false,
        });
        if (ctx.json) {
          ctx.io.out(JSON.stringify(found, null, 2));
        } else if (found.length === 0) {
          ctx.io.out("nothing to clean up");
        } else {
          ctx.io.out(
            table(
              ["KIND", "WHAT", "SANDBOX", "RESULT"],
              found.map((g) => [
                g.kind,
                g.what,
                g.sandbox ?? "-",
                g.removed ? "removed" : g.error ? `failed: ${g.error}` : "would remove",
              ]),
            ),
          );
        }
        return found.some((g) => g.error) ? 1 : 0;
      }),
    );
}
