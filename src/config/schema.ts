import { z } from "zod";
import { ACCELERATORS, BLOCK_DEVICE_DRIVERS, SHARED_FS_TYPES } from "../hypervisor/types.js";

/**
 * The TOML configuration file. Keys are snake_case as in Kata's configuration.toml; every
 * table is strict, so a typo is an error naming the key instead of a silently ignored line.
 */

const count = z.number().int().nonnegative();
const paths = z.array(z.string());

/** Keys every hypervisor section accepts. */
const commonHypervisorKeys = {
  path: z.string(),
  kernel: z.string(),
  image: z.string(),
  initrd: z.string(),
  firmware: z.string(),
  kernel_params: z.string(),
  default_vcpus: count,
  default_maxvcpus: count,
  default_memory: count,
  memory_slots: count,
  memory_offset: count,
  enable_debug: z.boolean(),
  disable_nesting_checks: z.boolean(),
  enable_mem_prealloc: z.boolean(),
  enable_hugepages: z.boolean(),
  entropy_source: z.string(),
  guest_hook_path: z.string(),
  block_device_driver: z.enum(BLOCK_DEVICE_DRIVERS),
  block_device_cache_set: z.boolean(),
  block_device_cache_direct: z.boolean(),
  block_device_cache_noflush: z.boolean(),
  disable_block_device_use: z.boolean(),
  /** Regexps of annotation names (after io.cocoon.config.hypervisor.) a sandbox may set. */
  enable_annotations: z.array(z.string()),
  valid_hypervisor_paths: paths,
};

export const qemuSectionSchema = z.strictObject({
  ...commonHypervisorKeys,
  machine_type: z.string(),
  accelerator: z.enum(ACCELERATORS),
  machine_accelerators: z.string(),
  cpu_model: z.string(),
  hypervisor_params: z.string(),
  default_bridges: count,
  msize_9p: count,
  shared_fs: z.enum(SHARED_FS_TYPES),
  virtio_fs_daemon: z.string(),
  virtio_fs_cache: z.enum(["never", "metadata", "auto", "always"]),
  virtio_fs_cache_size: count,
  valid_virtio_fs_daemon_paths: paths,
  enable_iothreads: z.boolean(),
  file_mem_backend: z.string(),
  realtime: z.boolean(),
  mlock: z.boolean(),
  use_vsock: z.boolean(),
  hotplug_vfio_on_root_bus: z.boolean(),
  disable_vhost_net: z.boolean(),
});

export const firecrackerSectionSchema = z.strictObject({
  ...commonHypervisorKeys,
  jailer_path: z.string(),
  valid_jailer_paths: paths,
  /** uid/gid Firecracker runs as inside the jail. */
  jailer_uid: count,
  jailer_gid: count,
  /** cgroup version the jailer uses (1 or 2). */
  jailer_cgroup_version: z.union([z.literal(1), z.literal(2)]),
  /** How files enter the jail: hard link where possible, else bind mount (auto), or always bind/link/copy. */
  jail_resources: z.enum(["auto", "bind", "link", "copy"]),
  /** A virtio balloon at boot, so that `cocoon update --memory` can take memory back from a running VM. */
  balloon: z.boolean(),
});

export const acrnSectionSchema = z.strictObject({
  ...commonHypervisorKeys,
  ctlpath: z.string(),
  valid_ctlpaths: paths,
  default_bridges: count,
  /**
   * The platform's VM limit. The seed asks the ACRN kernel module with an ioctl, which Node
   * cannot issue; 0 means "ask the helper" (see the ACRN driver's docs).
   */
  max_vms: count,
  /** The helper that does that ioctl; "" means the one built into .cache/acrn/ (docs/acrn.md). */
  platform_info_helper: z.string(),
});

export const mockSectionSchema = z.strictObject({ ...commonHypervisorKeys });

export const agentSectionSchema = z.strictObject({
  /** Seconds to wait for the agent's first answer after the VM starts. */
  dial_timeout: z.number().positive(),
  /** Seconds a single agent request may take. */
  request_timeout: z.number().positive(),
  enable_debug: z.boolean(),
  kernel_modules: z.array(z.string()),
});

export const runtimeSectionSchema = z.strictObject({
  hypervisor: z.enum(["qemu", "firecracker", "acrn", "mock"]),
  state_root: z.string(),
  lib_root: z.string(),
  assets_dir: z.string(),
  log_level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
  create_container_timeout: z.number().positive(),
  disable_guest_seccomp: z.boolean(),
  sandbox_cgroup_only: z.boolean(),
  static_sandbox_resource_mgmt: z.boolean(),
  // Resource control: host cgroups for each sandbox (docs/resources.md)
  /** auto: use host cgroups where the host allows; required: refuse without; off: none. */
  sandbox_cgroups: z.enum(["auto", "required", "off"]),
  /** MiB of host memory a sandbox may use beyond its guest RAM (VMM, helpers). */
  sandbox_memory_overhead: z.number().int().positive(),
  /** Most tasks (threads) a sandbox's VMM and helpers may have on the host. */
  sandbox_pids_limit: z.number().int().positive(),
});

/** VM templates and the warm pool (Kata's [factory]); see docs/factory.md. */
export const factorySectionSchema = z.strictObject({
  /** Create QEMU sandboxes as clones of a booted, saved template VM. Opt-in (security trade-off). */
  enable_template: z.boolean(),
  /** Where the template lives (its RAM file: put it on tmpfs); "" = <state_root>/factory/template. */
  template_path: z.string(),
  /** Clones kept booted and ready (the warm pool); 0 = none. */
  cache: z.number().int().nonnegative().max(64),
});

export const configFileSchema = z.strictObject({
  runtime: runtimeSectionSchema.partial().optional(),
  factory: factorySectionSchema.partial().optional(),
  agent: agentSectionSchema.partial().optional(),
  hypervisor: z
    .strictObject({
      qemu: qemuSectionSchema.partial().optional(),
      firecracker: firecrackerSectionSchema.partial().optional(),
      acrn: acrnSectionSchema.partial().optional(),
      mock: mockSectionSchema.partial().optional(),
    })
    .optional(),
});

export type QemuSection = z.infer<typeof qemuSectionSchema>;
export type FirecrackerSection = z.infer<typeof firecrackerSectionSchema>;
export type AcrnSection = z.infer<typeof acrnSectionSchema>;
export type MockSection = z.infer<typeof mockSectionSchema>;
export type AgentSection = z.infer<typeof agentSectionSchema>;
export type RuntimeSection = z.infer<typeof runtimeSectionSchema>;
export type FactorySection = z.infer<typeof factorySectionSchema>;

/** The effective configuration: every key has a value. */
export interface CocoonConfig {
  runtime: RuntimeSection;
  agent: AgentSection;
  factory: FactorySection;
  hypervisor: {
    qemu: QemuSection;
    firecracker: FirecrackerSection;
    acrn: AcrnSection;
    mock: MockSection;
  };
}
