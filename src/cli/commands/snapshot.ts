import type { Command } from "commander";
import { ConfigError, ExitCode } from "../../errors.js";
import { Runtime } from "../../sandbox/runtime.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import type { CliContext } from "../context.js";
import type { Runner } from "../main.js";
import { table } from "../output.js";

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Long work (hundreds of MiB under TCG): progress on stderr, so stdout stays the result. */
function progressTo(ctx: CliContext): (step: string) => void {
  return (step) => {
    if (!ctx.json) ctx.io.err(`${step} …`);
  };
}

/**
 * `cocoon run --from-snapshot NAME`: the sandbox's command is the snapshot's, so no command
 * and no VM options may be given; only --name picks the new sandbox's id.
 */
export async function restoreForRun(
  ctx: CliContext,
  runtime: Runtime,
  snapshot: string,
  cmd: string[],
  o: { name?: string; rootfs?: string; memory?: string; cpus?: string; hypervisor?: string },
): Promise<Sandbox> {
  const rest = cmd[0] === "--" ? cmd.slice(1) : cmd;
  if (rest.length > 0)
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      "--from-snapshot runs the snapshot's own command: give no command (use cocoon exec for another)",
    );
  const vmOption = (["rootfs", "memory", "cpus", "hypervisor"] as const).find((k) => o[k] !== undefined);
  if (vmOption)
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      `--from-snapshot restores the snapshot's VM as it was: --${vmOption} cannot be given with it`,
    );
  return runtime.restoreSandbox(snapshot, { ...(o.name ? { id: o.name } : {}), progress: progressTo(ctx) });
}

export function registerSnapshot(program: Command, run: Runner): void {
  const snapshot = program
    .command("snapshot")
    .description(
      "snapshots of running sandboxes: processes, memory and guest files, restored with run --from-snapshot",
    );

  snapshot
    .command("create")
    .description("pause a sandbox, save its device state and memory as a snapshot, and let it run on")
    .argument(
      "<sandbox>",
      "the sandbox to snapshot (QEMU, or Firecracker with the jailer; without containers)",
    )
    .argument("[name]", "the snapshot's name (default: the sandbox id and a random suffix)")
    .action((id: string, name: string | undefined) =>
      run(async (ctx) => {
        const rt = Runtime.fromConfig(ctx.loaded, ctx.logger);
        const sandbox = await rt.loadSandbox(id);
        try {
          const meta = await rt.snapshots.create(sandbox, name, progressTo(ctx));
          if (ctx.json)
            ctx.io.out(
              JSON.stringify({
                name: meta.name,
                source: meta.source,
                createdAt: meta.createdAt,
                stateBytes: meta.stateBytes,
                path: rt.snapshots.dir(meta.name),
              }),
            );
          else ctx.io.out(meta.name);
        } finally {
          await sandbox.release();
        }
        return 0;
      }),
    );

  snapshot
    .command("ls")
    .description("list snapshots and whether this cocoon can restore them")
    .action(() =>
      run(async (ctx) => {
        const list = await Runtime.fromConfig(ctx.loaded, ctx.logger).listSnapshots();
        if (ctx.json) {
          ctx.io.out(JSON.stringify(list, null, 2));
          return 0;
        }
        ctx.io.out(
          table(
            ["NAME", "SOURCE", "CREATED", "MEMORY", "SIZE", "RESTORABLE"],
            list.map((s) => [
              s.name,
              s.source,
              s.createdAt,
              s.memoryMiB ? `${s.memoryMiB} MiB` : "",
              s.sizeBytes ? mib(s.sizeBytes) : "",
              s.restorable === true ? "yes" : `no: ${s.restorable}`,
            ]),
          ),
        );
        return 0;
      }),
    );

  snapshot
    .command("rm")
    .description("remove snapshots (sandboxes restored from them keep running)")
    .argument("<names...>", "snapshots to remove")
    .action((names: string[]) =>
      run(async (ctx) => {
        const store = Runtime.fromConfig(ctx.loaded, ctx.logger).snapshots;
        let missing = 0;
        for (const name of names) {
          const removed = await store.remove(name);
          if (!removed) {
            missing++;
            ctx.io.err(`no snapshot named "${name}"`);
          } else if (!ctx.json) ctx.io.out(name);
        }
        if (ctx.json) ctx.io.out(JSON.stringify({ removed: names.length - missing, missing }));
        return missing ? ExitCode.notFound : 0;
      }),
    );
}
