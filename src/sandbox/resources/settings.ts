import { z } from "zod";

/** A cpuset list: "0", "0-3", "0,2-3". */
export const CPU_LIST = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;

/**
 * How a sandbox's host cgroups are set up. `mode`: `auto` uses them where the host allows
 * (root, controllers mounted) and says so in the log otherwise; `required` refuses to create a
 * sandbox without them; `off` leaves the VMM in cocoon's own cgroup.
 */
export const cgroupSettingsSchema = z
  .object({
    mode: z.enum(["auto", "required", "off"]).default("auto"),
    /** Host CPUs the vCPU threads may run on (`--cpuset-cpus`). */
    cpusetCpus: z.string().regex(CPU_LIST, "a CPU list such as 0-1,3").optional(),
    /** Relative CPU weight 1..10000 (v2 cpu.weight; v1 cpu.shares is derived from it). */
    cpuWeight: z.number().int().min(1).max(10_000).optional(),
    pidsLimit: z.number().int().positive().default(1024),
    /** Host memory allowed beyond the guest's RAM: QEMU itself, TCG's code cache, virtiofsd. */
    memoryOverheadMB: z.number().int().positive().default(512),
    cpuPeriodUs: z.number().int().min(1_000).max(1_000_000).default(100_000),
  })
  .default({ mode: "auto", pidsLimit: 1024, memoryOverheadMB: 512, cpuPeriodUs: 100_000 });
export type CgroupSettings = z.output<typeof cgroupSettingsSchema>;

/** The CPU numbers in a cpuset list. */
export function cpuListMembers(list: string): number[] {
  const out: number[] = [];
  for (const part of list.split(",")) {
    const [a, b] = part.split("-").map(Number) as [number, number | undefined];
    for (let i = a; i <= (b ?? a); i++) out.push(i);
  }
  return out;
}
