import { z } from "zod";
import type { DocumentKind } from "../../store/atomic.js";
import { sandboxDocSchema } from "../state.js";

/**
 * What `snapshot.json` records next to a snapshot's VM files. QEMU: `state` (device state and
 * RAM in QEMU's migration format). Firecracker: `state` (its vmstate), `memory` (the guest's
 * RAM) and `firecracker.json` (the driver's manifest). Written last: a directory without it is
 * no snapshot.
 */
export const snapshotMetaSchema = z.object({
  name: z.string(),
  createdAt: z.string(),
  /** A snapshot is restored only by the cocoon version that made it (its device set and agent). */
  cocoonVersion: z.string(),
  /** Host architecture: QEMU's CPU state does not move between architectures. */
  hostArch: z.string(),
  /** The hypervisor that made it: only the same type restores it. */
  hypervisorType: z.enum(["qemu", "firecracker"]),
  /** QEMU's machine type; "firecracker" for a Firecracker snapshot. */
  machine: z.string(),
  /** Firecracker: the version that took it (the vmstate format is version-specific). */
  firecrackerVersion: z.string().optional(),
  memoryMiB: z.number().int().positive(),
  vcpus: z.number().int().positive(),
  /**
   * QEMU: hash of the command line and the identity of QEMU, kernel and rootfs (template-key.ts).
   * Firecracker: hash of the VM shape and the identity of Firecracker, jailer, kernel and rootfs
   * (firecracker/snapshot-key.ts).
   */
  key: z.string(),
  /** Size of `state`: a cut-short or replaced file is refused before the VMM reads it. */
  stateBytes: z.number().int().positive(),
  /** Firecracker: size of `memory`, checked the same way. */
  memoryBytes: z.number().int().positive().optional(),
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
  /** Bytes on disk (QEMU's state file: device state and non-zero RAM pages; Firecracker's vmstate and memory). */
  sizeBytes: number;
  cocoonVersion: string;
  /** Whether this cocoon on this host can restore it; else why not. */
  restorable: true | string;
}
