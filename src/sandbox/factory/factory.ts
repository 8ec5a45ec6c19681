import path from "node:path";
import type { FactorySection } from "../../config/schema.js";
import { SandboxError } from "../../errors.js";
import type { HypervisorConfig } from "../../hypervisor/config.js";
import type { ParsedSandboxConfig } from "../config.js";
import type { PooledVm, SandboxContext } from "../sandbox.js";
import { entryState, vmDirsInUse, WarmPool, type PoolEntry } from "./pool.js";
import { VmTemplate } from "./template.js";

/** A create's clone: its config, and a warm VM from the pool when one was ready. */
export interface ClonePlan {
  config: ParsedSandboxConfig;
  pooled?: PooledVm;
  /** The pool record held while the sandbox is made; `done` lets go of it either way. */
  done(ok: boolean): Promise<void>;
}

/**
 * Kata's VM factory: with `[factory] enable_template`, QEMU sandboxes start as clones of one
 * template VM instead of booting. Opt-in: every clone starts from the same memory image
 * (see docs/factory.md for what that means for security).
 */
export class VmFactory {
  readonly template: VmTemplate;
  readonly pool: WarmPool;

  constructor(
    private readonly ctx: SandboxContext,
    readonly settings: FactorySection,
  ) {
    const dir = settings.template_path || path.join(ctx.paths.stateRoot, "factory", "template");
    this.template = new VmTemplate(dir, ctx);
    this.pool = new WarmPool(path.join(ctx.paths.stateRoot, "factory", "pool"), {
      store: ctx.store,
      logger: ctx.logger,
      jailerBase: ctx.paths.jailerBase,
    });
  }

  /** Whether a create uses the template: the request decides, else the configuration. */
  wanted(requested: boolean | undefined): boolean {
    return requested ?? this.settings.enable_template;
  }

  /** The base config a template is made from and keyed by (what every sandbox would get). */
  static baseConfig(hc: HypervisorConfig): HypervisorConfig {
    return { ...hc, bootFromTemplate: false, bootToBeTemplate: false, memoryPath: "", devicesStatePath: "" };
  }

  /**
   * Turns a sandbox config into a clone's: the template is made (or rebuilt, if anything that
   * shapes the VM changed) first.
   */
  async cloneConfig(config: ParsedSandboxConfig): Promise<ParsedSandboxConfig> {
    return (await this.plan(config, { pool: false })).config;
  }

  /**
   * A create's clone. With `[factory] cache = N` it takes a warm clone from the pool when one
   * is ready, and in either case has a detached process start clones until N are ready again.
   */
  async plan(config: ParsedSandboxConfig, options: { pool?: boolean } = {}): Promise<ClonePlan> {
    if (config.hypervisorType !== "qemu") {
      throw new SandboxError(
        "ERR_NOT_SUPPORTED",
        `VM templates are implemented for QEMU only, not ${config.hypervisorType}`,
        { hint: "set [factory] enable_template = false, or use the qemu hypervisor" },
      );
    }
    const base = VmFactory.baseConfig(config.hypervisorConfig);
    const meta = await this.template.ensure(base, config.agentConfig.dialTimeoutMs);
    const hypervisorConfig = this.template.cloneConfig(base);
    const plan: ClonePlan = { config: { ...config, hypervisorConfig }, done: async () => undefined };
    if (!(options.pool ?? true) || this.settings.cache === 0) return plan;
    const entry = await this.pool.take(meta.key);
    const refill = () =>
      this.pool.spawnRefill({
        poolDir: this.pool.dir,
        key: meta.key,
        target: this.settings.cache,
        config: hypervisorConfig as unknown as Record<string, unknown>,
        jailerBase: this.ctx.paths.jailerBase,
        dialTimeoutMs: config.agentConfig.dialTimeoutMs,
      });
    if (!entry) {
      refill();
      return plan;
    }
    return {
      ...plan,
      pooled: { vmDir: entry.vmDir, hypervisorState: entryState(entry) },
      // The refill starts once the create is done: a new clone's start (Node, QEMU loading
      // the template, its vCPU) would otherwise take the CPU from the clone being handed out.
      done: async (ok) => {
        try {
          await this.letGo(entry, ok);
        } finally {
          refill();
        }
      },
    };
  }

  private async letGo(entry: PoolEntry, ok: boolean): Promise<void> {
    if (ok) await this.pool.release(entry);
    // The create failed before or after its sandbox took the VM: end it either way.
    else await this.pool.discard(entry.id, this.pool.takenFile(entry.id));
  }

  /** `factory destroy`: the warm clones, then the template. */
  async destroy(): Promise<{ template: boolean; clones: number }> {
    const clones = await this.pool.destroy(() => vmDirsInUse(this.ctx.store));
    return { template: await this.template.destroy(), clones };
  }
}
