import path from "node:path";
import { z } from "zod";
import type { CgroupLayout } from "./layout.js";

/**
 * Where a sandbox's cgroups live and what goes where. It is computed and persisted before any
 * directory is made, so a crash between mkdir and the record cannot leak a cgroup, and removal
 * works from the record alone (no re-detection, no recomputation).
 */
export const cgroupPlanSchema = z.object({
  version: z.union([z.literal(1), z.literal(2)]),
  sandboxCgroupOnly: z.boolean(),
  /** Every directory this sandbox owns, parents before children. */
  dirs: z.array(z.string()),
  /** v2 directories that must be made threaded (vCPU threads apart from the rest of the VMM). */
  threaded: z.array(z.string()).default([]),
  /** v2: controllers to enable in the sandbox directory's subtree_control. */
  subtreeControllers: z.array(z.string()).default([]),
  /** Directories a whole process (VMM, helper) joins: one per v1 hierarchy, or the v2 one. */
  procs: z.array(z.string()),
  /** Directories the vCPU threads join (after `procs`), when split from the overhead. */
  vcpus: z.array(z.string()),
  /** Directory carrying the CPU quota and weight; the cpuset one; memory; pids; accounting. */
  cpu: z.string().optional(),
  cpuset: z.string().optional(),
  /** cpuset directories that are not pinned but still need cpus/mems copied from the parent (v1). */
  cpusetInherit: z.array(z.string()).default([]),
  memory: z.string().optional(),
  pids: z.string().optional(),
  cpuacct: z.string().optional(),
  blkio: z.string().optional(),
});
export type CgroupPlan = z.infer<typeof cgroupPlanSchema>;

export function cgroupName(sandboxId: string): string {
  return `cocoon-${sandboxId}`;
}

const THREAD_LEVEL = ["cpu", "cpuacct", "cpuset"];

/**
 * The plan for one sandbox. `sandboxCgroupOnly` puts every VMM thread and helper in the
 * sandbox cgroup, under its CPU quota; otherwise the vCPU threads go to `<sandbox>/vcpus`
 * (quota, pinning) and the rest of the VMM with its helpers to `<sandbox>/overhead`, so
 * emulation, I/O and virtiofsd do not eat into the guest's CPU share (Kata's overhead
 * cgroup). Memory and pids always cover the whole sandbox: guest RAM is the VMM's memory.
 */
export function planCgroups(
  layout: CgroupLayout,
  sandboxId: string,
  sandboxCgroupOnly: boolean,
  parentDirs?: { v1?: Record<string, string>; v2?: string },
): CgroupPlan {
  const name = cgroupName(sandboxId);
  if (layout.version === 2) {
    const s = path.join(parentDirs?.v2 ?? layout.ownDir, name);
    const has = (c: string): boolean => layout.controllers.includes(c);
    const base = {
      version: 2 as const,
      sandboxCgroupOnly,
      ...(has("memory") ? { memory: s } : {}),
      ...(has("pids") ? { pids: s } : {}),
      ...(has("cpu") ? { cpuacct: s } : {}),
      ...(has("io") ? { blkio: s } : {}),
    };
    if (sandboxCgroupOnly) {
      return {
        ...base,
        dirs: [s],
        threaded: [],
        subtreeControllers: [],
        procs: [s],
        vcpus: [],
        ...(has("cpu") ? { cpu: s } : {}),
        ...(has("cpuset") ? { cpuset: s } : {}),
        cpusetInherit: [],
      };
    }
    const vcpus = path.join(s, "vcpus");
    const overhead = path.join(s, "overhead");
    return {
      ...base,
      dirs: [s, vcpus, overhead],
      threaded: [vcpus, overhead],
      subtreeControllers: ["cpu", "cpuset"].filter(has),
      procs: [overhead],
      vcpus: [vcpus],
      ...(has("cpu") ? { cpu: vcpus } : {}),
      ...(has("cpuset") ? { cpuset: vcpus } : {}),
      cpusetInherit: [],
    };
  }
  const plan: CgroupPlan = {
    version: 1,
    sandboxCgroupOnly,
    dirs: [],
    threaded: [],
    subtreeControllers: [],
    procs: [],
    vcpus: [],
    cpusetInherit: [],
  };
  for (const h of layout.hierarchies) {
    const parent = h.controllers.map((c) => parentDirs?.v1?.[c]).find(Boolean) ?? h.ownDir;
    const s = path.join(parent, name);
    const threadLevel = h.controllers.some((c) => THREAD_LEVEL.includes(c));
    let limitDir = s;
    if (threadLevel && !sandboxCgroupOnly) {
      limitDir = path.join(s, "vcpus");
      const overhead = path.join(s, "overhead");
      plan.dirs.push(s, limitDir, overhead);
      plan.procs.push(overhead);
      plan.vcpus.push(limitDir);
      if (h.controllers.includes("cpuset")) plan.cpusetInherit.push(s, overhead);
    } else {
      plan.dirs.push(s);
      plan.procs.push(s);
    }
    for (const c of h.controllers) {
      if (c === "cpu") plan.cpu = limitDir;
      if (c === "cpuset") plan.cpuset = limitDir;
      // accounting covers the whole sandbox, overhead included
      if (c === "cpuacct") plan.cpuacct = s;
      if (c === "memory") plan.memory = s;
      if (c === "pids") plan.pids = s;
      if (c === "blkio") plan.blkio = s;
    }
  }
  return plan;
}
