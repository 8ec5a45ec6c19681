import type { SnapshotCreateParams, SnapshotLoadParams } from "../../gen/firecracker/index.js";
import { HypervisorError } from "../../errors.js";
import { atLeast, type FcVersion } from "./version.js";

/**
 * Snapshot requests for the running version (firecracker-api.md §6): the memory backend field
 * changed in 1.1 (`mem_file_path` → `mem_backend`), dirty-page tracking on load was renamed in
 * 1.13 (`enable_diff_snapshots` → `track_dirty_pages`), and create's `version` went away in 1.6.
 */

export type SnapshotType = "Full" | "Diff";
export type MemoryBackendType = "File" | "Uffd";

/** A snapshot on disk: what a restore needs, with host paths. */
export interface Snapshot {
  type: SnapshotType;
  /** vmstate file (host path). */
  vmstate: string;
  /** Guest memory file (host path). */
  mem: string;
  /** The Firecracker version that took it: restore with the same one. */
  firecrackerVersion: string;
  /** Drives: jail path Firecracker used → host file, to be put back at the same paths. */
  disks: { driveId: string; jailPath: string; hostPath: string }[];
  /** The vsock socket path Firecracker used (jail path), if a vsock device was configured. */
  vsockUdsPath?: string;
  /** Network interfaces (restores need the same tap names, or network_overrides). */
  netIfaces: { ifaceId: string; hostDevName: string }[];
}

export interface CreateSnapshotRequest {
  type?: SnapshotType;
  snapshotPath: string;
  memFilePath: string;
  /** v1.0–1.5 only: the vmstate format version to write. */
  targetVersion?: string;
}

export function snapshotCreateBody(v: FcVersion, r: CreateSnapshotRequest): SnapshotCreateParams {
  if (r.targetVersion !== undefined && atLeast(v, "1.6.0")) {
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      `Firecracker ${v.raw} cannot write older snapshot formats (the "version" field was removed in 1.6.0)`,
    );
  }
  return {
    snapshot_type: r.type ?? "Full",
    snapshot_path: r.snapshotPath,
    mem_file_path: r.memFilePath,
    ...(r.targetVersion !== undefined ? { version: r.targetVersion } : {}),
  };
}

export interface LoadSnapshotRequest {
  snapshotPath: string;
  backend: MemoryBackendType;
  /** The memory file (File) or the page-fault handler's socket (Uffd), as Firecracker sees it. */
  backendPath: string;
  resume?: boolean;
  trackDirtyPages?: boolean;
  networkOverrides?: { iface_id: string; host_dev_name: string }[];
  vsockOverride?: string;
  clockRealtime?: boolean;
}

/** The load body for `v`, using the oldest field names `v` still accepts without deprecation. */
export function snapshotLoadBody(v: FcVersion, r: LoadSnapshotRequest): SnapshotLoadParams {
  const body: SnapshotLoadParams = { snapshot_path: r.snapshotPath };
  if (atLeast(v, "1.1.0")) {
    body.mem_backend = { backend_type: r.backend, backend_path: r.backendPath };
  } else {
    if (r.backend === "Uffd") {
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `Firecracker ${v.raw} can only load memory from a file (the Uffd backend was added in 1.1.0)`,
      );
    }
    body.mem_file_path = r.backendPath;
  }
  if (r.trackDirtyPages) {
    if (atLeast(v, "1.13.0")) body.track_dirty_pages = true;
    else body.enable_diff_snapshots = true;
  }
  if (r.resume !== undefined) body.resume_vm = r.resume;
  if (r.networkOverrides?.length) body.network_overrides = r.networkOverrides;
  if (r.vsockOverride !== undefined) body.vsock_override = { uds_path: r.vsockOverride };
  if (r.clockRealtime) body.clock_realtime = true;
  return body;
}
