import path from "node:path";
import type { FactorySection } from "../../config/schema.js";
import { SandboxError } from "../../errors.js";
import type { HypervisorConfig } from "../../hypervisor/config.js";
import type { ParsedSandboxConfig } from "../config.js";
import type { SandboxContext } from "../sandbox.js";
import { VmTemplate } from "./template.js";

/**
 * Kata's VM factory: with `[factory] enable_template`, QEMU sandboxes start as clones of one
 * template VM instead of booting. Opt-in: every clone starts from the same memory image
 * (see docs/factory.md for what that means for security).
 */
export class VmFactory {
  readonly template: VmTemplate;

  constructor(
    private readonly ctx: SandboxContext,
    readonly settings: FactorySection,
  ) {
    const dir = settings.template_path || path.join(ctx.paths.stateRoot, "factory", "template");
    this.template = new VmTemplate(dir, ctx);
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
    if (config.hypervisorType !== "qemu") {
      throw new SandboxError(
        "ERR_NOT_SUPPORTED",
        `VM templates are implemented for QEMU only, not ${config.hypervisorType}`,
        { hint: "set [factory] enable_template = false, or use the qemu hypervisor" },
      );
    }
    const base = VmFactory.baseConfig(config.hypervisorConfig);
    await this.template.ensure(base, config.agentConfig.dialTimeoutMs);
    return { ...config, hypervisorConfig: this.template.cloneConfig(base) };
  }
}
