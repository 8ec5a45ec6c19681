import { z } from "zod";
import { lazySchema } from "./resources.js";

/**
 * What an OCI runtime's config.json asks of a container beyond its process, in the form the
 * guest agent can honour inside the VM: process rlimits, mounts of kernel filesystems, and small
 * host files copied in (a VM cannot bind-mount a host path; see docs/oci-runtime.md).
 */

/** One process rlimit, as in the OCI spec (`RLIMIT_NOFILE`...); runc sets it in the guest. */
export const rlimitSchema = lazySchema(() =>
  z
    .object({
      type: z.string().regex(/^RLIMIT_[A-Z]+$/, "an rlimit type such as RLIMIT_NOFILE"),
      hard: z.number().int().nonnegative(),
      soft: z.number().int().nonnegative(),
    })
    .strict()
    .refine((r) => r.soft <= r.hard, "an rlimit's soft value cannot exceed its hard value"),
);
export type Rlimit = z.infer<ReturnType<typeof rlimitSchema>>;

/** Filesystems the guest kernel makes itself: the mount means the same inside the VM. */
export const GUEST_FILESYSTEM_TYPES = [
  "proc",
  "tmpfs",
  "sysfs",
  "devpts",
  "mqueue",
  "cgroup",
  "cgroup2",
] as const;

/** Largest host file copied into the guest for a file bind mount (/etc/hosts and such are small). */
export const MAX_COPIED_FILE_BYTES = 1024 * 1024;

export const containerMountSchema = lazySchema(() => {
  const destinationSchema = z
    .string()
    .startsWith("/", "a mount destination must be absolute")
    .refine((d) => !d.split("/").includes(".."), "a mount destination cannot contain ..");
  const mountOptionSchema = z.string().regex(/^[^,\0]*$/, "mount options are single words without commas");
  return z.discriminatedUnion("kind", [
    /** A filesystem the guest kernel mounts (tmpfs, mqueue...): replaces the default at `destination`. */
    z
      .object({
        kind: z.literal("filesystem"),
        destination: destinationSchema,
        type: z.enum(GUEST_FILESYSTEM_TYPES),
        source: z.string().min(1),
        options: z.array(mountOptionSchema).default([]),
      })
      .strict(),
    /**
     * A host file's content at create time, bind-mounted at `destination` in the container. A
     * copy, not a share: later changes on either side are not seen by the other.
     */
    z
      .object({
        kind: z.literal("file"),
        destination: destinationSchema,
        /** Base64 of the file's bytes. */
        content: z.string().max(Math.ceil(MAX_COPIED_FILE_BYTES / 3) * 4),
        mode: z.number().int().min(0).max(0o7777).default(0o644),
        readOnly: z.boolean().default(false),
      })
      .strict(),
  ]);
});
export type ContainerMount = z.input<ReturnType<typeof containerMountSchema>>;
export type ParsedContainerMount = z.output<ReturnType<typeof containerMountSchema>>;
