import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { HypervisorError } from "../../errors.js";
import type { DocumentKind } from "../../store/atomic.js";
import type { Store } from "../../store/store.js";
import { ACRN_MAX_UUIDS, ACRN_UUIDS, type AcrnUuid } from "../../vmm/acrn/uuids.js";

/**
 * Which of ACRN's pre-defined VM UUIDs are in use, host-wide. Every cocoon process reads and
 * writes the pool under one global lock, so two processes creating VMs at once never get the
 * same UUID. An entry names its owner (the sandbox id) so a UUID is only freed by its owner.
 */

const entrySchema = z.object({
  uuid: z.enum(ACRN_UUIDS),
  owner: z.string().min(1),
  since: z.string(),
});
export type UuidPoolEntry = z.infer<typeof entrySchema>;

const poolSchema = z
  .object({ busy: z.array(entrySchema) })
  .refine((p) => new Set(p.busy.map((e) => e.uuid)).size === p.busy.length, "a UUID is listed as busy twice");
type PoolData = z.infer<typeof poolSchema>;

export const ACRN_UUID_POOL_KIND: DocumentKind<PoolData> = {
  schema: "cocoon.acrn-uuid-pool",
  version: 1,
  data: poolSchema,
};

/** The global document and lock names. */
export const ACRN_UUID_POOL_NAME = "acrn-uuids";

export interface UuidPoolOptions {
  lockTimeoutMs?: number;
  /** Test seam: a pause inside the critical section, to widen any race window. */
  holdMs?: number;
}

export class AcrnUuidPool {
  constructor(
    private readonly store: Store,
    private readonly options: UuidPoolOptions = {},
  ) {}

  private locked<T>(purpose: string, fn: (data: PoolData) => Promise<T>): Promise<T> {
    return this.store.withGlobalLock(
      ACRN_UUID_POOL_NAME,
      async () => {
        const doc = await this.store.readGlobal(ACRN_UUID_POOL_NAME, ACRN_UUID_POOL_KIND);
        const data = doc?.data ?? { busy: [] };
        if (this.options.holdMs) await sleep(this.options.holdMs);
        return fn(data);
      },
      { purpose, timeoutMs: this.options.lockTimeoutMs },
    );
  }

  /**
   * Marks the first free UUID among the first `limit` as owned by `owner` and returns it. An
   * owner that already holds one gets the same UUID back (a retried create does not leak).
   */
  async allocate(owner: string, limit: number): Promise<AcrnUuid> {
    if (owner === "") throw new HypervisorError("ERR_INVALID_ARGUMENT", "an ACRN UUID needs an owner");
    if (!Number.isInteger(limit) || limit < 0) {
      throw new HypervisorError("ERR_INVALID_ARGUMENT", `invalid ACRN VM limit ${String(limit)}`, {
        details: { limit },
      });
    }
    const usable = Math.min(limit, ACRN_MAX_UUIDS);
    return this.locked(`allocate an ACRN UUID for ${owner}`, async (data) => {
      const mine = data.busy.find((e) => e.owner === owner);
      if (mine) return mine.uuid;
      const busy = new Set<string>(data.busy.map((e) => e.uuid));
      const uuid = ACRN_UUIDS.slice(0, usable).find((u) => !busy.has(u));
      if (uuid === undefined) {
        throw new HypervisorError(
          "ERR_RESOURCE_EXHAUSTED",
          usable === 0
            ? "this ACRN platform allows no VMs for cocoon (its VM limit is 0)"
            : `no free ACRN VM UUID: all ${usable} VMs this ACRN platform allows are running (limit ${usable})`,
          {
            details: { limit: usable, busy: data.busy.map((e) => e.owner) },
            hint: "stop a sandbox first; ACRN only accepts its pre-defined VM UUIDs",
          },
        );
      }
      data.busy.push({ uuid, owner, since: new Date().toISOString() });
      await this.store.writeGlobal(ACRN_UUID_POOL_NAME, ACRN_UUID_POOL_KIND, data);
      return uuid;
    });
  }

  /** Frees `uuid` if `owner` holds it; false when it was not (already free, or someone else's). */
  async release(uuid: AcrnUuid, owner: string): Promise<boolean> {
    return this.locked(`release ACRN UUID ${uuid}`, async (data) => {
      const at = data.busy.findIndex((e) => e.uuid === uuid && e.owner === owner);
      if (at === -1) return false;
      data.busy.splice(at, 1);
      await this.store.writeGlobal(ACRN_UUID_POOL_NAME, ACRN_UUID_POOL_KIND, data);
      return true;
    });
  }

  /** The busy entries, in pool order. */
  async busy(): Promise<UuidPoolEntry[]> {
    const doc = await this.store.readGlobal(ACRN_UUID_POOL_NAME, ACRN_UUID_POOL_KIND);
    const order = (u: string) => (ACRN_UUIDS as readonly string[]).indexOf(u);
    return [...(doc?.data.busy ?? [])].sort((a, b) => order(a.uuid) - order(b.uuid));
  }
}
