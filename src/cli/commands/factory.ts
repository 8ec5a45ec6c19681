import type { Command } from "commander";
import { validateSandboxConfig } from "../../sandbox/config.js";
import { VmFactory } from "../../sandbox/factory/factory.js";
import { Runtime } from "../../sandbox/runtime.js";
import type { Runner } from "../main.js";
import type { CliContext } from "../context.js";

/** What a default QEMU sandbox would get: the template is made from (and keyed by) that. */
async function baseConfig(
  ctx: CliContext,
): Promise<{ rt: Runtime; base: ReturnType<typeof VmFactory.baseConfig>; dialTimeoutMs: number }> {
  const rt = Runtime.fromConfig(ctx.loaded, ctx.logger);
  const config = validateSandboxConfig(await rt.sandboxConfig({ hypervisor: "qemu" }));
  return {
    rt,
    base: VmFactory.baseConfig(config.hypervisorConfig),
    dialTimeoutMs: config.agentConfig.dialTimeoutMs,
  };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

export function registerFactory(program: Command, run: Runner): void {
  const factory = program
    .command("factory")
    .description("VM templates (Kata's VM factory): sandboxes start as clones of a booted, saved VM");

  factory
    .command("init")
    .description("boot the template VM and save it (rebuilt when the assets or VM shape changed)")
    .option("--force", "rebuild even when the template is current")
    .action((opts: { force?: boolean }) =>
      run(async (ctx) => {
        const { rt, base, dialTimeoutMs } = await baseConfig(ctx);
        const t = rt.factory.template;
        const meta = opts.force ? await t.rebuild(base, dialTimeoutMs) : await t.ensure(base, dialTimeoutMs);
        if (ctx.json) ctx.io.out(JSON.stringify({ path: t.dir, ...meta }, null, 2));
        else
          ctx.io.out(
            `template ${meta.key} at ${t.dir}: ${meta.memoryMiB} MiB, ${meta.vcpus} vCPU, device state ${meta.stateBytes} bytes (boot ${meta.bootMs} ms)`,
          );
        return 0;
      }),
    );

  factory
    .command("status")
    .description("show the template and whether it matches the current configuration and assets")
    .action(() =>
      run(async (ctx) => {
        const { rt, base } = await baseConfig(ctx);
        const status = await rt.factory.template.status(base);
        const pool = await rt.factory.pool.status();
        const enabled = ctx.loaded.config.factory.enable_template;
        const cache = ctx.loaded.config.factory.cache;
        if (ctx.json) {
          ctx.io.out(JSON.stringify({ enabled, cache, pool, ...status }, null, 2));
          return 0;
        }
        ctx.io.out(`templating: ${enabled ? "enabled" : "disabled"} ([factory] enable_template)`);
        ctx.io.out(
          `warm pool: ${pool.ready} ready, ${pool.starting} starting, ${pool.taken} being taken (target ${cache}, [factory] cache)`,
        );
        if (!status.exists || !status.meta) {
          ctx.io.out(`template: none at ${status.path} (cocoon factory init makes one)`);
          return 0;
        }
        ctx.io.out(
          `template: ${status.meta.key} at ${status.path}, made ${status.meta.createdAt}, ` +
            `${status.meta.memoryMiB} MiB (${mib(status.memoryAllocatedBytes ?? 0)} in use)`,
        );
        ctx.io.out(
          status.matches
            ? "current: yes"
            : `current: no (the configuration gives ${status.currentKey}; it will be rebuilt)`,
        );
        return 0;
      }),
    );

  factory
    .command("destroy")
    .description("remove the warm pool's clones and the template (sandboxes made from clones run on)")
    .action(() =>
      run(async (ctx) => {
        const rt = Runtime.fromConfig(ctx.loaded, ctx.logger);
        const { template: removed, clones } = await rt.factory.destroy();
        if (ctx.json) ctx.io.out(JSON.stringify({ removed, clones }));
        else {
          if (clones) ctx.io.out(`${clones} warm clone(s) stopped`);
          ctx.io.out(removed ? "template removed" : "no template");
        }
        return 0;
      }),
    );
}
