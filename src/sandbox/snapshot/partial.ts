import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { lockOwnerState } from "../../store/lock.js";

/**
 * Half-made snapshots (`<name>.partial`) whose maker died: nobody alive holds `<name>.lock`.
 * Kept apart from the snapshot store so that `cocoon gc` (below the Sandbox class) can use it.
 */
export async function collectPartialSnapshots(
  root: string,
  options: { dryRun?: boolean } = {},
): Promise<string[]> {
  const found: string[] = [];
  for (const n of await readdir(root).catch(() => [] as string[])) {
    if (!n.endsWith(".partial")) continue;
    const lock = path.join(root, `${n.slice(0, -".partial".length)}.lock`);
    if ((await lockOwnerState(lock)) === "alive") continue;
    found.push(path.join(root, n));
    if (!options.dryRun) await rm(path.join(root, n), { recursive: true, force: true });
  }
  return found;
}
