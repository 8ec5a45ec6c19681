import { mkdir, readdir, readFile, readlink, rmdir } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { storageSchema } from "../../agent/protocol/methods.js";
import type { z } from "zod";
import { AgentOpError } from "./errors.js";
import { run } from "./run.js";

export type ParsedStorage = z.output<ReturnType<typeof storageSchema>>;

/** How long a hot-plugged disk may take to show up in /sys. */
const DEVICE_WAIT_MS = 15_000;

/** The /dev node of the SCSI disk at `address` (h:c:t:l), waiting for it to appear. */
export async function scsiDevice(address: string, timeoutMs = DEVICE_WAIT_MS): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const names = await readdir(`/sys/bus/scsi/devices/${address}/block`);
      if (names[0]) return `/dev/${names[0]}`;
    } catch {
      // not there yet
    }
    if (Date.now() >= deadline)
      throw new AgentOpError("NOT_FOUND", `no SCSI disk at ${address} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

async function waitForPath(p: string, timeoutMs = DEVICE_WAIT_MS): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await readlink(p).catch(() => undefined);
      await readFile(`/sys/class/block/${path.basename(p)}/dev`);
      return p;
    } catch {
      if (Date.now() >= deadline)
        throw new AgentOpError("NOT_FOUND", `no block device ${p} after ${timeoutMs} ms`);
      await sleep(50);
    }
  }
}

export async function isMounted(mountPoint: string): Promise<boolean> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  return mounts.split("\n").some((l) => l.split(" ")[1] === mountPoint);
}

/** Mounts a storage at its mount point (idempotent). */
export async function mountStorage(s: ParsedStorage, msize9p = 262144): Promise<void> {
  if (await isMounted(s.mountPoint)) return;
  await mkdir(s.mountPoint, { recursive: true });
  const options = [...s.options];
  if (s.readOnly) options.push("ro");
  let args: string[];
  switch (s.driver) {
    case "virtio-fs":
      args = ["-t", "virtiofs", s.source, s.mountPoint];
      break;
    case "9p":
      options.push("trans=virtio", "version=9p2000.L", `msize=${msize9p}`, "cache=mmap");
      args = ["-t", "9p", s.source, s.mountPoint];
      break;
    case "scsi":
      args = ["-t", s.fstype, await scsiDevice(s.source), s.mountPoint];
      break;
    case "blk":
      args = ["-t", s.fstype, await waitForPath(s.source), s.mountPoint];
      break;
    case "tmpfs":
      args = ["-t", "tmpfs", s.source || "tmpfs", s.mountPoint];
      break;
  }
  if (options.length) args.unshift("-o", options.join(","));
  await run("mount", args);
}

/** Unmounts (lazily, so a busy mount does not block teardown) and removes the mount point. */
export async function unmount(mountPoint: string): Promise<void> {
  if (await isMounted(mountPoint)) await run("umount", ["-l", mountPoint]).catch(() => undefined);
  await rmdir(mountPoint).catch(() => undefined);
}
