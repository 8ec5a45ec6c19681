import type { Command } from "commander";
import { ConfigError } from "../../errors.js";
import { Runtime } from "../../sandbox/runtime.js";
import type { Runner } from "../main.js";
import { parseMemory } from "./sandbox.js";
import type { CreateSandboxOptions } from "../../sandbox/runtime.js";
import { CPU_LIST } from "../../sandbox/resources/settings.js";

/** Resource control flags of `run` / `create`: host cgroup pinning and limits. */
export interface HostLimitFlags {
  cpusetCpus?: string;
  pidsLimit?: string;
  cpuShares?: string;
}

export function hostLimitOptions(
  o: HostLimitFlags,
): Pick<CreateSandboxOptions, "cpusetCpus" | "pidsLimit" | "cpuWeight"> {
  const out: Pick<CreateSandboxOptions, "cpusetCpus" | "pidsLimit" | "cpuWeight"> = {};
  if (o.cpusetCpus !== undefined) {
    if (!CPU_LIST.test(o.cpusetCpus))
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --cpuset-cpus "${o.cpusetCpus}": a CPU list such as 0-1,3`,
      );
    out.cpusetCpus = o.cpusetCpus;
  }
  if (o.pidsLimit !== undefined) {
    const n = Number(o.pidsLimit);
    if (!Number.isInteger(n) || n < 16)
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --pids-limit "${o.pidsLimit}": an integer of at least 16`,
      );
    out.pidsLimit = n;
  }
  if (o.cpuShares !== undefined) {
    const n = Number(o.cpuShares);
    if (!Number.isInteger(n) || n < 2 || n > 262_144)
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --cpu-shares "${o.cpuShares}": 2 to 262144 (docker's scale, 1024 = normal)`,
      );
    // docker's shares (1024 = normal) onto the cgroup v2 weight (100 = normal)
    out.cpuWeight = Math.min(10_000, Math.max(1, Math.round((n * 100) / 1024)));
  }
  return out;
}

/** `cocoon update`: docker's verb for resizing a running sandbox. */
export function registerResourceCommands(program: Command, run: Runner): void {
  program
    .command("update")
    .description("resize a running sandbox's VM live: vCPUs and memory (QEMU q35), with its host limits")
    .argument("<id>", "sandbox id")
    .option("--cpus <n>", "vCPUs the guest should have")
    .option("--memory <size>", "guest memory in MiB, or with a unit: 512M, 2G")
    .addHelpText(
      "after",
      "\nThe guest onlines what is added. Only what was added live can be taken away again;\nmicrovm, Firecracker and ACRN VMs keep the size they booted with.",
    )
    .action((id: string, o: { cpus?: string; memory?: string }) =>
      run(async (ctx) => {
        if (o.cpus === undefined && o.memory === undefined)
          throw new ConfigError("ERR_INVALID_ARGUMENT", "nothing to update: give --cpus and/or --memory");
        const request = {
          ...(o.cpus !== undefined ? { cpus: parsePositive("--cpus", o.cpus) } : {}),
          ...(o.memory !== undefined ? { memoryMB: parseMemory(o.memory) } : {}),
        };
        const sandbox = await Runtime.fromConfig(ctx.loaded, ctx.logger).loadSandbox(id);
        try {
          const r = await sandbox.update(request);
          if (ctx.json) ctx.io.out(JSON.stringify(r, null, 2));
          else
            ctx.io.out(
              `${id}: ${r.vcpus} vCPUs, ${r.memoryMB} MiB (the guest sees ${r.guest.onlineCpus} CPUs, ${Math.round(r.guest.memTotalBytes / 2 ** 20)} MiB total)`,
            );
        } finally {
          await sandbox.release();
        }
        return 0;
      }),
    );
}

function parsePositive(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new ConfigError("ERR_INVALID_ARGUMENT", `invalid ${flag} "${value}": a positive integer`);
  return n;
}
