// A separate cocoon process taking ACRN UUIDs from the global pool, for the concurrency test.
//   uuid-worker.ts <stateRoot> <ownerPrefix> <count> <limit> <holdMs> <peers> [unlocked]
// Prints one JSON line: the UUID (or error code) each allocation got. "unlocked" does the same
// read-modify-write without the pool's lock, and waits after its read until the other worker
// has read too: the control that shows the race is real. Both modes start together.
import { readdir, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import path from "node:path";
import {
  ACRN_UUID_POOL_KIND,
  ACRN_UUID_POOL_NAME,
  AcrnUuidPool,
} from "../../../src/hypervisor/acrn/uuid-pool.js";
import { isCocoonError } from "../../../src/errors.js";
import { RuntimePaths } from "../../../src/store/paths.js";
import { Store } from "../../../src/store/store.js";
import { ACRN_UUIDS } from "../../../src/vmm/acrn/uuids.js";

const [stateRoot, prefix, count, limit, holdMs, peers, mode] = process.argv.slice(2);
const store = new Store(
  new RuntimePaths({
    stateRoot: stateRoot!,
    libRoot: path.join(stateRoot!, "lib"),
    assetsDir: path.join(stateRoot!, "a"),
  }),
);
const pool = new AcrnUuidPool(store, { holdMs: Number(holdMs), lockTimeoutMs: 60_000 });

/** Waits until all `peers` workers have reached this point (marker files ending in `suffix`). */
async function barrier(name: string, suffix: string): Promise<void> {
  await writeFile(path.join(stateRoot!, `${name}${suffix}`), "");
  const deadline = Date.now() + 20_000;
  while (
    (await readdir(stateRoot!)).filter((f) => f.endsWith(suffix)).length < Number(peers) &&
    Date.now() < deadline
  ) {
    await sleep(5);
  }
}

async function allocateUnlocked(owner: string): Promise<string> {
  const data = (await store.readGlobal(ACRN_UUID_POOL_NAME, ACRN_UUID_POOL_KIND))?.data ?? { busy: [] };
  await barrier(owner, ".read");
  const busy = new Set<string>(data.busy.map((e) => e.uuid));
  const uuid = ACRN_UUIDS.slice(0, Number(limit)).find((u) => !busy.has(u));
  if (!uuid) return "ERR_RESOURCE_EXHAUSTED";
  data.busy.push({ uuid, owner, since: new Date().toISOString() });
  try {
    await store.writeGlobal(ACRN_UUID_POOL_NAME, ACRN_UUID_POOL_KIND, data);
  } catch {
    // the other writer's list may now hold the same UUID twice: that is the point
  }
  return uuid;
}

// Start together, so the two workers' allocations really interleave.
await barrier(prefix!, ".ready");
const got: string[] = [];
for (let i = 0; i < Number(count); i++) {
  const owner = `${prefix}-${i}`;
  try {
    got.push(mode === "unlocked" ? await allocateUnlocked(owner) : await pool.allocate(owner, Number(limit)));
  } catch (err) {
    got.push(isCocoonError(err) ? err.code : String(err));
  }
}
process.stdout.write(JSON.stringify(got) + "\n");
