import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat, statfs } from "node:fs/promises";
import path from "node:path";
import { errnoCode, messageOf, SandboxError } from "../../errors.js";
import { validateHypervisorConfig, type HypervisorConfig } from "../../hypervisor/config.js";
import { FC_SNAPSHOT_FILES, readFcSnapshotManifest } from "../../hypervisor/firecracker/snapshot.js";
import { firecrackerSnapshotKey } from "../../hypervisor/firecracker/snapshot-key.js";
import { qemuTemplateKey } from "../../hypervisor/qemu/template-key.js";
import { readDocument, writeDocument } from "../../store/atomic.js";
import { withLock } from "../../store/lock.js";
import { checkId } from "../../store/paths.js";
import { validateSandboxConfig, type SandboxConfig } from "../config.js";
import { COCOON_VERSION } from "../factory/version.js";
import { Sandbox, type SandboxContext } from "../sandbox.js";
import { collectPartialSnapshots } from "./partial.js";
import { SNAPSHOT_DOC, type SnapshotInfo, type SnapshotMeta } from "./meta.js";

/** Room a snapshot needs beyond the guest's RAM (device state, metadata). */
const SPARE_BYTES = 32 * 2 ** 20;
/** Loading or writing 512 MiB under TCG takes seconds; a stuck lock holder is given this long. */
const LOCK_TIMEOUT_MS = 600_000;

/** The hypervisors whose drivers snapshot running sandboxes. */
export type SnapshotHypervisor = SnapshotMeta["hypervisorType"];
const SNAPSHOT_HYPERVISORS: readonly string[] = ["qemu", "firecracker"] satisfies SnapshotHypervisor[];

function snapshotHypervisor(type: string): type is SnapshotHypervisor {
  return SNAPSHOT_HYPERVISORS.includes(type);
}

export interface SnapshotProgress {
  (step: string): void;
}

/**
 * Snapshots of running sandboxes (E2B-style pause/resume that survives the host process):
 * `<libRoot>/snapshots/<name>/` holds the VM's files (QEMU: `state`, device state and the
 * guest's RAM in one migration stream; Firecracker: `state`, `memory` and `firecracker.json`)
 * and `snapshot.json`. It is built in `<name>.partial` and renamed into
 * place, all under `<name>.lock`: a crash or a full disk leaves no half snapshot, and a
 * snapshot being restored cannot be removed underneath. A snapshot needs nothing of its
 * source sandbox: that can be removed.
 */
export class SnapshotStore {
  constructor(private readonly ctx: SandboxContext) {}

  get root(): string {
    return path.join(this.ctx.paths.libRoot, "snapshots");
  }
  dir(name: string): string {
    return path.join(this.root, checkId("snapshot", name));
  }
  private lockPath(name: string): string {
    return `${this.dir(name)}.lock`;
  }
  private metaPath(name: string): string {
    return path.join(this.dir(name), "snapshot.json");
  }
  private statePath(name: string): string {
    return path.join(this.dir(name), "state");
  }
  private memoryPath(name: string): string {
    return path.join(this.dir(name), FC_SNAPSHOT_FILES.memory);
  }

  /** The hypervisor config a snapshot restores with: the source's, owing nothing to a template. */
  static restoreConfig(source: HypervisorConfig): HypervisorConfig {
    return validateHypervisorConfig({
      ...source,
      bootFromTemplate: false,
      bootToBeTemplate: false,
      memoryPath: "",
      devicesStatePath: "",
    });
  }

  /**
   * The key a snapshot records and a restore recomputes: QEMU's is the templates' key
   * (template-key.ts), Firecracker's its own (firecracker/snapshot-key.ts). Keys of different
   * hypervisors never match.
   */
  static key(config: HypervisorConfig, type: SnapshotHypervisor = "qemu"): Promise<string> {
    const extra = { cocoon: COCOON_VERSION, purpose: "snapshot" };
    return type === "firecracker" ? firecrackerSnapshotKey(config, extra) : qemuTemplateKey(config, extra);
  }

  /** Pauses `sandbox`, saves its state as snapshot `name`, and lets it run on. */
  async create(sandbox: Sandbox, name?: string, progress?: SnapshotProgress): Promise<SnapshotMeta> {
    const snapName = checkId(
      "snapshot",
      name ?? `${sandbox.id.slice(0, 40)}-${randomBytes(4).toString("hex")}`,
    );
    const type = sandbox.config.hypervisorType;
    if (!snapshotHypervisor(type))
      throw new SandboxError(
        "ERR_NOT_SUPPORTED",
        type === "acrn"
          ? "ACRN cannot snapshot a running VM: snapshots are not supported on ACRN"
          : `snapshots of running sandboxes are implemented for QEMU and Firecracker only, not ${type}`,
        { details: { sandbox: sandbox.id, hypervisor: type } },
      );
    const hv = sandbox.config.hypervisorConfig as unknown as HypervisorConfig;
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    return withLock(
      this.lockPath(snapName),
      async () => {
        const dir = this.dir(snapName);
        if (await stat(dir).catch(() => undefined))
          throw new SandboxError("ERR_ALREADY_EXISTS", `a snapshot named "${snapName}" already exists`, {
            details: { snapshot: snapName },
          });
        const work = `${dir}.partial`;
        await rm(work, { recursive: true, force: true });
        await mkdir(work, { mode: 0o700 });
        try {
          await this.checkRoom(work, hv.memorySize);
          const restoreConfig = SnapshotStore.restoreConfig(hv);
          const key = await SnapshotStore.key(restoreConfig, type);
          progress?.(`pausing ${sandbox.id} and saving its device state and ${hv.memorySize} MiB of RAM`);
          const source = await sandbox.saveSnapshot(work);
          const stateBytes = (await stat(path.join(work, "state"))).size;
          if (stateBytes === 0)
            throw new SandboxError(
              "ERR_VMM_API",
              `${type === "qemu" ? "QEMU" : "Firecracker"} wrote an empty snapshot`,
            );
          // Firecracker: its manifest says which version took it and how large the memory file is.
          const fc = type === "firecracker" ? await readFcSnapshotManifest(work) : undefined;
          const state = source.doc.state;
          if (state !== "ready" && state !== "running")
            throw new SandboxError("ERR_INVALID_STATE", `sandbox ${sandbox.id} became ${state} meanwhile`);
          const meta: SnapshotMeta = {
            name: snapName,
            createdAt: new Date().toISOString(),
            cocoonVersion: COCOON_VERSION,
            hostArch: process.arch,
            hypervisorType: type,
            machine: fc ? "firecracker" : restoreConfig.hypervisorMachineType || "microvm",
            ...(fc ? { firecrackerVersion: fc.firecrackerVersion } : {}),
            memoryMiB: restoreConfig.memorySize,
            vcpus: restoreConfig.numVCPUs,
            key,
            stateBytes,
            ...(fc ? { memoryBytes: fc.memoryBytes } : {}),
            namedRam: source.namedRam,
            source: sandbox.id,
            sandbox: {
              config: {
                ...source.doc.config,
                // The guest already has its hostname: a restored sandbox keeps it.
                hostname: source.doc.config.hostname ?? source.doc.config.id.slice(0, 63),
                hypervisorConfig: restoreConfig as unknown as Record<string, unknown>,
              },
              state,
              ...(source.doc.guestProcessExit ? { guestProcessExit: source.doc.guestProcessExit } : {}),
              ...(source.watchMain ? { watchMain: source.watchMain } : {}),
            },
          };
          await writeDocument(path.join(work, "snapshot.json"), SNAPSHOT_DOC, meta);
          await rename(work, dir);
          progress?.(
            `snapshot ${snapName}: ${((stateBytes + (meta.memoryBytes ?? 0)) / 2 ** 20).toFixed(1)} MiB`,
          );
          return meta;
        } catch (err) {
          await rm(work, { recursive: true, force: true });
          if (errnoCode(err) === "ENOSPC")
            throw new SandboxError(
              "ERR_RESOURCE_EXHAUSTED",
              `no room left for the snapshot: ${messageOf(err)}`,
              {
                cause: err,
              },
            );
          throw err;
        }
      },
      { timeoutMs: LOCK_TIMEOUT_MS, purpose: "snapshot create" },
    );
  }

  private async checkRoom(dir: string, memoryMiB: number): Promise<void> {
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize;
    // Worst case: every RAM page written (QEMU skips zero pages, so it is usually far less).
    const need = memoryMiB * 2 ** 20 + SPARE_BYTES;
    if (free < need)
      throw new SandboxError(
        "ERR_RESOURCE_EXHAUSTED",
        `not enough room for a snapshot in ${this.root}: ${Math.floor(free / 2 ** 20)} MiB free, up to ${Math.ceil(need / 2 ** 20)} MiB needed`,
        { hint: "free space there or remove old snapshots (cocoon snapshot ls / rm)" },
      );
  }

  /** A snapshot's record, checked against its files; ERR_NOT_FOUND or ERR_STATE_CORRUPT otherwise. */
  async read(name: string): Promise<SnapshotMeta> {
    const doc = await readDocument(this.metaPath(name), SNAPSHOT_DOC);
    if (!doc)
      throw new SandboxError("ERR_NOT_FOUND", `no snapshot named "${name}"`, {
        details: { snapshot: name },
        hint: "cocoon snapshot ls lists them",
      });
    const st = await stat(this.statePath(name)).catch(() => undefined);
    const damaged = (what: string, size: number | undefined, expected: number) =>
      new SandboxError(
        "ERR_STATE_CORRUPT",
        `snapshot "${name}" is damaged: its ${what} file is ${size !== undefined ? `${size} bytes, expected ${expected}` : "missing"}`,
        { details: { snapshot: name }, hint: `remove it with cocoon snapshot rm ${name}` },
      );
    if (st?.size !== doc.data.stateBytes) throw damaged("state", st?.size, doc.data.stateBytes);
    if (doc.data.hypervisorType === "firecracker") {
      const expected = doc.data.memoryBytes ?? 0;
      const mem = await stat(this.memoryPath(name)).catch(() => undefined);
      if (mem?.size !== expected) throw damaged("memory", mem?.size, expected);
    }
    return doc.data;
  }

  /** Why this cocoon on this host cannot restore `meta`, or undefined when it can. */
  async incompatibility(meta: SnapshotMeta): Promise<string | undefined> {
    if (meta.cocoonVersion !== COCOON_VERSION)
      return `it was made by cocoon ${meta.cocoonVersion}, this is cocoon ${COCOON_VERSION}`;
    if (meta.hostArch !== process.arch)
      return `it was made on ${meta.hostArch}, this host is ${process.arch}`;
    const type = meta.sandbox.config.hypervisorType;
    if (type !== meta.hypervisorType || !snapshotHypervisor(type))
      return `it is a ${meta.hypervisorType} snapshot but records a ${type} sandbox`;
    const config = meta.sandbox.config.hypervisorConfig as unknown as HypervisorConfig;
    if (type === "qemu") {
      const machine = config.hypervisorMachineType || "microvm";
      if (machine !== meta.machine) return `it records machine type ${meta.machine} but a ${machine} VM`;
    }
    let key: string;
    try {
      key = await SnapshotStore.key(SnapshotStore.restoreConfig(config), type);
    } catch (err) {
      return `its VM cannot be rebuilt here: ${messageOf(err)}`;
    }
    if (key !== meta.key)
      return type === "qemu"
        ? "the QEMU binary, kernel, rootfs or VM shape it was made with changed since (its devices would not match)"
        : `the Firecracker or jailer binary${meta.firecrackerVersion ? ` (it was made by Firecracker ${meta.firecrackerVersion})` : ""}, kernel, rootfs or VM shape it was made with changed since (another Firecracker cannot load its state)`;
    return undefined;
  }

  /** Starts a new sandbox from snapshot `name`: new id, VM directory and sockets; the guest as it was. */
  async restore(name: string, options: { id?: string } = {}, progress?: SnapshotProgress): Promise<Sandbox> {
    checkId("snapshot", name);
    const id = checkId("sandbox", options.id ?? `sb-${randomBytes(5).toString("hex")}`);
    return withLock(
      this.lockPath(name),
      async () => {
        const meta = await this.read(name);
        const why = await this.incompatibility(meta);
        if (why)
          throw new SandboxError("ERR_SNAPSHOT_INCOMPATIBLE", `cannot restore snapshot "${name}": ${why}`, {
            details: {
              snapshot: name,
              cocoonVersion: meta.cocoonVersion,
              hypervisor: meta.hypervisorType,
              machine: meta.machine,
              ...(meta.firecrackerVersion ? { firecrackerVersion: meta.firecrackerVersion } : {}),
            },
            hint: "take a new snapshot with this cocoon and these assets",
          });
        const { hypervisorConfig, ...rest } = meta.sandbox.config;
        const config = validateSandboxConfig({
          ...rest,
          id,
          hypervisorConfig: SnapshotStore.restoreConfig(hypervisorConfig as unknown as HypervisorConfig),
        } satisfies SandboxConfig);
        progress?.(`restoring ${meta.memoryMiB} MiB snapshot ${name} as sandbox ${id}`);
        return Sandbox.create(this.ctx, config, {
          restore: {
            dir: this.dir(name),
            namedRam: meta.namedRam,
            state: meta.sandbox.state,
            ...(meta.sandbox.guestProcessExit ? { guestProcessExit: meta.sandbox.guestProcessExit } : {}),
            ...(meta.sandbox.watchMain ? { watchMain: meta.sandbox.watchMain } : {}),
          },
        });
      },
      { timeoutMs: LOCK_TIMEOUT_MS, purpose: "snapshot restore" },
    );
  }

  async list(): Promise<SnapshotInfo[]> {
    const names = (await readdir(this.root).catch(() => [] as string[])).filter(
      (n) => !n.endsWith(".partial") && !n.endsWith(".lock") && !n.startsWith("."),
    );
    const out: SnapshotInfo[] = [];
    for (const name of names.sort()) {
      let meta: SnapshotMeta;
      try {
        meta = await this.read(name);
      } catch (err) {
        if (err instanceof SandboxError && err.code === "ERR_NOT_FOUND") continue; // removed meanwhile
        out.push({
          name,
          createdAt: "",
          source: "",
          memoryMiB: 0,
          sizeBytes: 0,
          cocoonVersion: "",
          restorable: messageOf(err),
        });
        continue;
      }
      out.push({
        name,
        createdAt: meta.createdAt,
        source: meta.source,
        memoryMiB: meta.memoryMiB,
        sizeBytes: meta.stateBytes + (meta.memoryBytes ?? 0),
        cocoonVersion: meta.cocoonVersion,
        restorable: (await this.incompatibility(meta)) ?? true,
      });
    }
    return out;
  }

  /** Removes a snapshot (waiting for a restore of it to finish). */
  async remove(name: string): Promise<boolean> {
    const dir = this.dir(name);
    return withLock(
      this.lockPath(name),
      async () => {
        const existed = (await stat(dir).catch(() => undefined)) !== undefined;
        await rm(`${dir}.partial`, { recursive: true, force: true });
        await rm(dir, { recursive: true, force: true });
        return existed;
      },
      { timeoutMs: LOCK_TIMEOUT_MS, purpose: "snapshot rm" },
    );
  }

  /** Half-made snapshots whose maker died (cocoon gc). */
  collectPartial(options: { dryRun?: boolean } = {}): Promise<string[]> {
    return collectPartialSnapshots(this.root, options);
  }
}
