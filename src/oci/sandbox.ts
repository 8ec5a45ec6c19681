import type { Logger } from "pino";
import type { ContainerMount, Rlimit } from "../agent/protocol/container-setup.js";
import type { ContainerResources } from "../agent/protocol/resources.js";
import { CocoonError } from "../errors.js";
import type { ProcessConfig } from "../sandbox/config.js";
import { Runtime } from "../sandbox/runtime.js";
import type { Sandbox } from "../sandbox/sandbox.js";

/** The id of the one container in a bundle's sandbox (its main process's exec id too). */
export const BUNDLE_CONTAINER_ID = "task";

export interface BundleSandboxRequest {
  /** The cocoon sandbox id. */
  id: string;
  rootfsDir: string;
  process: ProcessConfig;
  hostname?: string;
  annotations: Record<string, string>;
  readonlyRootfs: boolean;
  rlimits?: Rlimit[];
  resources?: ContainerResources;
  mounts?: ContainerMount[];
  /**
   * A network namespace the caller made (podman's, with its interfaces): the VMM runs in it and
   * each interface there is mirrored into the guest (docs/network.md, mode "ns").
   */
  netnsPath?: string;
}

/**
 * Boots a cocoon sandbox running one container on a bundle's rootfs (shared over virtio-fs),
 * created but not started. Shared by the containerd shim and cocoon-runtime.
 */
export async function createBundleSandbox(req: BundleSandboxRequest, logger: Logger): Promise<Sandbox> {
  const runtime = await Runtime.open({ logger });
  return runtime.createSandbox({
    id: req.id,
    ...(req.hostname ? { hostname: req.hostname } : {}),
    annotations: req.annotations,
    ...(req.netnsPath ? { network: { mode: "ns" as const, nsPath: req.netnsPath } } : {}),
    containers: [
      {
        id: BUNDLE_CONTAINER_ID,
        rootfs: { type: "dir", path: req.rootfsDir },
        process: req.process,
        readonlyRootfs: req.readonlyRootfs,
        ...(req.hostname ? { hostname: req.hostname } : {}),
        ...(req.rlimits ? { rlimits: req.rlimits } : {}),
        ...(req.resources ? { resources: req.resources } : {}),
        ...(req.mounts ? { mounts: req.mounts } : {}),
      },
    ],
  });
}

/** The sandbox, or undefined when it does not exist (any more). */
export async function findSandbox(id: string, logger: Logger): Promise<Sandbox | undefined> {
  const runtime = await Runtime.open({ logger });
  try {
    return await runtime.loadSandbox(id);
  } catch (err) {
    if (err instanceof CocoonError && err.code === "ERR_NOT_FOUND") return undefined;
    throw err;
  }
}

/** Stops and removes a sandbox and everything cocoon recorded for it; false when there was none. */
export async function destroySandbox(id: string, logger: Logger): Promise<boolean> {
  const sandbox = await findSandbox(id, logger);
  if (!sandbox) return false;
  await sandbox.delete({ force: true });
  await sandbox.release();
  return true;
}
