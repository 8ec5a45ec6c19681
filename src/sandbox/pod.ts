import { mkdir, rmdir } from "node:fs/promises";
import path from "node:path";
import type { Storage } from "../agent/protocol/methods.js";
import { SandboxError, errnoCode } from "../errors.js";
import { mountsUnder, unmount, unmountAllUnder } from "../host/mount.js";
import { runChecked } from "../host/process.js";
import type { FsDevice } from "../hypervisor/devices.js";
import { guestStoragePath } from "./rootfs.js";

/**
 * The pod share: one directory shared with the guest when the VM boots, into which containers
 * added later (a Kubernetes pod's containers after its sandbox container) get their rootfs
 * bind-mounted. It exists because microvm has no device hotplug, so no new virtio-fs share can
 * be attached to a running VM. The directory is a shared mount point: virtiofsd's mount
 * namespace is a slave of the host's, so a bind mount made below it after the VM booted
 * propagates into virtiofsd and the guest sees it (as Kata's `shared/` directory works).
 */
export const POD_SHARE_TAG = "cocoon-pod";

export function podShareDir(workDir: string): string {
  return path.join(workDir, "pod");
}

/** Makes `dir` a shared bind mount of itself; undone on failure. */
export async function createPodShare(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await runChecked("mount", ["--bind", "--", dir, dir], { timeoutMs: 30_000 });
  try {
    await runChecked("mount", ["--make-shared", "--", dir], { timeoutMs: 30_000 });
  } catch (err) {
    await unmount(dir, { lazy: true }).catch(() => undefined);
    throw err;
  }
}

export function podShareDevice(dir: string, fsType: "virtio-fs" | "virtio-9p"): FsDevice {
  return { type: "fs", tag: POD_SHARE_TAG, hostPath: dir, fsType, readOnly: true };
}

/** Where a container's rootfs goes inside the pod share (one directory per container id). */
export function podRootfsPath(dir: string, containerId: string): string {
  return path.join(dir, containerId);
}

/** Bind-mounts the caller's rootfs directory into the pod share for the guest to find. */
export async function bindIntoPodShare(source: string, target: string): Promise<void> {
  await mkdir(target, { recursive: true, mode: 0o755 });
  try {
    await runChecked("mount", ["--rbind", "--", source, target], { timeoutMs: 30_000 });
  } catch (err) {
    await rmdir(target).catch(() => undefined);
    throw new SandboxError("ERR_INVALID_ARGUMENT", `cannot share the rootfs ${source} with the pod's VM`, {
      cause: err,
      details: { path: source },
    });
  }
}

/** Unmounts a container's rootfs from the pod share and removes its (then empty) directory. */
export async function unbindFromPodShare(target: string): Promise<void> {
  await unmountAllUnder(target, { lazy: true });
  await rmdir(target).catch((err: unknown) => {
    if (errnoCode(err) !== "ENOENT") throw err;
  });
}

/** The guest storage of a container whose rootfs sits in the pod share. */
export function podRootfsStorage(containerId: string, fsType: "virtio-fs" | "virtio-9p"): Storage {
  return {
    driver: fsType === "virtio-fs" ? "virtio-fs" : "9p",
    source: POD_SHARE_TAG,
    fstype: fsType === "virtio-fs" ? "virtiofs" : "9p",
    mountPoint: guestStoragePath(containerId),
    readOnly: true,
    options: [],
  };
}

/**
 * Unmounts everything below a sandbox's work directory. A recursive delete must never run over
 * a live bind mount: it would delete the files of the user's rootfs through it.
 */
export async function unmountWorkDir(workDir: string): Promise<void> {
  await unmountAllUnder(workDir, { lazy: true });
  const left = await mountsUnder(workDir);
  if (left.length)
    throw new SandboxError(
      "ERR_INTERNAL",
      `cannot remove ${workDir}: ${left.map((m) => m.target).join(", ")} is still mounted`,
    );
}
