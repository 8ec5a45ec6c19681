import { z } from "zod";
import { HypervisorError } from "../../errors.js";

/**
 * What the Firecracker driver persists in `HypervisorState.driver`, so that another cocoon
 * process can find the VM, its jail and its hotplugged drives again (`load`).
 */

const jailedResourceSchema = z.object({
  jailPath: z.string(),
  hostPath: z.string(),
  source: z.string(),
  method: z.enum(["bind", "link", "copy"]),
  readOnly: z.boolean(),
});

const slotSchema = z.object({
  index: z.number().int().min(0),
  deviceId: z.string(),
  /** Where the hotplugged file sits in the jail. */
  jailPath: z.string(),
  hostPath: z.string(),
  readOnly: z.boolean(),
});

export const driverStateSchema = z.object({
  schema: z.literal(1),
  id: z.string(),
  /** The id given to Firecracker and the jailer (letters, digits, '-'). */
  fcId: z.string(),
  jailed: z.boolean(),
  jailDir: z.string(),
  root: z.string(),
  pidFile: z.string(),
  execName: z.string(),
  socketPath: z.string(),
  vmDir: z.string(),
  consolePath: z.string(),
  logPath: z.string(),
  phase: z.enum(["not-ready", "api-ready", "vm-ready"]),
  paused: z.boolean(),
  firecrackerVersion: z.string().optional(),
  vsock: z.object({ guestCid: z.number().int(), jailPath: z.string(), hostPath: z.string() }).nullable(),
  slots: z.array(slotSchema),
  /** Guest device names of the pool drives, by index ("/dev/vdb"...). */
  poolGuestPaths: z.array(z.string()),
  resources: z.array(jailedResourceSchema),
  uid: z.number().int(),
  gid: z.number().int(),
  strategy: z.enum(["auto", "bind", "link", "copy"]),
  snapshot: z.object({ vmstate: z.string(), mem: z.string() }).optional(),
  /** Whether the VM booted with a balloon, and how many MiB it holds now (taken from the guest). */
  balloon: z.object({ amountMib: z.number().int().min(0) }).optional(),
});

export type DriverState = z.infer<typeof driverStateSchema>;
export type HotplugSlot = z.infer<typeof slotSchema>;

export function parseDriverState(raw: unknown): DriverState {
  const r = driverStateSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new HypervisorError(
      "ERR_STATE_CORRUPT",
      `the persisted Firecracker driver state is invalid at ${issue?.path.join(".") || "<root>"}: ${issue?.message ?? "?"}`,
    );
  }
  return r.data;
}
