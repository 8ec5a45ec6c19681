import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { waitForWarmAgent } from "./clone.js";
import { errnoCode, isCocoonError } from "../../errors.js";
import type { HypervisorConfig } from "../../hypervisor/config.js";
import type { HypervisorState } from "../../hypervisor/hypervisor.js";
import { newHypervisor } from "../../hypervisor/registry.js";
import { isProcessAlive, readProcStat } from "../../host/proc.js";
import { programScript } from "../../package-root.js";
import { reapVmProcesses } from "../../monitor/reap.js";
import { readDocument, writeDocument, type DocumentKind } from "../../store/atomic.js";
import { acquireLock } from "../../store/lock.js";
import type { Store } from "../../store/store.js";
import { SANDBOX_DOC } from "../state.js";

/**
 * Kata's VM cache: `[factory] cache = N` keeps N clones of the template booted, their agent
 * answering, so that a create takes one at once. State under `<stateRoot>/factory/pool/`,
 * one file per clone, its name saying who holds it:
 *
 *   <id>.starting-<pid>.json  a filler (pid) is starting it
 *   <id>.ready.json           ready: its VM is up, nobody holds it
 *   <id>.taken-<pid>.json     a create (pid) took it and is making it a sandbox
 *
 * Taking is one rename(2) from `.ready` to `.taken-<pid>`: of two processes only one succeeds,
 * so a clone is never handed out twice. Each clone's VM directory is `<pool>/<id>/`; a
 * sandbox made from it records that directory as its VM's. A record whose holder died is
 * garbage (`cocoon gc`), as are ready clones whose VM died.
 */

const entrySchema = z.object({
  id: z.string(),
  /** The template key it was cloned from: a create takes only clones of the current template. */
  key: z.string(),
  vmDir: z.string(),
  createdAt: z.string(),
  hypervisorState: z.record(z.string(), z.unknown()),
});
export type PoolEntry = z.infer<typeof entrySchema>;
export const POOL_ENTRY_DOC: DocumentKind<PoolEntry> = {
  schema: "cocoon.pool-entry",
  version: 1,
  data: entrySchema,
};

/** What a filler process is asked to do (argv of refill-main.ts, validated there). */
export const refillJobSchema = z.object({
  poolDir: z.string(),
  key: z.string(),
  target: z.number().int().nonnegative(),
  config: z.record(z.string(), z.unknown()),
  jailerBase: z.string(),
  dialTimeoutMs: z.number().int().positive(),
});
export type RefillJob = z.infer<typeof refillJobSchema>;

const NAME_RE = /^(wp-[0-9a-f]+)\.(ready|starting-(\d+)|taken-(\d+))\.json$/;

export interface PoolRecord {
  id: string;
  file: string;
  status: "ready" | "starting" | "taken";
  holder?: number;
}

export interface PoolStatus {
  ready: number;
  starting: number;
  taken: number;
}

export class WarmPool {
  constructor(
    readonly dir: string,
    private readonly ctx: { store: Store; logger: Logger; jailerBase: string },
  ) {}

  private file(id: string, status: string): string {
    return path.join(this.dir, `${id}.${status}.json`);
  }

  async records(): Promise<PoolRecord[]> {
    const out: PoolRecord[] = [];
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const m = NAME_RE.exec(name);
      if (!m) continue;
      const [, id, status, starter, taker] = m;
      out.push({
        id: id!,
        file: path.join(this.dir, name),
        status: status === "ready" ? "ready" : starter ? "starting" : "taken",
        ...(starter || taker ? { holder: Number(starter ?? taker) } : {}),
      });
    }
    return out.sort((a, b) => a.file.localeCompare(b.file));
  }

  async status(): Promise<PoolStatus> {
    const r = await this.records();
    const n = (s: PoolRecord["status"]): number => r.filter((x) => x.status === s).length;
    return { ready: n("ready"), starting: n("starting"), taken: n("taken") };
  }

  /**
   * Takes a ready clone of the template `key` (undefined when there is none). The caller owns
   * it: it must `release` it once a sandbox records its VM, or `discard` it.
   */
  async take(key: string): Promise<PoolEntry | undefined> {
    for (const r of await this.records()) {
      if (r.status !== "ready") continue;
      const taken = this.takenFile(r.id);
      try {
        await rename(r.file, taken);
      } catch (err) {
        if (errnoCode(err) === "ENOENT") continue; // another process took it first
        throw err;
      }
      const doc = await readDocument(taken, POOL_ENTRY_DOC).catch(() => undefined);
      const pid = Number(doc?.data.hypervisorState.pid);
      const start = doc?.data.hypervisorState.pidStartTime;
      const alive = doc ? await isProcessAlive(pid, typeof start === "number" ? start : undefined) : false;
      if (!doc || doc.data.key !== key || !alive) {
        // An out-of-date template's clone, or one whose VM died: it goes, and we look on.
        this.ctx.logger.info({ id: r.id, alive }, "discarding a warm clone that cannot be used");
        await this.discard(r.id, taken);
        continue;
      }
      return doc.data;
    }
    return undefined;
  }

  takenFile(id: string): string {
    return this.file(id, `taken-${process.pid}`);
  }

  /** The sandbox now records the clone's VM: the pool forgets it. */
  async release(entry: PoolEntry): Promise<void> {
    await rm(this.takenFile(entry.id), { force: true });
  }

  /** Ends a clone's VM and removes its directory and record. */
  async discard(id: string, recordFile: string): Promise<void> {
    const vmDir = path.join(this.dir, id);
    await reapVmProcesses(vmDir).catch(() => undefined);
    await rm(vmDir, { recursive: true, force: true });
    await rm(recordFile, { force: true });
  }

  /**
   * Starts clones until `target` are ready or starting. One filler at a time (a lock): a
   * second one finds it held and leaves the work to the first.
   */
  async fill(job: RefillJob): Promise<number> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    let lock;
    try {
      lock = await acquireLock(`${this.dir}.fill.lock`, { timeoutMs: 0, purpose: "factory pool refill" });
    } catch (err) {
      if (isCocoonError(err) && err.code === "ERR_LOCK_TIMEOUT") return 0;
      throw err;
    }
    let started = 0;
    try {
      for (;;) {
        const s = await this.status();
        if (s.ready + s.starting >= job.target) break;
        await this.startOne(job);
        started++;
      }
    } finally {
      await lock.release();
    }
    return started;
  }

  private async startOne(job: RefillJob): Promise<void> {
    const id = `wp-${randomBytes(6).toString("hex")}`;
    const vmDir = path.join(this.dir, id);
    const starting = this.file(id, `starting-${process.pid}`);
    await writeFile(starting, "", { mode: 0o600 });
    const hv = newHypervisor("qemu", { logger: this.ctx.logger, store: this.ctx.store });
    try {
      await hv.createVM({
        id,
        config: job.config as unknown as HypervisorConfig,
        paths: { vmDir, jailerBase: job.jailerBase },
        logger: this.ctx.logger,
        guestReady: (channel, signal) =>
          waitForWarmAgent(channel, id, { timeoutMs: job.dialTimeoutMs, signal }),
      });
      await hv.startVM(job.dialTimeoutMs);
      const entry: PoolEntry = {
        id,
        key: job.key,
        vmDir,
        createdAt: new Date().toISOString(),
        hypervisorState: hv.save() as unknown as Record<string, unknown>,
      };
      // Written under a name no taker matches, then renamed: a taker never reads half a record.
      const tmp = this.file(id, `starting-${process.pid}.doc`);
      await writeDocument(tmp, POOL_ENTRY_DOC, entry);
      await rename(tmp, this.file(id, "ready"));
      await rm(starting, { force: true });
    } catch (err) {
      await hv.stopVM({ graceful: false }).catch(() => undefined);
      await hv.cleanup().catch(() => undefined);
      await this.discard(id, starting);
      throw err;
    }
  }

  /**
   * Starts a filler in its own process, detached: a create returns at once and the refill
   * outlives it. The filler is its bundle, dist/bundle/refill.js, or tsc's
   * dist/sandbox/factory/refill-main.js (both built by `npm run build`; tests from the sources
   * run it too: their setup builds dist/).
   */
  spawnRefill(job: RefillJob): void {
    const main = programScript("refill", "sandbox/factory/refill-main.js");
    const child = spawn(process.execPath, [main, JSON.stringify(job)], { detached: true, stdio: "ignore" });
    child.on("error", (err) => this.ctx.logger.warn({ err }, "could not start the warm pool refill"));
    child.unref();
  }

  /** Empties the pool: every clone's VM ends, whoever was starting or holding it. */
  async destroy(vmDirsInUse: () => Promise<Set<string>>): Promise<number> {
    // A filler at work would start clones again behind us: wait for it (it holds the lock).
    const lock = await acquireLock(`${this.dir}.fill.lock`, {
      timeoutMs: 600_000,
      purpose: "factory destroy",
    });
    try {
      return await this.removeAll(vmDirsInUse);
    } finally {
      await lock.release();
    }
  }

  private async removeAll(vmDirsInUse: () => Promise<Set<string>>): Promise<number> {
    let n = 0;
    const records = await this.records();
    const used = await vmDirsInUse();
    for (const r of records) {
      if (r.status === "taken" && used.has(path.join(this.dir, r.id))) continue; // a sandbox has it
      await this.discard(r.id, r.file);
      n++;
    }
    for (const id of await this.orphanDirs(vmDirsInUse)) await this.discard(id, this.file(id, "none"));
    return n;
  }

  /**
   * Clone VM directories with no record that no sandbox uses: a filler writes its record
   * before the directory exists, and a taker lets go of its record only after its sandbox
   * recorded the directory, so these belong to nobody.
   */
  private async orphanDirs(vmDirsInUse: () => Promise<Set<string>>): Promise<string[]> {
    // In this order (directories, records, sandboxes): a directory whose record went before
    // the records were read was released, so its sandbox recorded it before the sandboxes are read.
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((n) =>
      /^wp-[0-9a-f]+$/.test(n),
    );
    const recorded = new Set((await this.records()).map((r) => r.id));
    const used = await vmDirsInUse();
    return names.filter((n) => !recorded.has(n) && !used.has(path.join(this.dir, n)));
  }

  /** `cocoon gc`: records whose holder died, ready clones whose VM died. Returns what it removed. */
  async collect(options: { dryRun?: boolean; vmDirsInUse: () => Promise<Set<string>> }): Promise<string[]> {
    const removed: string[] = [];
    const records = await this.records();
    const used = await options.vmDirsInUse();
    for (const r of records) {
      let dead: boolean;
      if (r.status === "ready") {
        const doc = await readDocument(r.file, POOL_ENTRY_DOC).catch(() => undefined);
        const pid = Number(doc?.data.hypervisorState.pid);
        dead = !doc || !(await readProcStat(pid)) || !(await isProcessAlive(pid));
      } else {
        dead = !(await isProcessAlive(r.holder ?? 0));
      }
      if (!dead) continue;
      const vmDir = path.join(this.dir, r.id);
      removed.push(`warm clone ${r.id} (${r.status})`);
      if (options.dryRun) continue;
      // A taker that died after its sandbox recorded the VM: the sandbox owns it now.
      if (r.status === "taken" && used.has(vmDir)) await rm(r.file, { force: true });
      else await this.discard(r.id, r.file);
    }
    for (const id of await this.orphanDirs(options.vmDirsInUse)) {
      removed.push(`warm clone ${id} (no record)`);
      if (!options.dryRun) await this.discard(id, this.file(id, "none"));
    }
    return removed;
  }
}

/** VM directories sandboxes record (clones taken from the pool run on in theirs). */
export async function vmDirsInUse(store: Store): Promise<Set<string>> {
  const used = new Set<string>();
  for (const id of await store.listSandboxes()) {
    const doc = await store.readSandbox(id, "sandbox", SANDBOX_DOC).catch(() => undefined);
    if (doc?.data.vmDir) used.add(doc.data.vmDir);
  }
  return used;
}

export function entryState(entry: PoolEntry): HypervisorState {
  return entry.hypervisorState as unknown as HypervisorState;
}
