import type { Dirent } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { AssetCatalog, type GuestAssets } from "../../src/guest/image/catalog.js";
import { buildGuestImages } from "../../src/guest/image/build.js";
import { emptyHypervisorConfig, type HypervisorConfig } from "../../src/hypervisor/config.js";

/** The shared guest asset cache tests boot from (built once per machine). */
export const ASSETS_DIR = process.env.COCOON_ASSETS ?? "/var/lib/cocoon/assets";

let assets: Promise<GuestAssets> | undefined;
/** The current guest assets, building them first if needed (scripts/setup.sh normally did). */
export function guestAssets(): Promise<GuestAssets> {
  assets ??= (async () => {
    try {
      return await new AssetCatalog(ASSETS_DIR).resolveCurrent();
    } catch {
      return (await buildGuestImages({ assetsDir: ASSETS_DIR, onProgress: (e) => console.log(e.message) }))
        .assets;
    }
  })();
  return assets;
}

/** A short state root (unix socket paths must stay under 108 bytes). */
export async function testRoot(): Promise<{ root: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp("/tmp/cct-");
  return { root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

/** A QEMU hypervisor config booting the built assets, small enough for two VMs on 2 cores. */
export async function qemuConfig(overrides: Partial<HypervisorConfig> = {}): Promise<HypervisorConfig> {
  const a = await guestAssets();
  return {
    ...emptyHypervisorConfig(),
    hypervisorPath: "/usr/bin/qemu-system-x86_64",
    kernelPath: a.kernel,
    imagePath: a.rootfs,
    memorySize: 512,
    hypervisorMachineType: "microvm",
    sharedFS: "none",
    entropySource: "/dev/urandom",
    accelerator: "auto",
    ...overrides,
  };
}

/** Live (not zombie) processes whose command line mentions `marker` (e.g. a test's root): leaks. */
export async function processesMentioning(marker: string): Promise<{ pid: number; cmdline: string }[]> {
  const out: { pid: number; cmdline: string }[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, "utf8")).replaceAll("\0", " ").trim();
      if (!cmdline.includes(marker)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state !== "Z" && state !== "X") out.push({ pid: Number(entry), cmdline });
    } catch {
      // gone
    }
  }
  return out;
}

/** Everything under a directory, recursively (empty when it does not exist), for leak checks. */
export async function entriesUnder(dir: string): Promise<{ path: string; entry: Dirent }[]> {
  const out: { path: string; entry: Dirent }[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      out.push({ path: p, entry: e });
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}

/** Files left under a directory (recursively), for leak checks. */
export async function filesUnder(dir: string): Promise<string[]> {
  return (await entriesUnder(dir)).map((e) => e.path);
}
