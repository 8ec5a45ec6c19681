import { stat } from "node:fs/promises";
import os from "node:os";
import type { Logger } from "pino";
import { z } from "zod";
import { ConfigError, HostError } from "../../errors.js";
import {
  applyLimits,
  checkCgroupsFree,
  firstBusyCgroup,
  createCgroups,
  joinProcess,
  joinVcpuThreads,
  readCgroupStats,
  removeCgroups,
  type CgroupLimits,
  type HostCgroupStats,
} from "../../host/cgroups/cgroupfs.js";
import { controllerReport, detectCgroupLayout } from "../../host/cgroups/layout.js";
import { cgroupPlanSchema, planCgroups, type CgroupPlan } from "../../host/cgroups/plan.js";
import type { VmmPlacement } from "../../hypervisor/hypervisor.js";
import type { DocumentKind } from "../../store/atomic.js";
import type { Store } from "../../store/store.js";
import { cpuListMembers, type CgroupSettings } from "./settings.js";

const MiB = 1024 * 1024;

/**
 * The `cocoon-<id>` cgroup directories that exist now, as a plan to remove them: a sandbox
 * without its record does not say which layout (sandbox_cgroup_only or not) it was made with,
 * so both are looked for. Parents come first (removeCgroups goes backwards: children first).
 * Undefined when the host has no usable cgroups.
 */
export async function existingSandboxCgroups(id: string): Promise<{ plan: CgroupPlan } | undefined> {
  const layout = await detectCgroupLayout();
  if (!layout) return undefined;
  const plan = planCgroups(layout, id, false);
  const dirs: string[] = [];
  for (const dir of new Set([...plan.dirs, ...planCgroups(layout, id, true).dirs]))
    if ((await stat(dir).catch(() => undefined))?.isDirectory()) dirs.push(dir);
  return { plan: { ...plan, dirs: dirs.sort((a, b) => a.length - b.length) } };
}

const cgroupDocSchema = z.object({
  plan: cgroupPlanSchema,
  limits: z.object({
    cpus: z.number(),
    periodUs: z.number(),
    weight: z.number().optional(),
    cpusetCpus: z.string().optional(),
    memoryBytes: z.number(),
    pidsMax: z.number(),
  }),
  /** The settings' overhead allowance, kept so a resize recomputes the memory limit. */
  memoryOverheadMB: z.number(),
});
type CgroupDoc = z.infer<typeof cgroupDocSchema>;

const CGROUP_DOC: DocumentKind<CgroupDoc> = { schema: "cocoon.cgroups", version: 1, data: cgroupDocSchema };
const DOC_NAME = "cgroups";

/** What the sandbox's VM is sized to: the limits follow it. */
export interface VmSize {
  vcpus: number;
  memoryMB: number;
}

export function limitsFor(settings: CgroupSettings, size: VmSize): CgroupLimits {
  return {
    cpus: size.vcpus,
    periodUs: settings.cpuPeriodUs,
    ...(settings.cpuWeight ? { weight: settings.cpuWeight } : {}),
    ...(settings.cpusetCpus ? { cpusetCpus: settings.cpusetCpus } : {}),
    memoryBytes: (size.memoryMB + settings.memoryOverheadMB) * MiB,
    pidsMax: settings.pidsLimit,
  };
}

/** A pinning list naming CPUs the host does not have is refused before anything is made. */
function checkCpuset(list: string | undefined, hostCpus = os.cpus().length): void {
  if (!list) return;
  const bad = cpuListMembers(list).filter((c) => c >= hostCpus);
  if (bad.length) {
    throw new ConfigError(
      "ERR_RESOURCE_LIMIT",
      `--cpuset-cpus ${list} names CPU ${bad.join(", ")}, but this host has CPUs 0-${hostCpus - 1}`,
    );
  }
}

/**
 * A sandbox's host cgroups (the VMM, its vCPU threads and its helpers), persisted in the
 * sandbox's state directory as `cgroups.json` before any directory is made.
 */
export class SandboxCgroups {
  private constructor(
    private readonly store: Store,
    private readonly id: string,
    private doc: CgroupDoc,
  ) {}

  get plan(): CgroupPlan {
    return this.doc.plan;
  }

  get limits(): CgroupLimits {
    return this.doc.limits;
  }

  /**
   * Plans, records and creates the cgroups of a new sandbox; undefined when they are off or
   * the host cannot have them (with `mode = "auto"`). The caller removes them with
   * `SandboxCgroups.remove` (its failed-create path does).
   */
  static async prepare(
    store: Store,
    id: string,
    options: { settings: CgroupSettings; sandboxCgroupOnly: boolean; size: VmSize; logger: Logger },
  ): Promise<SandboxCgroups | undefined> {
    const { settings } = options;
    if (settings.mode === "off") return undefined;
    checkCpuset(settings.cpusetCpus);
    const layout = await detectCgroupLayout();
    const report = await controllerReport(layout);
    const missing = report.missing.filter((c) => c !== "blkio" && c !== "cpuacct");
    const problem =
      report.problem ??
      (missing.length ? `the ${missing.join(", ")} controller(s) are not available` : undefined);
    if (!layout || problem) {
      if (settings.mode === "required") {
        throw new HostError("ERR_CGROUP", `host cgroups are required but unusable: ${problem}`, {
          hint: 'run `cocoon check`; or set [runtime] cgroups = "auto" or "off"',
        });
      }
      options.logger.warn({ problem }, "host cgroups unusable: the sandbox runs without host limits");
      if (!layout || report.problem) return undefined;
    }
    const plan = planCgroups(layout, id, options.sandboxCgroupOnly);
    await checkCgroupsFree(plan);
    const doc: CgroupDoc = {
      plan,
      limits: limitsFor(settings, options.size),
      memoryOverheadMB: settings.memoryOverheadMB,
    };
    await store.writeSandbox(id, DOC_NAME, CGROUP_DOC, doc);
    await createCgroups(plan, doc.limits);
    return new SandboxCgroups(store, id, doc);
  }

  /** The recorded cgroups of an existing sandbox, if it has any. */
  static async load(store: Store, id: string): Promise<SandboxCgroups | undefined> {
    const stored = await store.readSandbox(id, DOC_NAME, CGROUP_DOC);
    return stored ? new SandboxCgroups(store, id, stored.data) : undefined;
  }

  /** Removes the recorded cgroups (the VMM must be gone). Idempotent. */
  static async remove(store: Store, id: string): Promise<void> {
    const stored = await store.readSandbox(id, DOC_NAME, CGROUP_DOC);
    if (stored) await removeCgroups(stored.data.plan);
  }

  /**
   * The `cocoon-<id>` cgroups of a sandbox whose record is gone (gc found its VM directory or
   * processes without it), for removal; undefined when there are none, or when a task is in
   * one (then they belong to a live sandbox of the same name under another state root).
   */
  static async unrecorded(id: string): Promise<{ tops: string[]; remove: () => Promise<void> } | undefined> {
    const found = await existingSandboxCgroups(id);
    if (!found?.plan.dirs.length || (await firstBusyCgroup(found.plan.dirs, found.plan.version)))
      return undefined;
    const dirs = found.plan.dirs;
    return {
      tops: dirs.filter((d) => !dirs.some((o) => d.startsWith(o + "/"))),
      remove: () => removeCgroups(found.plan, 1_000),
    };
  }

  /** The hook the driver calls as it starts processes and learns the vCPU threads. */
  placement(): VmmPlacement {
    return {
      process: (pid) => joinProcess(this.doc.plan, pid),
      vcpuThreads: (tids) => joinVcpuThreads(this.doc.plan, tids),
    };
  }

  /** Follows a resize: new quota and memory limit, persisted once written. */
  async resize(size: VmSize): Promise<void> {
    const limits: CgroupLimits = {
      ...this.doc.limits,
      cpus: size.vcpus,
      memoryBytes: (size.memoryMB + this.doc.memoryOverheadMB) * MiB,
    };
    await applyLimits(this.doc.plan, limits);
    this.doc = { ...this.doc, limits };
    await this.store.writeSandbox(this.id, DOC_NAME, CGROUP_DOC, this.doc);
  }

  stats(): Promise<HostCgroupStats> {
    return readCgroupStats(this.doc.plan);
  }
}
