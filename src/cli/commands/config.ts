import type { Command } from "commander";
import { describeConfig } from "../../config/load.js";
import type { CliContext } from "../context.js";
import { table } from "../output.js";

function show(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value);
}

export function registerConfig(
  program: Command,
  run: (fn: (ctx: CliContext) => Promise<number>) => Promise<void>,
): void {
  const config = program.command("config").description("inspect cocoon's configuration");
  config
    .command("show")
    .description("print the effective configuration and where each value came from")
    .option("--section <prefix>", "only keys under this dotted prefix, e.g. hypervisor.qemu")
    .action((opts: { section?: string }) =>
      run(async (ctx) => {
        let rows = describeConfig(ctx.loaded);
        if (opts.section)
          rows = rows.filter((r) => r.key === opts.section || r.key.startsWith(`${opts.section}.`));
        if (ctx.json) {
          ctx.io.out(JSON.stringify({ file: ctx.loaded.file ?? null, values: rows }, null, 2));
        } else {
          ctx.io.out(`# configuration file: ${ctx.loaded.file ?? "none (built-in defaults)"}`);
          ctx.io.out(
            table(
              ["KEY", "VALUE", "SOURCE"],
              rows.map((r) => [r.key, show(r.value), r.source]),
            ),
          );
        }
        return 0;
      }),
    );
}
