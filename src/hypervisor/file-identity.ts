import { stat } from "node:fs/promises";
import { HypervisorError } from "../errors.js";

/**
 * Identity of a file without reading it (path, size, mtime, inode): a changed or replaced file
 * changes it. Templates and snapshots hash it into their keys.
 */
export async function fileIdentity(file: string): Promise<string> {
  const st = await stat(file).catch(() => undefined);
  if (!st)
    throw new HypervisorError("ERR_ASSET_INVALID", `${file} does not exist`, { details: { path: file } });
  return `${file}:${st.size}:${st.mtimeMs}:${st.ino}`;
}
