import { createHash } from "node:crypto";
import { assetPath, type HypervisorConfig } from "../config.js";
import { fileIdentity } from "../file-identity.js";

/**
 * The key a Firecracker snapshot records and its restore recomputes (the counterpart of QEMU's
 * template-key.ts): everything that decides whether a new Firecracker can load it, hashed. The
 * identity of the Firecracker and jailer binaries (another version writes another vmstate
 * format), kernel, rootfs and initrd, and the VM's shape and driver settings (vCPUs, memory,
 * kernel and hypervisor parameters: jailer uid/gid, balloon...). Whether it runs jailed is part
 * of it: a jailed snapshot names jail paths.
 */
export async function firecrackerSnapshotKey(
  config: HypervisorConfig,
  extra: Record<string, string> = {},
): Promise<string> {
  const files: string[] = [];
  for (const type of ["hypervisor", "jailer", "kernel", "image", "initrd"] as const) {
    const p = assetPath(config, type);
    if (p) files.push(`${type}=${await fileIdentity(p)}`);
  }
  const shape = {
    type: "firecracker",
    jailed: assetPath(config, "jailer") !== "",
    vcpus: config.numVCPUs,
    memoryMiB: config.memorySize,
    kernelParams: config.kernelParams,
    hypervisorParams: config.hypervisorParams,
    debug: config.debug,
  };
  return createHash("sha256").update(JSON.stringify({ shape, files, extra })).digest("hex").slice(0, 24);
}
