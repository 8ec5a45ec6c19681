import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Readable, Writable } from "node:stream";
import { Runtime } from "../sandbox/runtime.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import type { ProcessConfig } from "../sandbox/config.js";
import { CocoonError } from "../errors.js";
import { hypervisorConfigFor } from "../config/hypervisor.js";
import { parseHypervisorType } from "../hypervisor/types.js";
import { podVmSize } from "./pod.js";
import { Code, TtrpcError } from "./ttrpc/status.js";
import { vmSizeForUpdate } from "./update.js";
import type { ContainerCgroupStats } from "./stats.js";

/** A guest process as the shim sees it: its streams, exit and controls. */
export interface GuestProcess {
  readonly stdin: Writable | undefined;
  readonly stdout: Readable;
  readonly stderr: Readable;
  wait(): Promise<{ exitCode: number; signal?: string }>;
  resize(rows: number, cols: number): Promise<void>;
}

/**
 * What the shim needs from one VM. Kept small so the task service does not depend on the
 * sandbox's internals (and so the monitor, network and resource work can slot in later).
 */
export interface ShimVm {
  /** The host pid containerd sees for every task in this VM (the VMM's, as Kata does). */
  readonly pid: number;
  startMain(attach: { stdin: boolean; rows?: number; cols?: number }): Promise<GuestProcess>;
  exec(
    execId: string,
    process: ProcessConfig,
    attach: { stdin: boolean; rows?: number; cols?: number },
  ): Promise<GuestProcess>;
  signal(execId: string, signal: string, all: boolean): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** The container's cgroup figures, read in the guest. */
  stats(): Promise<ContainerCgroupStats>;
  /**
   * Stops and deletes the VM and everything cocoon recorded for it; for a pod's later
   * container, removes just that container from the pod's VM.
   */
  destroy(): Promise<void>;
  /** Update: resizes the VM for the task's new limits (OCI LinuxResources JSON). */
  update(resources: Uint8Array | undefined): Promise<void>;
  /** Adds a later container of this task's pod to the same VM (a pod's sandbox task only). */
  addContainer(req: ContainerRequest): Promise<ShimVm>;
}

/** A container for an existing VM: a pod's container after its sandbox container. */
export interface ContainerRequest {
  taskId: string;
  rootfsDir: string;
  process: ProcessConfig;
  hostname?: string;
  readonlyRootfs: boolean;
}

export interface VmRequest {
  /** containerd's task id. */
  taskId: string;
  namespace: string;
  rootfsDir: string;
  process: ProcessConfig;
  hostname?: string;
  annotations: Record<string, string>;
  readonlyRootfs: boolean;
  /** The task is a pod's sandbox container: its VM takes the pod's later containers. */
  pod?: boolean;
  /**
   * The spec's network namespace (the CRI plugin made it and ran CNI in it): the VMM runs in
   * it and each interface there is mirrored into the guest (docs/network.md, mode "ns").
   */
  netnsPath?: string;
}

/** cocoon sandbox ids are at most 64 characters: derive a stable one from namespace and task id. */
export function sandboxIdFor(namespace: string, taskId: string): string {
  const hash = createHash("sha256").update(`${namespace}/${taskId}`).digest("hex").slice(0, 16);
  return `ctd-${hash}`;
}

/** A container id in the guest for a pod's later container (containerd's ids may be longer). */
function guestContainerId(taskId: string): string {
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(taskId)
    ? taskId
    : `c-${createHash("sha256").update(taskId).digest("hex").slice(0, 16)}`;
}

class CocoonVm implements ShimVm {
  /**
   * @param ownsVm true for the task that booted the VM; false for a pod's later container,
   *   whose exec ids are prefixed with its container id (the guest's exec ids span the VM,
   *   containerd's only the task).
   */
  constructor(
    private readonly sandbox: Sandbox,
    readonly pid: number,
    private readonly containerId: string,
    /** The configured size, which a task's limits are added to. */
    private readonly baseSize: { vcpus: number; memoryMB: number },
    private readonly ownsVm = true,
  ) {}

  private guestExecId(execId: string): string {
    if (!execId) return this.containerId;
    return this.ownsVm ? execId : `${this.containerId}.${execId}`;
  }

  async startMain(attach: { stdin: boolean; rows?: number; cols?: number }): Promise<GuestProcess> {
    // containerd expects the task (and its VM) to stay until Delete: exec, State and Wait still
    // answer after the main process ended, so the monitor must not stop the VM on its exit.
    const handle = this.ownsVm
      ? await this.sandbox.start({ attach, keepRunning: true })
      : await this.sandbox.startContainer(this.containerId, { attach });
    if (!handle) throw new CocoonError("ERR_INTERNAL", "the sandbox started without a main process");
    return handle;
  }

  exec(execId: string, process: ProcessConfig, attach: { stdin: boolean; rows?: number; cols?: number }) {
    return this.sandbox.exec({
      process,
      execId: this.guestExecId(execId),
      containerId: this.containerId,
      ...attach,
    });
  }

  signal(execId: string, signal: string, all: boolean): Promise<void> {
    return this.sandbox.signal(
      signal,
      all ? { all: true, containerId: this.containerId } : { execId: this.guestExecId(execId) },
    );
  }

  // The task that owns the VM pauses all of it; a pod's later container only its own cgroup.
  async pause(): Promise<void> {
    if (this.ownsVm) return this.sandbox.pause();
    await (await this.sandbox.agent()).call("container.pause", { containerId: this.containerId });
  }

  async resume(): Promise<void> {
    if (this.ownsVm) return this.sandbox.resume();
    await (await this.sandbox.agent()).call("container.resume", { containerId: this.containerId });
  }

  async stats(): Promise<ContainerCgroupStats> {
    const agent = await this.sandbox.agent();
    return agent.call("container.stats", { containerId: this.containerId }, { timeoutMs: 10_000 });
  }

  async destroy(): Promise<void> {
    if (!this.ownsVm) {
      await this.sandbox.removeContainer(this.containerId);
      return;
    }
    await this.sandbox.delete({ force: true });
    await this.sandbox.release();
  }

  async update(resources: Uint8Array | undefined): Promise<void> {
    const size = vmSizeForUpdate(resources, this.baseSize);
    if (!size) return;
    if (!this.ownsVm)
      throw new TtrpcError(
        Code.failedPrecondition,
        "cannot update one container of a pod: cocoon resizes the pod's VM only through its sandbox task",
      );
    try {
      await this.sandbox.update(size);
    } catch (err) {
      // The hypervisor cannot resize (microvm, past the host's CPUs...): containerd should see
      // a precondition that does not hold, with cocoon's reason, not "unimplemented".
      if (
        err instanceof CocoonError &&
        (err.code === "ERR_NOT_SUPPORTED" || err.code === "ERR_RESOURCE_LIMIT")
      )
        throw new TtrpcError(
          Code.failedPrecondition,
          `${err.code}: ${err.message}${err.hint ? ` (${err.hint})` : ""}`,
        );
      throw err;
    }
  }

  async addContainer(req: ContainerRequest): Promise<ShimVm> {
    if (!this.ownsVm)
      throw new CocoonError("ERR_INTERNAL", "only a pod's sandbox task takes more containers");
    const containerId = guestContainerId(req.taskId);
    await this.sandbox.addContainer({
      id: containerId,
      rootfs: { type: "dir", path: req.rootfsDir },
      process: req.process,
      readonlyRootfs: req.readonlyRootfs,
      ...(req.hostname ? { hostname: req.hostname } : {}),
    });
    return new CocoonVm(this.sandbox, this.pid, containerId, this.baseSize, false);
  }
}

/** Boots a cocoon sandbox running one container on the bundle's rootfs (shared over virtio-fs). */
export async function bootVm(req: VmRequest, logger: Logger): Promise<ShimVm> {
  const runtime = await Runtime.open({ logger });
  const id = sandboxIdFor(req.namespace, req.taskId);
  const containerId = "task";
  const cfg = runtime.loaded.config;
  const defaults = hypervisorConfigFor(cfg, parseHypervisorType(cfg.runtime.hypervisor));
  const sandbox = await runtime.createSandbox({
    id,
    ...(req.pod
      ? {
          podShare: true,
          ...podVmSize(req.annotations, { vcpus: defaults.numVCPUs, memoryMB: defaults.memorySize }),
        }
      : {}),
    ...(req.hostname ? { hostname: req.hostname } : {}),
    ...(req.netnsPath ? { network: { mode: "ns" as const, nsPath: req.netnsPath } } : {}),
    annotations: req.annotations,
    containers: [
      {
        id: containerId,
        rootfs: { type: "dir", path: req.rootfsDir },
        process: req.process,
        readonlyRootfs: req.readonlyRootfs,
        ...(req.hostname ? { hostname: req.hostname } : {}),
      },
    ],
  });
  const status = await sandbox.status();
  return new CocoonVm(sandbox, status.pids[0] ?? process.pid, containerId, {
    vcpus: defaults.numVCPUs,
    memoryMB: defaults.memorySize,
  });
}

/** Removes a sandbox a crashed shim left behind (the `delete` subcommand). */
export async function destroyLeftover(namespace: string, taskId: string, logger: Logger): Promise<boolean> {
  const runtime = await Runtime.open({ logger });
  const id = sandboxIdFor(namespace, taskId);
  let sandbox: Sandbox;
  try {
    sandbox = await runtime.loadSandbox(id);
  } catch (err) {
    if (err instanceof CocoonError && err.code === "ERR_NOT_FOUND") return false;
    throw err;
  }
  await sandbox.delete({ force: true });
  await sandbox.release();
  return true;
}
