import { z } from "zod";

/**
 * Resource control: a container's limits inside the guest, applied by runc as the OCI
 * `linux.resources` (cgroup v2 in the guest), so one container cannot take the whole VM.
 */
export const containerResourcesSchema = z
  .object({
    memoryBytes: z
      .number()
      .int()
      .min(4 * 1024 * 1024)
      .optional(),
    /** CPUs' worth of CFS quota (0.5 = half a CPU). */
    cpus: z.number().positive().max(1024).optional(),
    pidsLimit: z.number().int().positive().optional(),
  })
  .strict();
export type ContainerResources = z.infer<typeof containerResourcesSchema>;

/** The OCI `linux.resources` fields for these limits (runc's cgroup v2 mapping does the rest). */
export function ociResources(r: ContainerResources | undefined): Record<string, unknown> {
  if (!r) return {};
  const period = 100_000;
  return {
    ...(r.memoryBytes ? { memory: { limit: r.memoryBytes, swap: r.memoryBytes } } : {}),
    ...(r.cpus ? { cpu: { quota: Math.round(r.cpus * period), period } } : {}),
    ...(r.pidsLimit ? { pids: { limit: r.pidsLimit } } : {}),
  };
}
