import { AssetCatalog, type GuestAssets } from "./catalog.js";
import type { ProgressSink } from "./common.js";
import { buildKernel, type BuiltAsset } from "./kernel.js";
import { buildRootfs } from "./rootfs.js";

export interface ImageBuildOptions {
  assetsDir: string;
  onProgress?: ProgressSink;
  force?: boolean;
  jobs?: number;
  kernelSource?: string;
}

export interface ImageBuildResult {
  kernel: BuiltAsset;
  rootfs: BuiltAsset;
  assets: GuestAssets;
}

/**
 * Builds (or finds in the cache) the guest kernel and rootfs, then makes them the current
 * assets. Serialised by a lock, so two builds on one machine never race.
 */
export async function buildGuestImages(options: ImageBuildOptions): Promise<ImageBuildResult> {
  const catalog = new AssetCatalog(options.assetsDir);
  return catalog.withBuildLock(async () => {
    const kernel = await buildKernel({
      catalog,
      onProgress: options.onProgress,
      force: options.force,
      jobs: options.jobs,
      source: options.kernelSource,
    });
    const rootfs = await buildRootfs({ catalog, onProgress: options.onProgress, force: options.force });
    const current = await catalog.current().catch(() => undefined);
    if (current?.kernel !== kernel.key || current.rootfs !== rootfs.key) {
      await catalog.setCurrent({ kernel: kernel.key, rootfs: rootfs.key });
    }
    return { kernel, rootfs, assets: await catalog.resolveCurrent() };
  });
}
