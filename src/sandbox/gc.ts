/**
 * `cocoon gc`: finds what no live owner holds and removes it — half-created sandboxes whose
 * creator died, processes tagged with a VM that has no record, VM and shared directories
 * without a sandbox, mounts under the state root that nothing owns, stale locks — and says
 * what it removed. `rm -f` and `ps` run the same check first, so a crash is cleaned up by the
 * next command a user types.
 */
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { isCocoonError, messageOf } from "../errors.js";
import { mountsUnder, unmount } from "../host/mount.js";
import { findTaggedProcesses, reapVmProcesses } from "../monitor/reap.js";
import { acquireLock, lockOwnerState } from "../store/lock.js";
import { checkId, type RuntimePaths } from "../store/paths.js";
import type { Store } from "../store/store.js";
import { vmDirsInUse, WarmPool } from "./factory/pool.js";
import { foldLiveness } from "./liveness.js";
import { SandboxCgroups } from "./resources/host-cgroups.js";
import { collectPartialSnapshots } from "./snapshot/partial.js";
import { SANDBOX_DOC } from "./state.js";
import { orphanNamespaces, removeOrphanNamespace } from "./network.js";

export type GarbageKind = "sandbox" | "process" | "directory" | "mount" | "lock" | "network" | "cgroup";

export interface Garbage {
  kind: GarbageKind;
  /** What it is, for people: "sandbox k2 (creating it was interrupted …)", "qemu-system-x86_64 (pid 812)". */
  what: string;
  /** The sandbox it belonged to, when known. */
  sandbox?: string;
  /** True once removed; false in a dry run or when removing failed (then `error` says why). */
  removed: boolean;
  error?: string;
}

export interface GcContext {
  paths: RuntimePaths;
  store: Store;
  logger: Logger;
  /** Deletes a sandbox the usual way (the Sandbox class, injected to keep this module below it). */
  deleteSandbox: (id: string) => Promise<void>;
}

async function listDir(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

/** Runs `fn` under the sandbox's lock, or skips it (returns false) when a live process holds it. */
async function ifUnheld(ctx: GcContext, id: string, fn: () => Promise<void>): Promise<boolean> {
  try {
    await ctx.store.withSandboxLock(id, fn, { timeoutMs: 200, purpose: "gc" });
    return true;
  } catch (err) {
    if (isCocoonError(err) && err.code === "ERR_LOCK_TIMEOUT") return false;
    throw err;
  }
}

export async function collectGarbage(ctx: GcContext, options: { dryRun?: boolean } = {}): Promise<Garbage[]> {
  const dryRun = options.dryRun ?? false;
  const found: Garbage[] = [];
  const act = async (g: Omit<Garbage, "removed">, remove: () => Promise<void>): Promise<void> => {
    if (dryRun) {
      found.push({ ...g, removed: false });
      return;
    }
    try {
      await remove();
      found.push({ ...g, removed: true });
    } catch (err) {
      found.push({ ...g, removed: false, error: messageOf(err) });
    }
  };

  // 1. Half-created sandboxes: the record names a creator that is dead.
  const known = new Set(await ctx.store.listSandboxes());
  for (const id of known) {
    const stored = await ctx.store.readSandbox(id, "sandbox", SANDBOX_DOC).catch(() => undefined);
    if (!stored?.data.creating) continue;
    const doc = stored.data;
    await foldLiveness(doc, doc.vmDir ?? ctx.paths.vmDir(id));
    if (doc.stopCause?.reason !== "interrupted") continue;
    await act({ kind: "sandbox", what: `${id} (${doc.stopCause.message})`, sandbox: id }, async () => {
      await ctx.deleteSandbox(id);
      known.delete(id);
    });
  }

  // 2. Processes tagged with a VM directory whose sandbox has no record.
  const vmRoot = path.join(ctx.paths.stateRoot, "vm");
  const orphans = new Map<string, string[]>();
  for (const p of await findTaggedProcesses(vmRoot)) {
    const id = path.basename(p.vmDir);
    if (known.has(id)) continue;
    orphans.set(p.vmDir, [...(orphans.get(p.vmDir) ?? []), `${p.name} (pid ${p.pid})`]);
  }
  /** Sandboxes of this root whose record is gone but something of theirs was found. */
  const unrecorded = new Set<string>();
  for (const [vmDir, names] of orphans) {
    const id = path.basename(vmDir);
    unrecorded.add(id);
    await ifUnheld(ctx, id, () =>
      act({ kind: "process", what: names.join(", "), sandbox: id }, async () => {
        await reapVmProcesses(vmDir);
      }),
    );
  }

  // 3. Mounts under the state root that belong to no sandbox (deepest first).
  const mounts = (await mountsUnder(ctx.paths.stateRoot)).sort((a, b) => b.target.length - a.target.length);
  for (const m of mounts) {
    const id = sandboxIdOf(ctx.paths, m.target);
    if (id && known.has(id)) continue;
    await act({ kind: "mount", what: m.target, ...(id ? { sandbox: id } : {}) }, () =>
      unmount(m.target, { lazy: true }),
    );
  }

  // 4. VM and shared directories without a sandbox record (and not being made right now).
  for (const [base, label] of [
    [vmRoot, "VM directory"],
    [path.join(ctx.paths.stateRoot, "shared"), "shared directory"],
  ] as const) {
    for (const id of await listDir(base)) {
      if (known.has(id) || !isSandboxId(id)) continue;
      unrecorded.add(id);
      const dir = path.join(base, id);
      await ifUnheld(ctx, id, async () => {
        if (await ctx.store.sandboxExists(id).catch(() => true)) return; // created meanwhile
        await act({ kind: "directory", what: `${label} ${dir}`, sandbox: id }, () =>
          rm(dir, { recursive: true, force: true, maxRetries: 3 }),
        );
      });
    }
  }

  // 5. Network namespaces this state root made for a sandbox that has no record.
  // (Under the sandbox's lock and re-checked: a sandbox being created holds its lock.)
  for (const { name, id } of await orphanNamespaces(ctx.paths.stateRoot, known)) {
    await ifUnheld(ctx, id, async () => {
      if (await ctx.store.sandboxExists(id).catch(() => true)) return;
      await act({ kind: "network", what: `network namespace ${name}`, sandbox: id }, () =>
        removeOrphanNamespace(name),
      );
    });
  }

  // 5b. Host cgroups (`cocoon-<id>`) of those sandboxes: their record, which names them, is gone.
  for (const id of unrecorded) {
    await ifUnheld(ctx, id, async () => {
      if (await ctx.store.sandboxExists(id).catch(() => true)) return;
      const cgroups = await SandboxCgroups.unrecorded(id);
      if (cgroups)
        await act(
          { kind: "cgroup", what: `host cgroups ${cgroups.tops.join(", ")}`, sandbox: id },
          cgroups.remove,
        );
    });
  }

  // 6. Locks and lock temp files whose owner is dead.
  for (const name of await listDir(ctx.paths.locksDir)) {
    const file = path.join(ctx.paths.locksDir, name);
    if (name.endsWith(".lock")) {
      if ((await lockOwnerState(file)) !== "dead") continue;
      // Taking the lock breaks it through the lock's own protocol (no race with another taker).
      await act({ kind: "lock", what: file }, async () => {
        const lock = await acquireLock(file, { timeoutMs: 200, purpose: "gc" });
        await lock.release();
      });
    } else if (name.endsWith(".tmp")) {
      if ((await lockOwnerState(file)) !== "dead") continue;
      await act({ kind: "lock", what: file }, () => rm(file, { force: true }));
    }
  }
  // 6. The warm pool: clones whose filler or taker died, ready clones whose VM died.
  const pool = new WarmPool(path.join(ctx.paths.stateRoot, "factory", "pool"), {
    store: ctx.store,
    logger: ctx.logger,
    jailerBase: ctx.paths.jailerBase,
  });
  try {
    for (const what of await pool.collect({ dryRun, vmDirsInUse: () => vmDirsInUse(ctx.store) }))
      found.push({ kind: "process", what, removed: !dryRun });
  } catch (err) {
    found.push({ kind: "process", what: "the warm pool", removed: false, error: messageOf(err) });
  }

  // 7. Half-made snapshots whose maker died.
  for (const dir of await collectPartialSnapshots(path.join(ctx.paths.libRoot, "snapshots"), { dryRun }))
    found.push({ kind: "directory", what: `half-made snapshot ${dir}`, removed: !dryRun });

  if (found.length) ctx.logger.info({ found, dryRun }, "garbage collected");
  return found;
}

function isSandboxId(id: string): boolean {
  try {
    checkId("sandbox", id);
    return true;
  } catch {
    return false; // not a name cocoon makes: not ours to remove
  }
}

/** `<state>/{vm,shared,sbs}/<id>/…` → id. */
function sandboxIdOf(paths: RuntimePaths, target: string): string | undefined {
  const rel = path.relative(paths.stateRoot, target).split(path.sep);
  return rel.length >= 2 && ["vm", "shared", "sbs"].includes(rel[0]!) ? rel[1] : undefined;
}
