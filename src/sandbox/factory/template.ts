import { mkdir, rename, rm, stat, statfs } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { waitForWarmAgent } from "./clone.js";
import { errnoCode, HypervisorError, messageOf, SandboxError } from "../../errors.js";
import { validateHypervisorConfig, type HypervisorConfig } from "../../hypervisor/config.js";
import { qemuTemplateKey } from "../../hypervisor/qemu/template-key.js";
import { newHypervisor } from "../../hypervisor/registry.js";
import { readDocument, writeDocument, type DocumentKind } from "../../store/atomic.js";
import { withLock } from "../../store/lock.js";
import type { SandboxContext } from "../sandbox.js";
import { COCOON_VERSION } from "./version.js";

const templateMetaSchema = z.object({
  key: z.string(),
  createdAt: z.string(),
  cocoonVersion: z.string(),
  memoryMiB: z.number(),
  vcpus: z.number(),
  machine: z.string(),
  stateBytes: z.number(),
  bootMs: z.number(),
});
export type TemplateMeta = z.infer<typeof templateMetaSchema>;
const TEMPLATE_DOC: DocumentKind<TemplateMeta> = {
  schema: "cocoon.template",
  version: 1,
  data: templateMetaSchema,
};

/** Room left on the template's file system beyond its RAM file (device state, metadata). */
const SPARE_BYTES = 32 * 2 ** 20;

export interface TemplateStatus {
  path: string;
  exists: boolean;
  meta?: TemplateMeta;
  /** The key the current configuration and assets give; `matches` when the template has it. */
  currentKey?: string;
  matches?: boolean;
  /** Files on disk (RAM file's allocated size, which is what the template costs). */
  memoryAllocatedBytes?: number;
}

/**
 * Kata's VM factory, the template half: one booted VM, paused, its RAM in `<dir>/memory`
 * (on tmpfs) and its device state in `<dir>/state`. `template.json` is written last: without
 * it the directory is not a template. Building happens in `<dir>.partial` under `<dir>.lock`,
 * so two processes initialising at once build it once and a crash leaves no half template.
 */
export class VmTemplate {
  constructor(
    readonly dir: string,
    private readonly ctx: SandboxContext,
  ) {}

  private get logger(): Logger {
    return this.ctx.logger;
  }

  get memoryPath(): string {
    return path.join(this.dir, "memory");
  }
  get statePath(): string {
    return path.join(this.dir, "state");
  }
  private get metaPath(): string {
    return path.join(this.dir, "template.json");
  }
  private get lockPath(): string {
    return `${this.dir}.lock`;
  }

  /** The key for a sandbox's hypervisor config (without template fields). */
  async keyFor(base: HypervisorConfig): Promise<string> {
    return qemuTemplateKey(base, { cocoon: COCOON_VERSION });
  }

  async readMeta(): Promise<TemplateMeta | undefined> {
    const doc = await readDocument(this.metaPath, TEMPLATE_DOC);
    if (!doc) return undefined;
    // A template whose files went away or were cut short is no template: it is rebuilt rather
    // than cloned into a half-restored VM.
    const memory = await stat(this.memoryPath).catch(() => undefined);
    const state = await stat(this.statePath).catch(() => undefined);
    if (memory?.size !== doc.data.memoryMiB * 2 ** 20 || state?.size !== doc.data.stateBytes) {
      this.logger.warn(
        { dir: this.dir },
        "the VM template's files are missing or damaged: it will be rebuilt",
      );
      return undefined;
    }
    return doc.data;
  }

  async status(base?: HypervisorConfig): Promise<TemplateStatus> {
    const meta = await this.readMeta();
    const out: TemplateStatus = { path: this.dir, exists: meta !== undefined };
    if (meta) {
      out.meta = meta;
      const st = await stat(this.memoryPath).catch(() => undefined);
      if (st) out.memoryAllocatedBytes = st.blocks * 512;
    }
    if (base) {
      out.currentKey = await this.keyFor(base);
      out.matches = meta?.key === out.currentKey;
    }
    return out;
  }

  /** The template for `base`: the existing one if its key matches, else a new one (rebuilt). */
  async ensure(base: HypervisorConfig, dialTimeoutMs: number): Promise<TemplateMeta> {
    const key = await this.keyFor(base);
    const current = await this.readMeta();
    if (current?.key === key) return current;
    return withLock(
      this.lockPath,
      async () => {
        // Another process may have built it while we waited for the lock.
        const again = await this.readMeta();
        if (again?.key === key) return again;
        if (again) this.logger.info({ old: again.key, key }, "the template is out of date: rebuilding");
        return this.build(base, key, dialTimeoutMs);
      },
      { timeoutMs: Math.max(300_000, dialTimeoutMs * 2), purpose: "factory init" },
    );
  }

  /** Rebuilds even when a matching template exists. */
  async rebuild(base: HypervisorConfig, dialTimeoutMs: number): Promise<TemplateMeta> {
    const key = await this.keyFor(base);
    return withLock(this.lockPath, () => this.build(base, key, dialTimeoutMs), {
      timeoutMs: Math.max(300_000, dialTimeoutMs * 2),
      purpose: "factory init",
    });
  }

  /** A sandbox config that clones this template. */
  cloneConfig(base: HypervisorConfig): HypervisorConfig {
    return {
      ...base,
      bootFromTemplate: true,
      bootToBeTemplate: false,
      memoryPath: this.memoryPath,
      devicesStatePath: this.statePath,
      // A clone's RAM is private: no vhost-user (virtio-fs); container rootfs go in as disks.
      sharedFS: "none",
    };
  }

  private async checkRoom(parent: string, memoryMiB: number): Promise<void> {
    const fs = await statfs(parent);
    const free = fs.bavail * fs.bsize;
    const need = memoryMiB * 2 ** 20 + SPARE_BYTES;
    if (free < need) {
      throw new SandboxError(
        "ERR_RESOURCE_EXHAUSTED",
        `not enough room for the VM template in ${parent}: ${Math.floor(free / 2 ** 20)} MiB free, ${Math.ceil(need / 2 ** 20)} MiB needed`,
        { hint: "free space there, lower default_memory, or set [factory] template_path to a larger tmpfs" },
      );
    }
  }

  private async build(base: HypervisorConfig, key: string, dialTimeoutMs: number): Promise<TemplateMeta> {
    const work = `${this.dir}.partial`;
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { recursive: true, mode: 0o700 });
    const vmDir = path.join(this.ctx.paths.stateRoot, "vm", ".template");
    const config = validateHypervisorConfig({
      ...base,
      bootToBeTemplate: true,
      bootFromTemplate: false,
      memoryPath: path.join(work, "memory"),
      devicesStatePath: path.join(work, "state"),
      sharedFS: "none",
    });
    const hv = newHypervisor("qemu", { logger: this.logger, store: this.ctx.store });
    const started = Date.now();
    try {
      await this.checkRoom(work, config.memorySize);
      await hv.createVM({
        id: "template",
        config,
        paths: { vmDir, jailerBase: this.ctx.paths.jailerBase },
        logger: this.logger,
        // Warmed before it is saved: every clone maps the agent's compiled code (clone.ts).
        guestReady: (channel, signal) =>
          waitForWarmAgent(channel, "template", { timeoutMs: dialTimeoutMs, signal }),
      });
      await hv.startVM(dialTimeoutMs);
      const bootMs = Date.now() - started;
      await hv.saveVM();
      await hv.stopVM({ graceful: false });
      await hv.cleanup();
      const stateBytes = (await stat(config.devicesStatePath)).size;
      if (stateBytes === 0) throw new HypervisorError("ERR_VMM_API", "QEMU wrote an empty device state");
      await rm(this.dir, { recursive: true, force: true });
      await rename(work, this.dir);
      const meta: TemplateMeta = {
        key,
        createdAt: new Date().toISOString(),
        cocoonVersion: COCOON_VERSION,
        memoryMiB: config.memorySize,
        vcpus: config.numVCPUs,
        machine: config.hypervisorMachineType || "microvm",
        stateBytes,
        bootMs,
      };
      await writeDocument(this.metaPath, TEMPLATE_DOC, meta);
      this.logger.info({ meta }, "VM template ready");
      return meta;
    } catch (err) {
      await hv.stopVM({ graceful: false }).catch(() => undefined);
      await hv.cleanup().catch(() => undefined);
      await rm(work, { recursive: true, force: true });
      if (errnoCode(err) === "ENOSPC")
        throw new SandboxError(
          "ERR_RESOURCE_EXHAUSTED",
          `no room left for the VM template: ${messageOf(err)}`,
          {
            cause: err,
          },
        );
      throw err;
    }
  }

  /** Removes the template (and any half-built one). Clones already running keep their mapping. */
  async destroy(): Promise<boolean> {
    return withLock(
      this.lockPath,
      async () => {
        const existed = (await stat(this.dir).catch(() => undefined)) !== undefined;
        await rm(`${this.dir}.partial`, { recursive: true, force: true });
        await rm(this.dir, { recursive: true, force: true });
        return existed;
      },
      { timeoutMs: 60_000, purpose: "factory destroy" },
    );
  }
}
