import { mkdir, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ConfigError, errnoCode } from "../../errors.js";
import { readDocument, writeDocument, type DocumentKind } from "../../store/atomic.js";
import { withLock } from "../../store/lock.js";

/**
 * The guest asset cache: `<assets>/<kind>/<key>/` holds one built asset and its manifest, keyed
 * by a hash of everything it was built from, so each is built once per machine. `current.json`
 * names the kernel and rootfs sandboxes boot from (written by `cocoon image build`).
 */

export const ASSET_KINDS = ["kernel", "rootfs"] as const;
export type AssetKind = (typeof ASSET_KINDS)[number];

const manifestSchema = z.object({
  kind: z.enum(ASSET_KINDS),
  key: z.string(),
  createdAt: z.string(),
  /** What the key was computed from, for `image ls` and debugging. */
  inputs: z.record(z.string(), z.unknown()),
  files: z.record(z.string(), z.object({ size: z.number(), sha256: z.string() })),
  buildSeconds: z.number(),
});
export type AssetManifest = z.infer<typeof manifestSchema>;
const manifestKind: DocumentKind<AssetManifest> = {
  schema: "cocoon.asset",
  version: 1,
  data: manifestSchema,
};

const currentSchema = z.object({ kernel: z.string(), rootfs: z.string() });
export type CurrentAssets = z.infer<typeof currentSchema>;
const currentKind: DocumentKind<CurrentAssets> = {
  schema: "cocoon.assets.current",
  version: 1,
  data: currentSchema,
};

/** Paths sandboxes boot from. */
export interface GuestAssets {
  kernel: string;
  /** ELF kernel for PVH boot and Firecracker. */
  vmlinux: string;
  rootfs: string;
  kernelKey: string;
  rootfsKey: string;
}

export class AssetCatalog {
  constructor(readonly dir: string) {}

  assetDir(kind: AssetKind, key: string): string {
    return path.join(this.dir, kind, key);
  }

  /** Held while building, so two builds never write the same asset. */
  withBuildLock<T>(fn: () => Promise<T>): Promise<T> {
    return withLock(path.join(this.dir, ".build.lock"), fn, {
      timeoutMs: 60 * 60_000,
      purpose: "image build",
    });
  }

  async manifest(kind: AssetKind, key: string): Promise<AssetManifest | undefined> {
    return (await readDocument(path.join(this.assetDir(kind, key), "manifest.json"), manifestKind))?.data;
  }

  /** True when the asset exists with all the files its manifest lists. */
  async has(kind: AssetKind, key: string): Promise<boolean> {
    const m = await this.manifest(kind, key).catch(() => undefined);
    if (!m) return false;
    for (const [name, info] of Object.entries(m.files)) {
      try {
        if ((await stat(path.join(this.assetDir(kind, key), name))).size !== info.size) return false;
      } catch {
        return false;
      }
    }
    return true;
  }

  async writeManifest(manifest: AssetManifest): Promise<void> {
    await mkdir(this.assetDir(manifest.kind, manifest.key), { recursive: true });
    await writeDocument(
      path.join(this.assetDir(manifest.kind, manifest.key), "manifest.json"),
      manifestKind,
      manifest,
    );
  }

  async list(): Promise<AssetManifest[]> {
    const out: AssetManifest[] = [];
    for (const kind of ASSET_KINDS) {
      let keys: string[] = [];
      try {
        keys = await readdir(path.join(this.dir, kind));
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err;
      }
      for (const key of keys.sort()) {
        const m = await this.manifest(kind, key).catch(() => undefined);
        if (m) out.push(m);
      }
    }
    return out;
  }

  async current(): Promise<CurrentAssets | undefined> {
    return (await readDocument(path.join(this.dir, "current.json"), currentKind))?.data;
  }

  async setCurrent(current: CurrentAssets): Promise<void> {
    await writeDocument(path.join(this.dir, "current.json"), currentKind, current);
  }

  /** Removes one asset; refuses the current ones unless `force`. */
  async remove(kind: AssetKind, key: string, force = false): Promise<void> {
    const cur = await this.current().catch(() => undefined);
    if (!force && cur && cur[kind] === key) {
      throw new ConfigError(
        "ERR_INVALID_ARGUMENT",
        `${kind} ${key} is the current guest ${kind}; use --force to remove it`,
      );
    }
    await rm(this.assetDir(kind, key), { recursive: true, force: true });
  }

  /** The current kernel and rootfs, checked to exist. */
  async resolveCurrent(): Promise<GuestAssets> {
    const cur = await this.current();
    if (!cur) {
      throw new ConfigError("ERR_ASSET_INVALID", `no guest assets in ${this.dir}`, {
        hint: "build them with `cocoon image build` (or scripts/setup.sh), or set kernel and image in the configuration",
      });
    }
    for (const kind of ASSET_KINDS) {
      if (!(await this.has(kind, cur[kind]))) {
        throw new ConfigError(
          "ERR_ASSET_INVALID",
          `the current guest ${kind} (${cur[kind]}) is missing from ${this.dir}`,
          {
            hint: "rebuild it with `cocoon image build`",
          },
        );
      }
    }
    return {
      kernel: path.join(this.assetDir("kernel", cur.kernel), "bzImage"),
      vmlinux: path.join(this.assetDir("kernel", cur.kernel), "vmlinux"),
      rootfs: path.join(this.assetDir("rootfs", cur.rootfs), "rootfs.ext4"),
      kernelKey: cur.kernel,
      rootfsKey: cur.rootfs,
    };
  }
}
