import { z } from "zod";

/**
 * A schema built the first time it is used rather than when its module loads: the guest agent
 * evaluates the protocol's modules at every boot, under emulation, before it can answer
 * (issue 14), and building every schema up front took ~40% of that evaluation (median 801 →
 * 487 ms in the guest) while a request needs only its own method's. Shared schemas are such
 * functions, and methods.ts's lazyMethod does the same for each method's pair. (Here rather
 * than in methods.ts, which imports this module.)
 */
export function lazySchema<T extends z.ZodType>(build: () => T): () => T {
  let built: T | undefined;
  return () => (built ??= build());
}

/**
 * Resource control: a container's limits inside the guest, applied by runc as the OCI
 * `linux.resources` (cgroup v2 in the guest), so one container cannot take the whole VM.
 */
export const containerResourcesSchema = lazySchema(() =>
  z
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
    .strict(),
);
export type ContainerResources = z.infer<ReturnType<typeof containerResourcesSchema>>;

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
