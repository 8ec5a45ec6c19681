import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { ContainerResources } from "../../agent/protocol/resources.js";
import { ConfigError } from "../../errors.js";
import { Runtime } from "../../sandbox/runtime.js";
import { statsRow, type StatsRow } from "../../sandbox/resources/stats.js";
import type { Runner } from "../main.js";
import { table } from "../output.js";
import { parseMemory } from "./sandbox.js";
import type { CreateSandboxOptions } from "../../sandbox/runtime.js";
import { CPU_LIST } from "../../sandbox/resources/settings.js";

/** Resource control flags of `run` / `create`: host cgroup pinning and limits. */
export interface HostLimitFlags {
  cpusetCpus?: string;
  pidsLimit?: string;
  cpuShares?: string;
  /** The container's limits in the guest. */
  limitMemory?: string;
  limitCpus?: string;
  limitPids?: string;
}

/** `--limit-memory/--limit-cpus/--limit-pids` → the container's OCI resources. */
export function containerLimitOptions(o: HostLimitFlags): { resources?: ContainerResources } {
  const r: ContainerResources = {};
  if (o.limitMemory !== undefined) {
    const m = /^(\d+)([kKmMgG]?)(i?[bB])?$/.exec(o.limitMemory.trim());
    const unit = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }[
      (m?.[2] ?? "").toLowerCase() as "" | "k" | "m" | "g"
    ];
    const bytes = m ? Number(m[1]) * unit : NaN;
    if (!(bytes >= 4 * 2 ** 20))
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --limit-memory "${o.limitMemory}": a size of at least 4M, e.g. 64M`,
      );
    r.memoryBytes = bytes;
  }
  if (o.limitCpus !== undefined) {
    const n = Number(o.limitCpus);
    if (!(n > 0 && n <= 1024))
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `invalid --limit-cpus "${o.limitCpus}": a positive number such as 0.5`,
      );
    r.cpus = n;
  }
  if (o.limitPids !== undefined) r.pidsLimit = parsePositive("--limit-pids", o.limitPids);
  return Object.keys(r).length ? { resources: r } : {};
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

function size(bytes: number | undefined): string {
  if (bytes === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

const percent = (v: number | undefined): string => (v === undefined ? "-" : `${v.toFixed(1)}%`);

function statsTable(rows: StatsRow[]): string {
  return table(
    [
      "SANDBOX",
      "CPU % (HOST)",
      "CPU % (GUEST)",
      "GUEST MEM / TOTAL",
      "HOST MEM / LIMIT",
      "NET I/O",
      "BLOCK I/O",
      "PIDS",
    ],
    rows.map((r) => [
      r.id,
      percent(r.hostCpuPercent),
      percent(r.guestCpuPercent),
      `${size(r.guestMemoryBytes)} / ${size(r.guestMemoryTotalBytes)}`,
      `${size(r.hostMemoryBytes)} / ${size(r.hostMemoryLimitBytes)}`,
      `${size(r.netRxBytes)} / ${size(r.netTxBytes)}`,
      `${size(r.blockReadBytes)} / ${size(r.blockWriteBytes)}`,
      r.pids === undefined ? "-" : String(r.pids),
    ]),
  );
}

/** `cocoon stats`: docker's verb; CPU % needs two samples, taken `intervalMs` apart. */
export function registerStatsCommand(program: Command, run: Runner): void {
  program
    .command("stats")
    .description(
      "show CPU, memory, block I/O and tasks of running sandboxes, from the host's and the guest's cgroups",
    )
    .argument("[id...]", "sandbox ids (default: every running sandbox)")
    .option("--no-stream", "print one sample and exit")
    .option("--interval <ms>", "time between samples", "1000")
    .addHelpText(
      "after",
      "\nCPU %: 100% is one CPU (host: the VMM's threads; guest: busy time over its CPUs).\nNetwork I/O is not shown: QEMU sandboxes have no network yet.",
    )
    .action((ids: string[], o: { stream: boolean; interval: string }) =>
      run(async (ctx) => {
        const intervalMs = Number(o.interval);
        if (!Number.isInteger(intervalMs) || intervalMs < 100)
          throw new ConfigError(
            "ERR_INVALID_ARGUMENT",
            `invalid --interval "${o.interval}": at least 100 (ms)`,
          );
        const runtime = Runtime.fromConfig(ctx.loaded, ctx.logger);
        const wanted = ids.length
          ? ids
          : (await runtime.listSandboxes()).filter((s) => s.state === "running").map((s) => s.id);
        const sandboxes = [];
        for (const id of wanted) sandboxes.push(await runtime.loadSandbox(id));
        try {
          let previous = await Promise.all(sandboxes.map((s) => s.stats()));
          for (;;) {
            await sleep(intervalMs);
            const next = await Promise.all(sandboxes.map((s) => s.stats()));
            const rows = next.map((b, i) => statsRow(previous[i]!, b));
            previous = next;
            if (ctx.json) ctx.io.out(JSON.stringify(rows, null, o.stream ? undefined : 2));
            else ctx.io.out(statsTable(rows));
            if (!o.stream) return 0;
          }
        } finally {
          for (const s of sandboxes) await s.release();
        }
      }),
    );
}
