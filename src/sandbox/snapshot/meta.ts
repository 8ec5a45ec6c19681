import { z } from "zod";
import type { DocumentKind } from "../../store/atomic.js";
import { sandboxDocSchema } from "../state.js";

/**
 * What `snapshot.json` records next to a snapshot's `state` file (device state and RAM in
 * QEMU's migration format). Written last: a directory without it is no snapshot.
 */
export const snapshotMetaSchema = z.object({
  name: z.string(),
  createdAt: z.string(),
  /** A snapshot is restored only by the cocoon version that made it (its device set and agent). */
  cocoonVersion: z.string(),
  /** Host architecture: QEMU's CPU state does not move between architectures. */
  hostArch: z.string(),
  hypervisorType: z.literal("qemu"),
  machine: z.string(),
  memoryMiB: z.number().int().positive(),
  vcpus: z.number().int().positive(),
  /** Hash of the QEMU command line and the identity of QEMU, kernel and rootfs (template-key.ts). */
  key: z.string(),
  /** Size of `state`: a cut-short or replaced file is refused before QEMU reads it. */
  stateBytes: z.number().int().positive(),
  /** The source VM's RAM was a named memory backend (a template clone): the restore names it too. */
  namedRam: z.boolean(),
  source: z.string(),
  /** The source sandbox as it was: its configuration and what ran in it. */
  sandbox: z.object({
    config: sandboxDocSchema.shape.config,
    state: z.enum(["ready", "running"]),
    guestProcessExit: sandboxDocSchema.shape.guestProcessExit,
    watchMain: z.object({ execId: z.string(), graceMs: z.number() }).optional(),
  }),
});
export type SnapshotMeta = z.infer<typeof snapshotMetaSchema>;

export const SNAPSHOT_DOC: DocumentKind<SnapshotMeta> = {
  schema: "cocoon.snapshot",
  version: 1,
  data: snapshotMetaSchema,
};

/** What `snapshot ls` shows. */
export interface SnapshotInfo {
  name: string;
  createdAt: string;
  source: string;
  memoryMiB: number;
  /** Bytes on disk (the state file: device state and the guest's non-zero RAM pages). */
  sizeBytes: number;
  cocoonVersion: string;
  /** Whether this cocoon on this host can restore it; else why not. */
  restorable: true | string;
}
