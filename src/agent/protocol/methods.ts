import { z } from "zod";

/**
 * The agent's methods: name → params and result schemas. Both sides validate with these, so
 * a malformed request is refused by the agent and a malformed answer by the host. Mirrors the
 * Kata agent RPCs the runtime needs (see docs/agent-protocol.md).
 */

const empty = z.object({}).strict();

export const blockDeviceSchema = z.object({
  /** Kernel name, e.g. "vda" or "sdb". */
  name: z.string(),
  sizeBytes: z.number(),
  readOnly: z.boolean(),
  /** "host:channel:target:lun" for SCSI disks. */
  scsiAddress: z.string().optional(),
  serial: z.string().optional(),
});
export type GuestBlockDevice = z.infer<typeof blockDeviceSchema>;

export const METHODS = {
  /** Liveness. */
  "health.check": {
    params: empty,
    result: z.object({ status: z.enum(["SERVING", "NOT_SERVING"]) }),
  },
  /** Agent, protocol, kernel and Node versions. */
  "agent.version": {
    params: empty,
    result: z.object({ agentVersion: z.string(), protocol: z.number(), kernel: z.string(), node: z.string() }),
  },
  /** The guest's clocks: monotonic stops while the VM is paused. */
  "guest.clock": {
    params: empty,
    result: z.object({ monotonicNs: z.string(), realtimeMs: z.number(), uptimeSeconds: z.number() }),
  },
  /** Block devices the guest kernel sees (for hotplug checks). */
  "storage.listBlockDevices": {
    params: empty,
    result: z.object({ devices: z.array(blockDeviceSchema) }),
  },
} as const;

export type MethodName = keyof typeof METHODS;
export type ParamsOf<M extends MethodName> = z.input<(typeof METHODS)[M]["params"]>;
export type ResultOf<M extends MethodName> = z.output<(typeof METHODS)[M]["result"]>;

export function isMethodName(name: string): name is MethodName {
  return Object.prototype.hasOwnProperty.call(METHODS, name);
}
