import { createHash } from "node:crypto";
import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Storage } from "../agent/protocol/methods.js";
import { SandboxError, errnoCode, messageOf } from "../errors.js";
import { runChecked } from "../host/process.js";
import type { BlockDevice, FsDevice } from "../hypervisor/devices.js";
import type { SharedFsType } from "../hypervisor/types.js";
import type { RootfsSource } from "./config.js";

/** A container rootfs made ready for the guest: shared as a directory or attached as a disk. */
export type PreparedRootfs =
  | { kind: "share"; hostPath: string; owned: string[]; device: FsDevice; storage: Storage }
  | {
      kind: "block";
      hostPath: string;
      owned: string[];
      device: BlockDevice;
      storage: Omit<Storage, "driver" | "source">;
    };

/** 9p mount tags are at most 31 bytes: derive a short, stable one from the container id. */
export function mountTag(containerId: string): string {
  return `c-${createHash("sha256").update(containerId).digest("hex").slice(0, 12)}`;
}

export function guestStoragePath(containerId: string): string {
  return `/run/cocoon/storage/${containerId}`;
}

async function checkSource(source: RootfsSource): Promise<void> {
  try {
    const st = await stat(source.path);
    if (source.type === "dir" && !st.isDirectory()) throw new Error("not a directory");
    if (source.type === "tar" && !st.isFile()) throw new Error("not a file");
  } catch (err) {
    const why = errnoCode(err) === "ENOENT" ? "does not exist" : messageOf(err);
    throw new SandboxError(
      "ERR_INVALID_ARGUMENT",
      `the rootfs ${source.type === "dir" ? "directory" : "tarball"} ${source.path} ${why}`,
      {
        details: { path: source.path },
      },
    );
  }
}

async function duBytes(dir: string): Promise<number> {
  const { stdout } = await runChecked("du", ["-sb", dir], { timeoutMs: 300_000 });
  return Number(stdout.split(/\s/)[0] ?? 0);
}

/**
 * Prepares a container's rootfs: a tarball is unpacked under the sandbox's own directory;
 * then either the directory is shared (virtio-fs or 9p) or, for hypervisors without file
 * sharing, copied into an ext4 image to attach as a disk. Everything created is listed in
 * `owned` so that deleting the container removes it.
 */
export async function prepareRootfs(
  containerId: string,
  source: RootfsSource,
  options: { workDir: string; sharing: SharedFsType | "" },
): Promise<PreparedRootfs> {
  await checkSource(source);
  const owned: string[] = [];
  let dir = source.path;
  try {
    if (source.type === "tar") {
      dir = path.join(options.workDir, containerId, "rootfs");
      owned.push(path.join(options.workDir, containerId));
      await mkdir(dir, { recursive: true, mode: 0o755 });
      await runChecked("tar", ["-xf", source.path, "-C", dir, "--numeric-owner"], {
        timeoutMs: 600_000,
      }).catch((err: unknown) => {
        throw new SandboxError(
          "ERR_INVALID_ARGUMENT",
          `cannot unpack the rootfs tarball ${source.path}: ${messageOf(err)}`,
        );
      });
    }
    const mountPoint = guestStoragePath(containerId);
    if (options.sharing === "virtio-fs" || options.sharing === "virtio-9p") {
      const tag = mountTag(containerId);
      const fsType = options.sharing;
      return {
        kind: "share",
        hostPath: dir,
        owned,
        device: { type: "fs", tag, hostPath: dir, fsType, readOnly: true },
        storage: {
          driver: fsType === "virtio-fs" ? "virtio-fs" : "9p",
          source: tag,
          fstype: fsType === "virtio-fs" ? "virtiofs" : "9p",
          mountPoint,
          readOnly: true,
        },
      };
    }
    const image = path.join(options.workDir, `${containerId}.ext4`);
    owned.push(image);
    await mkdir(options.workDir, { recursive: true });
    const sizeMiB = Math.ceil(((await duBytes(dir)) * 1.25) / 2 ** 20) + 32;
    await runChecked(
      "mkfs.ext4",
      ["-q", "-F", "-L", "cocoon-ctr", "-m", "0", "-E", "root_owner=0:0", "-d", dir, image, `${sizeMiB}M`],
      {
        timeoutMs: 600_000,
      },
    );
    return {
      kind: "block",
      hostPath: image,
      owned,
      device: { type: "block", id: `rootfs-${containerId}`, path: image, readOnly: true },
      storage: { fstype: "ext4", mountPoint, readOnly: true, options: [] },
    };
  } catch (err) {
    for (const p of owned) await rm(p, { recursive: true, force: true });
    throw err;
  }
}

/** The guest storage for a block device once the hypervisor reported where it is. */
export function blockStorage(guestPath: string, base: Omit<Storage, "driver" | "source">): Storage {
  const scsi = /^\d+:\d+:\d+:\d+$/.test(guestPath);
  return { ...base, driver: scsi ? "scsi" : "blk", source: guestPath };
}
