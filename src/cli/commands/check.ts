import type { Command } from "commander";
import { hostReport, type HostCheck } from "../../host/report.js";
import type { CliContext } from "../context.js";
import { table } from "../output.js";

const MARK: Record<HostCheck["status"], string> = { ok: "ok", warn: "WARN", fail: "FAIL", info: "-" };

export function registerCheck(
  program: Command,
  run: (fn: (ctx: CliContext) => Promise<number>) => Promise<void>,
): void {
  program
    .command("check")
    .description(
      "report what this host offers cocoon: accelerator, VMM binaries, cgroups, networking, guest assets",
    )
    .action(() =>
      run(async (ctx) => {
        const checks = await hostReport({ config: ctx.loaded.config, extra: ctx.extraChecks });
        const failed = checks.some((c) => c.status === "fail");
        if (ctx.json) {
          ctx.io.out(JSON.stringify({ ok: !failed, checks }, null, 2));
        } else {
          ctx.io.out(
            table(
              ["CHECK", "STATUS", "DETAIL"],
              checks.map((c) => [c.title, MARK[c.status], c.detail]),
            ),
          );
          ctx.io.out(failed ? "\nSome required checks failed." : "\nThis host can run cocoon sandboxes.");
        }
        return failed ? 5 : 0;
      }),
    );
}
