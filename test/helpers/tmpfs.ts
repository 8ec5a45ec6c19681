import { execFileSync } from "node:child_process";
import { mkdtemp, open, rm, statfs } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { errnoCode } from "../../src/errors.js";

/** A tiny tmpfs mounted for a test (needs root), to fill up on purpose. */
export interface TinyTmpfs {
  dir: string;
  /** Writes a filler file until the filesystem is full (ENOSPC), or only `leaveKiB` is free. */
  fill(leaveKiB?: number): Promise<void>;
  /** Removes the filler: the filesystem has room again. */
  unfill(): Promise<void>;
  /** Unmounts and removes the mount point. */
  cleanup(): Promise<void>;
}

export async function tinyTmpfs(sizeKiB: number, parent = os.tmpdir()): Promise<TinyTmpfs> {
  const dir = await mkdtemp(path.join(parent, "cocoon-tmpfs-"));
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeKiB}k,mode=0700`, "tmpfs", dir]);
  const filler = path.join(dir, ".filler");
  return {
    dir,
    async fill(leaveKiB = 0) {
      const fh = await open(filler, "a");
      try {
        const chunk = Buffer.alloc(4096, 1);
        for (;;) {
          const st = await statfs(dir);
          if (leaveKiB > 0 && st.bavail * st.bsize <= leaveKiB * 1024) return;
          await fh.write(chunk);
        }
      } catch (err) {
        if (errnoCode(err) !== "ENOSPC") throw err;
      } finally {
        await fh.close();
      }
    },
    async unfill() {
      await rm(filler, { force: true });
    },
    async cleanup() {
      execFileSync("umount", ["-l", dir]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
