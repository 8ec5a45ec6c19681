import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { annotationPolicyFor, hypervisorConfigFor } from "../config/hypervisor.js";
import { loadConfig, type LoadedConfig, type LoadOptions } from "../config/load.js";
import { ConfigError, SandboxError } from "../errors.js";
import { AssetCatalog } from "../guest/image/catalog.js";
import { ANNOTATION_PREFIX, assetsFromAnnotations, verifyAsset } from "../hypervisor/assets.js";
import "../hypervisor/drivers.js";
import { parseKernelCmdline } from "../hypervisor/params.js";
import { parseHypervisorType, type HypervisorType } from "../hypervisor/types.js";
import { silentLogger } from "../log.js";
import { RuntimePaths, checkId } from "../store/paths.js";
import { Store } from "../store/store.js";
import {
  validateSandboxConfig,
  type ContainerConfig,
  type ProcessConfig,
  type SandboxConfig,
} from "./config.js";
import { VmFactory } from "./factory/factory.js";
import { collectGarbage, type Garbage } from "./gc.js";
import { Sandbox, type SandboxStatus } from "./sandbox.js";
import { validateNetworkSpec, type NetworkSpec } from "./network.js";
import { hostNameservers } from "../network/bridge.js";
import type { SnapshotInfo } from "./snapshot/meta.js";
import { SnapshotStore, type SnapshotProgress } from "./snapshot/snapshots.js";

export interface RuntimeOptions extends LoadOptions {
  logger?: Logger;
}

/** What a user asks for; the runtime fills the rest from the configuration. */
export interface CreateSandboxOptions {
  /** Default: a random id. */
  id?: string;
  hostname?: string;
  /** Default: the configuration's runtime.hypervisor. */
  hypervisor?: string;
  cpus?: number;
  memoryMB?: number;
  annotations?: Record<string, string>;
  /** Containers, each with its own rootfs. */
  containers?: ContainerConfig[];
  /** Or one process run directly in the guest. */
  process?: ProcessConfig;
  dns?: string[];
  /** Networking (docs/network.md); default: loopback only. The CLI defaults to the bridge. */
  network?: NetworkSpec;
  /** Resource control: host CPUs for the vCPU threads, tasks limit, CPU weight. */
  cpusetCpus?: string;
  pidsLimit?: number;
  cpuWeight?: number;
  /** Share a pod directory so containers can be added to the running VM (Sandbox.addContainer). */
  podShare?: boolean;
  /** Start as a clone of the VM template (QEMU); default: the configuration's [factory] enable_template. */
  template?: boolean;
}

/**
 * The entry point for library users: the configuration, the state root and the store, and
 * the sandboxes under it.
 */
export class Runtime {
  private constructor(
    readonly loaded: LoadedConfig,
    readonly paths: RuntimePaths,
    readonly store: Store,
    readonly logger: Logger,
  ) {}

  static async open(options: RuntimeOptions = {}): Promise<Runtime> {
    return Runtime.fromConfig(await loadConfig(options), options.logger);
  }

  /** A runtime over an already loaded configuration (the CLI loads it once per command). */
  static fromConfig(loaded: LoadedConfig, logger?: Logger): Runtime {
    const paths = new RuntimePaths(loaded.roots);
    return new Runtime(loaded, paths, new Store(paths), logger ?? silentLogger());
  }

  private get ctx() {
    return { paths: this.paths, store: this.store, logger: this.logger };
  }

  /** Builds a complete sandbox config from a user's request and the configuration. */
  async sandboxConfig(options: CreateSandboxOptions): Promise<SandboxConfig> {
    const cfg = this.loaded.config;
    const type: HypervisorType = parseHypervisorType(options.hypervisor ?? cfg.runtime.hypervisor);
    const id = options.id ?? `sb-${randomBytes(5).toString("hex")}`;
    checkId("sandbox", id);
    const network = validateNetworkSpec(options.network ?? {});
    if (network.mode !== "none" && type !== "qemu")
      throw new ConfigError(
        "ERR_NOT_SUPPORTED",
        `networking is wired for QEMU only so far (not ${type}): use --network none`,
      );
    const hc = hypervisorConfigFor(cfg, type);
    if (options.cpus !== undefined) {
      if (!Number.isInteger(options.cpus) || options.cpus < 1)
        throw new ConfigError("ERR_INVALID_ARGUMENT", "--cpus must be a positive integer");
      hc.numVCPUs = options.cpus;
      if (hc.defaultMaxVCPUs && hc.defaultMaxVCPUs < options.cpus) hc.defaultMaxVCPUs = options.cpus;
    }
    if (options.memoryMB !== undefined) {
      if (!Number.isInteger(options.memoryMB) || options.memoryMB < 64) {
        throw new ConfigError("ERR_INVALID_ARGUMENT", "--memory must be at least 64 (MiB)");
      }
      hc.memorySize = options.memoryMB;
    }
    // Guest assets: the configured ones, else the built ones.
    if (!hc.kernelPath || (!hc.imagePath && !hc.initrdPath)) {
      const assets = await new AssetCatalog(this.paths.assetsDir).resolveCurrent();
      if (!hc.kernelPath) hc.kernelPath = type === "firecracker" ? assets.vmlinux : assets.kernel;
      if (!hc.imagePath && !hc.initrdPath) hc.imagePath = assets.rootfs;
    }
    // Annotations may override assets (when the configuration allows) and add kernel params.
    const annotations = options.annotations ?? {};
    hc.customAssets = assetsFromAnnotations(annotations, annotationPolicyFor(cfg, type));
    for (const asset of Object.values(hc.customAssets)) await verifyAsset(asset);
    const extraParams = annotations[`${ANNOTATION_PREFIX}kernel_params`];
    if (extraParams) hc.kernelParams = [...hc.kernelParams, ...parseKernelCmdline(extraParams)];
    return {
      id,
      ...(options.hostname ? { hostname: options.hostname } : {}),
      hypervisorType: type,
      hypervisorConfig: hc,
      agentConfig: {
        dialTimeoutMs: Math.round(cfg.agent.dial_timeout * 1000),
        requestTimeoutMs: Math.round(cfg.agent.request_timeout * 1000),
        debug: cfg.agent.enable_debug,
        kernelModules: cfg.agent.kernel_modules,
      },
      annotations,
      containers: options.containers ?? [],
      ...(options.podShare ? { podShare: true } : {}),
      ...(options.process ? { guestProcess: options.process } : {}),
      network,
      // On the bridge, like docker: the host's nameservers unless --dns says otherwise.
      dns: options.dns?.length ? options.dns : network.mode === "bridge" ? await hostNameservers() : [],
      disableGuestSeccomp: cfg.runtime.disable_guest_seccomp,
      sandboxCgroupOnly: cfg.runtime.sandbox_cgroup_only,
      staticResourceMgmt: cfg.runtime.static_sandbox_resource_mgmt,
      cgroups: {
        mode: cfg.runtime.sandbox_cgroups,
        memoryOverheadMB: cfg.runtime.sandbox_memory_overhead,
        pidsLimit: options.pidsLimit ?? cfg.runtime.sandbox_pids_limit,
        ...(options.cpusetCpus ? { cpusetCpus: options.cpusetCpus } : {}),
        ...(options.cpuWeight ? { cpuWeight: options.cpuWeight } : {}),
      },
    };
  }

  /** Creates a sandbox and boots its VM (it is then `ready`; `start()` runs its main process). */
  async createSandbox(options: CreateSandboxOptions): Promise<Sandbox> {
    const config = validateSandboxConfig(await this.sandboxConfig(options));
    // VM templates (Kata's factory): clone the template instead of booting.
    // A pod's VM shares a directory its template never had: it boots cold.
    if (!this.factory.wanted(options.template) || config.podShare) return Sandbox.create(this.ctx, config);
    // A clone resumes its template's devices: a NIC the template did not have cannot appear.
    if (config.network && config.network.mode !== "none")
      throw new ConfigError(
        "ERR_NOT_SUPPORTED",
        "VM templates have no network yet: create the sandbox with --network none (or without the template)",
      );
    // With a warm pool ([factory] cache), a clone already running is taken when one is ready.
    const plan = await this.factory.plan(config);
    let ok = false;
    try {
      const sandbox = await Sandbox.create(
        this.ctx,
        plan.config,
        plan.pooled ? { pooled: plan.pooled } : undefined,
      );
      ok = true;
      return sandbox;
    } finally {
      await plan.done(ok);
    }
  }

  /** VM templates and the warm pool (src/sandbox/factory/). */
  get factory(): VmFactory {
    return new VmFactory(this.ctx, this.loaded.config.factory);
  }

  /** Snapshots of running sandboxes (src/sandbox/snapshot/). */
  get snapshots(): SnapshotStore {
    return new SnapshotStore(this.ctx);
  }

  /**
   * A new sandbox from a snapshot: the guest's processes, memory and files as they were, with
   * its own id, VM directory and sockets. Its state is the source's (`running` or `ready`).
   */
  async restoreSandbox(
    snapshot: string,
    options: { id?: string; progress?: SnapshotProgress } = {},
  ): Promise<Sandbox> {
    return this.snapshots.restore(snapshot, options.id ? { id: options.id } : {}, options.progress);
  }

  async listSnapshots(): Promise<SnapshotInfo[]> {
    return this.snapshots.list();
  }

  async loadSandbox(id: string): Promise<Sandbox> {
    return Sandbox.load(this.ctx, id);
  }

  /** Removes what no live owner holds (see gc.ts); `dryRun` only lists it. */
  async collectGarbage(options: { dryRun?: boolean } = {}): Promise<Garbage[]> {
    return collectGarbage(
      {
        ...this.ctx,
        deleteSandbox: async (id) => (await Sandbox.load(this.ctx, id)).delete({ force: true }),
      },
      options,
    );
  }

  async listSandboxes(): Promise<SandboxStatus[]> {
    const out: SandboxStatus[] = [];
    for (const id of await this.store.listSandboxes()) {
      try {
        const sb = await Sandbox.load(this.ctx, id);
        out.push(await sb.status());
        await sb.release();
      } catch (err) {
        if (err instanceof SandboxError && err.code === "ERR_NOT_FOUND") continue; // removed meanwhile
        throw err;
      }
    }
    return out;
  }
}
