import { lstat, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { mountsUnder, unmountAllUnder } from "../../host/mount.js";
import { Jail, readPidFile } from "./jail.js";
import { jailLayout } from "./jailer.js";

describe("Jail", () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) {
      await unmountAllUnder(d, { lazy: true }).catch(() => undefined);
      await rm(d, { recursive: true, force: true });
    }
  });

  async function setup(jailed = true) {
    const dir = await mkdtemp(path.join(os.tmpdir(), "cocoon-jail-"));
    dirs.push(dir);
    const layout = jailLayout(path.join(dir, "base"), "/usr/bin/firecracker", "vm1");
    const jail = new Jail(layout, {
      jailed,
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      strategy: "auto",
    });
    const src = path.join(dir, "disk.img");
    await writeFile(src, "disk");
    return { dir, layout, jail, src };
  }

  it("hard-links, copies, and answers with the path Firecracker sees", async () => {
    const { jail, src, layout } = await setup();
    await jail.prepare();
    expect(await jail.put(src, "/drives/d.img")).toBe("/drives/d.img");
    expect((await stat(src)).nlink).toBe(2);
    expect(await jail.put(src, "/copy.img", { strategy: "copy" })).toBe("/copy.img");
    expect(await readFile(path.join(layout.root, "copy.img"), "utf8")).toBe("disk");
    expect(jail.resources().map((r) => [r.jailPath, r.method])).toEqual([
      ["/drives/d.img", "link"],
      ["/copy.img", "copy"],
    ]);
    await jail.remove("/drives/d.img");
    expect((await stat(src)).nlink).toBe(1);
    await expect(jail.put(path.join(layout.root, "missing"), "/x")).rejects.toMatchObject({
      code: "ERR_ASSET_INVALID",
    });
  });

  it("gives host paths when Firecracker runs without a jailer", async () => {
    const { jail, src, layout } = await setup(false);
    await jail.prepare();
    expect(await jail.put(src, "/rootfs")).toBe(path.join(layout.root, "rootfs"));
  });

  it.skipIf(process.getuid?.() !== 0)(
    "bind-mounts (read-only on request) and never deletes through a mount",
    async () => {
      const { jail, src, layout, dir } = await setup();
      await jail.prepare();
      await jail.put(src, "/ro.img", { strategy: "bind", readOnly: true });
      expect((await mountsUnder(dir)).map((m) => m.target)).toEqual([path.join(layout.root, "ro.img")]);
      await expect(writeFile(path.join(layout.root, "ro.img"), "x")).rejects.toThrow(/read-only/i);
      await jail.cleanup();
      await jail.cleanup();
      expect(await mountsUnder(dir)).toEqual([]);
      await expect(lstat(layout.jailDir)).rejects.toThrow();
      expect(await readFile(src, "utf8")).toBe("disk");
    },
  );

  it("removes a stale jail but refuses one whose Firecracker answers", async () => {
    const { jail, layout } = await setup();
    await mkdir(path.join(layout.root, "dev"), { recursive: true });
    await writeFile(path.join(layout.root, "dev", "kvm"), "");
    await writeFile(layout.pidFile, "999999");
    await jail.prepare();
    await expect(lstat(path.join(layout.root, "dev", "kvm"))).rejects.toThrow();
    const sock = path.join(layout.root, "api.socket");
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(sock, () => r()));
    try {
      await expect(jail.prepare({ socketPath: sock })).rejects.toMatchObject({ code: "ERR_ALREADY_EXISTS" });
    } finally {
      server.close();
    }
    await writeFile(layout.pidFile, String(process.pid));
    await expect(jail.prepare()).rejects.toThrow(
      new RegExp(`a Firecracker is running in it \\(pid ${process.pid}\\)`),
    );
    expect(await readPidFile(layout.pidFile)).toBe(process.pid);
  });
});
