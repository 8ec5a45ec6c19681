import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { bindMount, mountOf, mountsUnder, parseMountInfo, unmount, unmountAllUnder } from "./mount.js";

const SAMPLE = [
  "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw",
  "30 22 0:25 / /run rw,nosuid,nodev,noexec shared:5 - tmpfs tmpfs rw",
  "41 22 8:1 /data/x\\040y /var/lib/jail/root/rootfs ro,relatime master:1 - ext4 /dev/vda rw",
].join("\n");

describe("mountinfo", () => {
  it("parses entries, escapes and propagation", () => {
    const m = parseMountInfo(SAMPLE);
    expect(m).toHaveLength(3);
    expect(m[2]).toMatchObject({
      root: "/data/x y",
      target: "/var/lib/jail/root/rootfs",
      options: ["ro", "relatime"],
      propagation: ["master:1"],
      fsType: "ext4",
    });
    expect(m[1]!.options).toContain("noexec");
  });
});

describe("bind mounts", () => {
  it.skipIf(process.getuid?.() !== 0)(
    "binds a file read-only with slave propagation, lists and unmounts it",
    async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), "cocoon-mount-"));
      try {
        const src = path.join(dir, "src.img");
        const dst = path.join(dir, "jail", "dst.img");
        await writeFile(src, "data");
        await import("node:fs/promises").then((fs) => fs.mkdir(path.dirname(dst)));
        await writeFile(dst, "");
        await bindMount(src, dst, { readOnly: true });
        expect(await readFile(dst, "utf8")).toBe("data");
        await expect(writeFile(dst, "x")).rejects.toThrow(/read-only/i);
        const under = await mountsUnder(dir);
        expect(under.map((m) => m.target)).toEqual([dst]);
        expect(under[0]!.options).toContain("ro");
        expect((await mountOf(dst))?.target).toBe(dst);
        await unmount(dst);
        expect(await mountsUnder(dir)).toEqual([]);
        await bindMount(src, dst);
        expect(await unmountAllUnder(dir)).toEqual([dst]);
        expect(await readFile(src, "utf8")).toBe("data");
      } finally {
        await unmountAllUnder(dir, { lazy: true }).catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
