import { readFile, stat } from "node:fs/promises";
import { z } from "zod";
import {
  GUEST_FILESYSTEM_TYPES,
  MAX_COPIED_FILE_BYTES,
  type ContainerMount,
} from "../agent/protocol/container-setup.js";
import { CocoonError } from "../errors.js";

/**
 * config.json's `mounts` for a container in a VM. The guest cannot see host paths, so:
 * - filesystems the guest kernel makes (tmpfs, proc, mqueue...) are made in the guest;
 * - a bind mount of a host *file* (podman's /etc/hosts, /etc/resolv.conf, /etc/hostname,
 *   /run/.containerenv) is copied into the guest at create;
 * - a bind mount of a host directory at /dev/shm (podman's and docker's shared-memory tmpfs)
 *   becomes the guest's own /dev/shm: host processes cannot share memory with the VM anyway;
 * - any other bind mount of a host directory, or another filesystem type, is refused with
 *   ERR_NOT_SUPPORTED rather than silently dropped (the container would run without its data).
 */

export const ociMountSchema = z.object({
  destination: z.string(),
  type: z.string().optional(),
  source: z.string().optional(),
  options: z.array(z.string()).optional(),
});
export type OciMount = z.infer<typeof ociMountSchema>;

const isBind = (m: OciMount): boolean =>
  m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");

/** An `ro` bind stays read-only in the guest; its other options only say how a host would bind. */
const isReadOnly = (m: OciMount): boolean => (m.options ?? []).includes("ro");

export async function guestMounts(mounts: OciMount[]): Promise<ContainerMount[]> {
  const out: ContainerMount[] = [];
  for (const m of mounts) {
    if (!m.destination.startsWith("/"))
      throw new CocoonError("ERR_INVALID_CONFIG", `mount destination "${m.destination}" is not absolute`);
    if (isBind(m)) {
      const copied = await bindMount(m);
      if (copied) out.push(copied);
      continue;
    }
    const type = m.type ?? "";
    if (!(GUEST_FILESYSTEM_TYPES as readonly string[]).includes(type))
      throw new CocoonError(
        "ERR_NOT_SUPPORTED",
        `mount of type "${type || "(none)"}" at ${m.destination} is not supported in a VM`,
        { details: { destination: m.destination, supported: GUEST_FILESYSTEM_TYPES.join(", ") } },
      );
    out.push({
      kind: "filesystem",
      destination: m.destination,
      type: type as (typeof GUEST_FILESYSTEM_TYPES)[number],
      source: m.source || type,
      options: m.options ?? [],
    });
  }
  return out;
}

async function bindMount(m: OciMount): Promise<ContainerMount | undefined> {
  const source = m.source ?? "";
  const info = await stat(source).catch(() => undefined);
  if (!info)
    throw new CocoonError("ERR_INVALID_CONFIG", `bind mount source ${source || "(none)"} does not exist`, {
      details: { destination: m.destination },
    });
  if (info.isDirectory()) {
    if (m.destination === "/dev/shm") return undefined;
    throw new CocoonError(
      "ERR_NOT_SUPPORTED",
      `bind mounts of host directories are not supported in a VM: ${source} at ${m.destination}`,
      { hint: "copy the data into the image (a VM sees the bundle's rootfs, not the host's paths)" },
    );
  }
  if (!info.isFile())
    throw new CocoonError(
      "ERR_NOT_SUPPORTED",
      `bind mount of ${source} at ${m.destination}: only regular files can be copied into a VM`,
    );
  if (info.size > MAX_COPIED_FILE_BYTES)
    throw new CocoonError(
      "ERR_NOT_SUPPORTED",
      `bind mount of ${source} at ${m.destination}: ${info.size} bytes is more than the ${MAX_COPIED_FILE_BYTES} a VM copies in`,
    );
  return {
    kind: "file",
    destination: m.destination,
    content: (await readFile(source)).toString("base64"),
    mode: info.mode & 0o7777,
    readOnly: isReadOnly(m),
  };
}
