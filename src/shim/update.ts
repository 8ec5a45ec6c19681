import { z } from "zod";
import { TtrpcError, Code } from "./ttrpc/status.js";

/** The parts of an OCI LinuxResources (Update's `resources`, JSON in an Any) that size a VM. */
const linuxResourcesSchema = z.object({
  cpu: z
    .object({ quota: z.number().int().optional(), period: z.number().int().nonnegative().optional() })
    .partial()
    .optional(),
  memory: z.object({ limit: z.number().int().optional() }).partial().optional(),
});

/**
 * The VM size an Update asks for: the task's CPU and memory limits on top of the configured
 * size (which covers the guest kernel and agent), as the pod's VM is sized at boot. Unlimited
 * (absent, 0 or -1) leaves that dimension alone; nothing to change → undefined.
 */
export function vmSizeForUpdate(
  value: Uint8Array | undefined,
  base: { vcpus: number; memoryMB: number },
): { cpus?: number; memoryMB?: number } | undefined {
  if (!value || value.length === 0) return undefined;
  let parsed;
  try {
    parsed = linuxResourcesSchema.parse(JSON.parse(Buffer.from(value).toString("utf8")));
  } catch (err) {
    const why =
      err instanceof z.ZodError
        ? err.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
        : (err as Error).message;
    throw new TtrpcError(Code.invalidArgument, `the update's resources are not OCI LinuxResources: ${why}`);
  }
  const { quota, period } = parsed.cpu ?? {};
  const limit = parsed.memory?.limit;
  const size = {
    ...(quota && quota > 0 && period && period > 0 ? { cpus: base.vcpus + Math.ceil(quota / period) } : {}),
    ...(limit && limit > 0 ? { memoryMB: base.memoryMB + Math.ceil(limit / 2 ** 20) } : {}),
  };
  return Object.keys(size).length ? size : undefined;
}
