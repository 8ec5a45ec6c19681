import { readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { HostError } from "../../errors.js";
import { ManagedProcess, describeExit } from "../../host/process.js";
import { runCommand } from "../../host/process.js";
import type { AssetCatalog } from "./catalog.js";
import {
  assetKey,
  checkRequirements,
  PACKAGE_ROOT,
  sha256,
  sha256File,
  type ProgressSink,
} from "./common.js";

export const KERNEL_FRAGMENT = path.join(PACKAGE_ROOT, "src/guest/kernel/cocoon-guest.config");
export const KERNEL_SCRIPT = path.join(PACKAGE_ROOT, "scripts/build-kernel.sh");
export const DEFAULT_KERNEL_SOURCE = "/usr/src/linux-source-6.1.tar.xz";
const KERNEL_SOURCE_PACKAGE = "linux-source-6.1";

export interface KernelBuildOptions {
  catalog: AssetCatalog;
  source?: string;
  jobs?: number;
  onProgress?: ProgressSink;
  /** Rebuild even when the cached asset exists. */
  force?: boolean;
}

export interface BuiltAsset {
  key: string;
  dir: string;
  /** False when it came from the cache. */
  built: boolean;
}

/** Identifies the kernel source without hashing the 130 MB tarball: the Debian package version. */
async function sourceIdentity(source: string): Promise<Record<string, unknown>> {
  const st = await stat(source).catch(() => undefined);
  if (!st) {
    throw new HostError("ERR_HOST_MISSING_TOOL", `the kernel source ${source} is missing`, {
      hint: `install it with: apt-get install ${KERNEL_SOURCE_PACKAGE}   (or run scripts/setup.sh)`,
    });
  }
  const dpkg = await runCommand("dpkg-query", ["-W", "-f=${Version}", KERNEL_SOURCE_PACKAGE]).catch(
    () => undefined,
  );
  const version = dpkg && dpkg.code === 0 ? dpkg.stdout.trim() : undefined;
  return version
    ? { package: KERNEL_SOURCE_PACKAGE, version }
    : { file: path.basename(source), size: st.size, mtime: st.mtimeMs };
}

/** The cache key: the config fragment, the build script and the source version. */
export async function kernelInputs(source = DEFAULT_KERNEL_SOURCE): Promise<Record<string, unknown>> {
  return {
    builder: 1,
    fragment: sha256(await readFile(KERNEL_FRAGMENT)),
    script: sha256(await readFile(KERNEL_SCRIPT)),
    source: await sourceIdentity(source),
  };
}

export async function buildKernel(options: KernelBuildOptions): Promise<BuiltAsset> {
  const progress = options.onProgress ?? (() => undefined);
  const source = options.source ?? DEFAULT_KERNEL_SOURCE;
  const inputs = await kernelInputs(source);
  const key = assetKey(inputs);
  const { catalog } = options;
  const dir = catalog.assetDir("kernel", key);
  if (!options.force && (await catalog.has("kernel", key))) {
    progress({ asset: "kernel", step: "cached", message: `kernel ${key} is already built` });
    return { key, dir, built: false };
  }
  await checkRequirements("guest kernel", [
    { program: "make", debianPackage: "make" },
    { program: "gcc", debianPackage: "gcc" },
    { program: "flex", debianPackage: "flex" },
    { program: "bison", debianPackage: "bison" },
    { program: "bc", debianPackage: "bc" },
    { program: "xz", debianPackage: "xz-utils" },
    { program: "tar", debianPackage: "tar" },
    { program: "/usr/include/libelf.h", debianPackage: "libelf-dev" },
    { program: "/usr/include/openssl/ssl.h", debianPackage: "libssl-dev" },
  ]);
  const jobs = options.jobs ?? os.cpus().length;
  const started = Date.now();
  progress({
    asset: "kernel",
    step: "start",
    message: `building kernel ${key} with ${jobs} jobs (about 8 minutes on 2 cores)`,
  });
  const proc = await ManagedProcess.spawn(
    "bash",
    [KERNEL_SCRIPT, source, KERNEL_FRAGMENT, dir, String(jobs)],
    {
      stdout: "pipe",
      stderr: "pipe",
      tailBytes: 64 * 1024,
    },
  );
  // The script prints "step: <name>"; relay each, plus a heartbeat during the long compile.
  let step = "start";
  const lines = createInterface({ input: proc.stdoutStream! });
  lines.on("line", (line) => {
    const m = /^step: (\S+)/.exec(line);
    if (m) {
      step = m[1]!;
      progress({ asset: "kernel", step, message: `kernel: ${step}` });
    }
  });
  const heartbeat = setInterval(() => {
    const s = Math.round((Date.now() - started) / 1000);
    progress({
      asset: "kernel",
      step,
      message: `kernel: ${step} (${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s elapsed)`,
    });
  }, 30_000);
  const status = await proc.exited.finally(() => clearInterval(heartbeat));
  await proc.closed;
  if (status.code !== 0) {
    await rm(`${dir}.partial`, { recursive: true, force: true });
    const tail = proc.stderrTail().trim().split("\n").slice(-15).join("\n");
    throw new HostError(
      "ERR_IMAGE_BUILD",
      `the kernel build ${describeExit(status)} during "${step}":\n${tail}`,
      {
        details: { step, code: status.code },
      },
    );
  }
  const files: Record<string, { size: number; sha256: string }> = {};
  for (const name of ["vmlinux", "bzImage", "config"]) {
    const file = path.join(dir, name);
    files[name] = { size: (await stat(file)).size, sha256: await sha256File(file) };
  }
  const buildSeconds = Math.round((Date.now() - started) / 1000);
  await catalog.writeManifest({
    kind: "kernel",
    key,
    createdAt: new Date().toISOString(),
    inputs,
    files,
    buildSeconds,
  });
  progress({ asset: "kernel", step: "done", message: `kernel ${key} built in ${buildSeconds}s` });
  return { key, dir, built: true };
}
