import { z } from "zod";
import { ACRN_UUIDS } from "../../vmm/acrn/uuids.js";

/**
 * The ACRN-specific part of a persisted HypervisorState (`driver`): enough for another cocoon
 * process to stop the VM, free its UUID and keep hot-plugging into it.
 */
export const acrnDriverStateSchema = z.strictObject({
  version: z.literal(1),
  vmState: z.enum(["created", "running", "stopped"]),
  /** The UUID this VM holds in the global pool; absent once freed. */
  uuid: z.enum(ACRN_UUIDS).optional(),
  vmName: z.string().min(1),
  vmDir: z.string().min(1),
  /** Placeholder index → PCI slot, for blkrescan. */
  blockSlots: z.array(z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()])),
  /** Sockets acrn-dm made for serial ports added with addDevice (removed by cleanup). */
  serialSockets: z.array(z.string()),
});

export type AcrnDriverState = z.infer<typeof acrnDriverStateSchema>;
