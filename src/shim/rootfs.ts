import path from "node:path";
import { mkdir } from "node:fs/promises";
import { runChecked } from "../host/process.js";
import { unmountAllUnder } from "../host/mount.js";
import type { Mount } from "../gen/shim/github.com/containerd/containerd/api/types/mount_pb.js";
import { TtrpcError, Code } from "./ttrpc/status.js";

/** The bundle's rootfs directory, where the snapshotter's mounts go. */
export function bundleRootfs(bundle: string): string {
  return path.join(bundle, "rootfs");
}

/**
 * Mounts the snapshotter's mounts from Create on `<bundle>/rootfs` (overlay or bind, as
 * containerd's mount.All does); the directory is then shared with the guest over virtio-fs.
 * On failure whatever was mounted is undone.
 */
export async function mountRootfs(bundle: string, mounts: Mount[]): Promise<void> {
  const target = bundleRootfs(bundle);
  await mkdir(target, { recursive: true });
  try {
    for (const m of mounts) {
      if (!m.type) throw new TtrpcError(Code.invalidArgument, "a rootfs mount has no type");
      const opts = m.options.filter(Boolean);
      const args =
        m.type === "bind" || opts.includes("bind") || opts.includes("rbind")
          ? ["--rbind", ...(opts.length ? ["-o", opts.join(",")] : []), "--", m.source, target]
          : ["-t", m.type, ...(opts.length ? ["-o", opts.join(",")] : []), "--", m.source, target];
      await runChecked("mount", args, { timeoutMs: 30_000 });
    }
  } catch (err) {
    await unmountRootfs(bundle).catch(() => undefined);
    throw err;
  }
}

/** Unmounts everything on `<bundle>/rootfs` (Delete, and the `delete` subcommand after a crash). */
export async function unmountRootfs(bundle: string): Promise<void> {
  // Lazy: the guest's virtiofsd may still be letting go of the directory.
  for (let i = 0; i < 8; i++) {
    if ((await unmountAllUnder(bundleRootfs(bundle), { lazy: true })).length === 0) return;
  }
}
