import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, rm, rmdir, stat, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { CocoonError, StoreError, errnoCode, messageOf } from "../errors.js";
import { isProcessAlive, readProcStat } from "../host/proc.js";

/**
 * An exclusive lock between cocoon processes (and between tasks of one process), held as a
 * file naming its owner. Taking it is one atomic link(2); a lock whose owner died (pid gone,
 * or reused by another process: the start time differs) is broken by the next taker, so a
 * crashed holder cannot wedge a sandbox. Breaking goes through a short-lived `.break`
 * directory so that two takers never both break and then delete a fresh lock.
 */

const ownerSchema = z.object({
  pid: z.number().int(),
  startTime: z.number().optional(),
  nonce: z.string(),
  purpose: z.string().optional(),
  acquiredAt: z.string(),
});
type Owner = z.infer<typeof ownerSchema>;

export interface LockOptions {
  /** How long to wait for a live holder (default 30 s). */
  timeoutMs?: number;
  pollMs?: number;
  /** Shown to whoever waits on this lock. */
  purpose?: string;
  signal?: AbortSignal;
}

export interface LockHandle {
  readonly path: string;
  release(): Promise<void>;
}

/** A `.break` directory older than this belongs to a breaker that died mid-way. */
const STALE_BREAKER_MS = 10_000;

let selfStartTime: number | undefined;
async function ownStartTime(): Promise<number | undefined> {
  selfStartTime ??= (await readProcStat(process.pid))?.startTime;
  return selfStartTime;
}

async function readOwner(lockPath: string): Promise<{ owner?: Owner; raw?: string }> {
  try {
    const raw = await readFile(lockPath, "utf8");
    const parsed = ownerSchema.safeParse(JSON.parse(raw));
    return parsed.success ? { owner: parsed.data, raw } : { raw };
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return {};
    return { raw: "" }; // unreadable or not JSON: treated as an owner that is not alive
  }
}

async function ownerAlive(owner: Owner | undefined): Promise<boolean> {
  if (!owner) return false;
  return isProcessAlive(owner.pid, owner.startTime);
}

/**
 * What a lock file (or a lock's temp file) says of its owner: "none" when there is no file,
 * "alive" or "dead" otherwise. For cleanups; taking a lock breaks a dead one by itself.
 */
export async function lockOwnerState(lockPath: string): Promise<"none" | "alive" | "dead"> {
  const { owner, raw } = await readOwner(lockPath);
  if (raw === undefined) return "none";
  return (await ownerAlive(owner)) ? "alive" : "dead";
}

/** Removes a dead owner's lock, unless someone else already replaced it. */
async function breakStale(lockPath: string, staleRaw: string): Promise<void> {
  const breaker = `${lockPath}.break`;
  try {
    await mkdir(breaker);
  } catch (err) {
    if (errnoCode(err) !== "EEXIST") throw err;
    try {
      const st = await stat(breaker);
      if (Date.now() - st.mtimeMs > STALE_BREAKER_MS) await rm(breaker, { recursive: true, force: true });
    } catch {
      // gone already
    }
    return; // someone else is breaking it; retry the link later
  }
  try {
    const now = await readOwner(lockPath);
    if (now.raw !== undefined && now.raw === staleRaw && !(await ownerAlive(now.owner))) {
      await unlink(lockPath).catch(() => undefined);
    }
  } finally {
    await rmdir(breaker).catch(() => undefined);
  }
}

export async function acquireLock(lockPath: string, options: LockOptions = {}): Promise<LockHandle> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const pollMs = options.pollMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  await mkdir(path.dirname(lockPath), { recursive: true, mode: 0o700 });
  const owner: Owner = {
    pid: process.pid,
    startTime: await ownStartTime(),
    nonce: randomBytes(12).toString("hex"),
    acquiredAt: new Date().toISOString(),
    ...(options.purpose ? { purpose: options.purpose } : {}),
  };
  const body = JSON.stringify(owner);
  const tmp = `${lockPath}.${owner.nonce}.tmp`;
  try {
    // A full disk creates the file and then fails the write: the finally below removes it,
    // so a failed take never leaves a 0-byte temp file behind.
    await writeFile(tmp, body, { mode: 0o600, flag: "wx" });
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new StoreError("ERR_STATE_IO", `cannot take lock ${lockPath}: ${messageOf(err)}`, {
      cause: err,
      details: { lock: lockPath },
    });
  }
  try {
    for (;;) {
      if (options.signal?.aborted) {
        throw new CocoonError("ERR_CANCELLED", `gave up waiting for lock ${lockPath}`);
      }
      try {
        await link(tmp, lockPath);
        return {
          path: lockPath,
          release: () => releaseLock(lockPath, body),
        };
      } catch (err) {
        if (errnoCode(err) !== "EEXIST") {
          throw new StoreError("ERR_STATE_IO", `cannot take lock ${lockPath}: ${messageOf(err)}`, {
            cause: err,
          });
        }
      }
      const holder = await readOwner(lockPath);
      if (holder.raw !== undefined && !(await ownerAlive(holder.owner))) {
        await breakStale(lockPath, holder.raw);
        continue;
      }
      if (Date.now() >= deadline) {
        const who = holder.owner
          ? `process ${holder.owner.pid}${holder.owner.purpose ? ` (${holder.owner.purpose})` : ""} since ${holder.owner.acquiredAt}`
          : "another process";
        throw new StoreError(
          "ERR_LOCK_TIMEOUT",
          `lock ${lockPath} is held by ${who}; waited ${timeoutMs} ms`,
          {
            details: { lock: lockPath, holder: holder.owner },
          },
        );
      }
      await sleep(pollMs);
    }
  } finally {
    await rm(tmp, { force: true });
  }
}

async function releaseLock(lockPath: string, body: string): Promise<void> {
  // Only remove the lock if it is still ours (it may have been broken if we were thought dead).
  try {
    const current = await readFile(lockPath, "utf8");
    if (current === body) await unlink(lockPath);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
}

/** Runs `fn` while holding the lock; the lock is released on every path. */
export async function withLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  const handle = await acquireLock(lockPath, options);
  try {
    return await fn();
  } finally {
    await handle.release();
  }
}
