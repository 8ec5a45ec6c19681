import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Readable, Writable } from "node:stream";
import { Runtime } from "../sandbox/runtime.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import type { ProcessConfig } from "../sandbox/config.js";
import { CocoonError } from "../errors.js";
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
  /** Stops and deletes the VM and everything cocoon recorded for it. */
  destroy(): Promise<void>;
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
}

/** cocoon sandbox ids are at most 64 characters: derive a stable one from namespace and task id. */
export function sandboxIdFor(namespace: string, taskId: string): string {
  const hash = createHash("sha256").update(`${namespace}/${taskId}`).digest("hex").slice(0, 16);
  return `ctd-${hash}`;
}

class CocoonVm implements ShimVm {
  constructor(
    private readonly sandbox: Sandbox,
    readonly pid: number,
    private readonly containerId: string,
  ) {}

  async startMain(attach: { stdin: boolean; rows?: number; cols?: number }): Promise<GuestProcess> {
    // containerd expects the task (and its VM) to stay until Delete: exec, State and Wait still
    // answer after the main process ended, so the monitor must not stop the VM on its exit.
    const handle = await this.sandbox.start({ attach, keepRunning: true });
    if (!handle) throw new CocoonError("ERR_INTERNAL", "the sandbox started without a main process");
    return handle;
  }

  exec(execId: string, process: ProcessConfig, attach: { stdin: boolean; rows?: number; cols?: number }) {
    return this.sandbox.exec({ process, execId, containerId: this.containerId, ...attach });
  }

  signal(execId: string, signal: string, all: boolean): Promise<void> {
    return this.sandbox.signal(signal, all ? { all: true, containerId: this.containerId } : { execId });
  }

  pause(): Promise<void> {
    return this.sandbox.pause();
  }

  resume(): Promise<void> {
    return this.sandbox.resume();
  }

  async stats(): Promise<ContainerCgroupStats> {
    const agent = await this.sandbox.agent();
    return agent.call("container.stats", { containerId: this.containerId }, { timeoutMs: 10_000 });
  }

  async destroy(): Promise<void> {
    await this.sandbox.delete({ force: true });
    await this.sandbox.release();
  }
}

/** Boots a cocoon sandbox running one container on the bundle's rootfs (shared over virtio-fs). */
export async function bootVm(req: VmRequest, logger: Logger): Promise<ShimVm> {
  const runtime = await Runtime.open({ logger });
  const id = sandboxIdFor(req.namespace, req.taskId);
  const containerId = "task";
  const sandbox = await runtime.createSandbox({
    id,
    ...(req.hostname ? { hostname: req.hostname } : {}),
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
  return new CocoonVm(sandbox, status.pids[0] ?? process.pid, containerId);
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
