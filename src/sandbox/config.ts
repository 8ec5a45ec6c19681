import { z } from "zod";
import { SandboxError } from "../errors.js";
import type { HypervisorConfig } from "../hypervisor/config.js";
import { HYPERVISOR_TYPES, type HypervisorType } from "../hypervisor/types.js";
import { containerMountSchema, rlimitSchema } from "../agent/protocol/container-setup.js";
import { containerResourcesSchema } from "../agent/protocol/resources.js";
import { cgroupSettingsSchema } from "./resources/settings.js";
import { networkSpecSchema } from "./network.js";

/** What runs: the program, its environment and terminal. */
export const processConfigSchema = z.object({
  args: z.array(z.string()).min(1, "a process needs a program to run"),
  env: z.array(z.string().regex(/^[^=]+=/, "environment entries are KEY=VALUE")).default([]),
  cwd: z.string().startsWith("/", "the working directory must be absolute").default("/"),
  terminal: z.boolean().default(false),
  rows: z.number().int().positive().max(65535).optional(),
  cols: z.number().int().positive().max(65535).optional(),
  user: z
    .object({ uid: z.number().int().nonnegative(), gid: z.number().int().nonnegative() })
    .default({ uid: 0, gid: 0 }),
});
export type ProcessConfig = z.input<typeof processConfigSchema>;

/** A container's root filesystem on the host: a directory or a tarball. */
export const rootfsSourceSchema = z.object({
  type: z.enum(["dir", "tar"]),
  path: z.string().startsWith("/", "rootfs paths must be absolute"),
});
export type RootfsSource = z.infer<typeof rootfsSourceSchema>;

const containerIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, "container ids are 1-64 letters, digits, '_', '.' or '-'");

export const containerConfigSchema = z.object({
  id: containerIdSchema,
  rootfs: rootfsSourceSchema,
  process: processConfigSchema,
  hostname: z.string().min(1).max(64).optional(),
  readonlyRootfs: z.boolean().default(false),
  annotations: z.record(z.string(), z.string()).default({}),
  /** Resource control: the container's limits in the guest (runc cgroups). */
  resources: containerResourcesSchema().optional(),
  /** The process's rlimits in the guest; absent: the agent's default. */
  rlimits: z.array(rlimitSchema()).optional(),
  /** Mounts beyond the guest's defaults: guest filesystems and copied host files (OCI runtime). */
  mounts: z.array(containerMountSchema()).max(64).default([]),
});
export type ContainerConfig = z.input<typeof containerConfigSchema>;
export type ParsedContainerConfig = z.output<typeof containerConfigSchema>;

export const agentConfigSchema = z.object({
  dialTimeoutMs: z.number().int().positive().default(60_000),
  requestTimeoutMs: z.number().int().positive().default(60_000),
  debug: z.boolean().default(false),
  kernelModules: z.array(z.string()).default([]),
});

/**
 * A sandbox: one VM, its agent, and what runs in it. Field for field the seed's
 * SandboxConfig where it applies; the hypervisor config is the resolved one (assets filled).
 */
export const sandboxConfigSchema = z.object({
  id: z.string(),
  hostname: z.string().min(1).max(64).optional(),
  hypervisorType: z.string(),
  hypervisorConfig: z.custom<HypervisorConfig>(
    (v) => typeof v === "object" && v !== null,
    "a hypervisor configuration",
  ),
  agentConfig: agentConfigSchema.default({
    dialTimeoutMs: 60_000,
    requestTimeoutMs: 60_000,
    debug: false,
    kernelModules: [],
  }),
  annotations: z.record(z.string(), z.string()).default({}),
  /** Containers created with the sandbox (each with its own rootfs). */
  containers: z.array(containerConfigSchema).default([]),
  /**
   * Share one pod directory with the guest at boot, so containers can be added to the running
   * VM later (`Sandbox.addContainer`) even where the VM has no device hotplug (pod.ts).
   */
  podShare: z.boolean().default(false),
  /** A process run directly in the guest when there is no container (`cocoon run` without --rootfs). */
  guestProcess: processConfigSchema.optional(),
  volumes: z
    .array(z.object({ hostPath: z.string(), guestPath: z.string(), readOnly: z.boolean().default(false) }))
    .default([]),
  networkConfig: z
    .object({ netnsPath: z.string().optional(), disableNewNetns: z.boolean().default(true) })
    .default({ disableNewNetns: true }),
  dns: z.array(z.string()).default([]),
  /** Networking: none, cocoon's bridge (CNI) or a given namespace; ports, hosts, egress (network.ts). */
  network: networkSpecSchema.optional(),
  sandboxBindMounts: z.array(z.string()).default([]),
  shmSizeMB: z.number().int().nonnegative().default(64),
  resources: z
    .object({
      vcpus: z.number().int().positive().optional(),
      memoryMB: z.number().int().positive().optional(),
    })
    .default({}),
  sharePidNs: z.boolean().default(false),
  sandboxCgroupOnly: z.boolean().default(false),
  disableGuestSeccomp: z.boolean().default(true),
  staticResourceMgmt: z.boolean().default(false),
  /** Resource control: host cgroup settings (resources/settings.ts). */
  cgroups: cgroupSettingsSchema,
});
export type SandboxConfig = z.input<typeof sandboxConfigSchema>;
export type ParsedSandboxConfig = z.output<typeof sandboxConfigSchema> & { hypervisorType: HypervisorType };

/** Validates a sandbox config: an empty id, an unknown hypervisor or a bad field is refused. */
export function validateSandboxConfig(input: SandboxConfig): ParsedSandboxConfig {
  if (!input.id) throw new SandboxError("ERR_INVALID_ARGUMENT", "the sandbox id is empty");
  const parsed = sandboxConfigSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new SandboxError(
      "ERR_INVALID_CONFIG",
      `invalid sandbox config at ${issue.path.join(".") || "<root>"}: ${issue.message}`,
      {
        details: { path: issue.path.join(".") },
      },
    );
  }
  const type = parsed.data.hypervisorType;
  if (!(HYPERVISOR_TYPES as readonly string[]).includes(type)) {
    // No silent fallback to a default hypervisor: a typo must not boot something else.
    throw new SandboxError(
      "ERR_UNKNOWN_HYPERVISOR",
      `unknown hypervisor type "${type}": valid types are ${HYPERVISOR_TYPES.join(", ")}`,
    );
  }
  const ids = new Set<string>();
  for (const c of parsed.data.containers) {
    if (ids.has(c.id)) throw new SandboxError("ERR_INVALID_CONFIG", `two containers have the id ${c.id}`);
    ids.add(c.id);
  }
  if (parsed.data.guestProcess && parsed.data.containers.length) {
    throw new SandboxError(
      "ERR_INVALID_CONFIG",
      "a sandbox runs either containers or a guest process as its main process, not both",
    );
  }
  return parsed.data as ParsedSandboxConfig;
}
