import type { Logger } from "pino";
import type { HypervisorConfig } from "../../hypervisor/config.js";
import type { HypervisorType } from "../../hypervisor/types.js";
import type { Store } from "../../store/store.js";
import type { CgroupSettings } from "./settings.js";
import { SandboxCgroups } from "./host-cgroups.js";

/**
 * Host cgroups for a new sandbox. Only the QEMU driver reports its processes and vCPU threads
 * (Firecracker's jailer makes its own cgroup; ACRN's acrn-dm is not cocoon's to place) and
 * the mock has no processes.
 */
export async function prepareHostCgroups(
  ctx: { store: Store; logger: Logger },
  config: { id: string; cgroups: CgroupSettings; sandboxCgroupOnly: boolean },
  hvConfig: HypervisorConfig,
  type: HypervisorType,
): Promise<SandboxCgroups | undefined> {
  if (type !== "qemu") return undefined;
  return SandboxCgroups.prepare(ctx.store, config.id, {
    settings: config.cgroups,
    sandboxCgroupOnly: config.sandboxCgroupOnly,
    size: { vcpus: hvConfig.numVCPUs, memoryMB: hvConfig.memorySize },
    logger: ctx.logger,
  });
}
