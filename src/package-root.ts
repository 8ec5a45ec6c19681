/**
 * Where cocoon's own files are, wherever this code runs from: tsc's output (dist/<dir>/x.js),
 * the sources under tsx or vitest (src/<dir>/x.ts), or a bundle (dist/bundle/*.js, made by
 * scripts/bundle.mjs), where every module's import.meta.url is the bundle's. No other module
 * computes a path from its own location: they all ask here, which walks up from this module to
 * the package.json named "cocoon".
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = fileURLToPath(import.meta.url);

function findPackage(start: string): { root: string; version: string } {
  for (let dir = start; ;) {
    const file = path.join(dir, "package.json");
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: unknown; version?: unknown };
      if (pkg.name === "cocoon" && typeof pkg.version === "string")
        return { root: dir, version: pkg.version };
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cocoon: no package.json named "cocoon" in ${start} or above`);
    dir = up;
  }
}

const PACKAGE = findPackage(path.dirname(HERE));

/** The cocoon package root (the directory of its package.json). */
export const PACKAGE_ROOT = PACKAGE.root;

/**
 * cocoon's version, read from package.json at run time rather than inlined by the bundler: one
 * small read, and tsc's output, the bundles and the sources under tsx all see the same file
 * (a JSON import would need import attributes, which Node 20 still calls experimental).
 */
export const COCOON_VERSION = PACKAGE.version;

/** True when running the TypeScript sources (under tsx or vitest), not built JavaScript. */
export const FROM_SOURCE = HERE.endsWith(".ts");

/** A path inside the package. */
export function packagePath(...parts: string[]): string {
  return path.join(PACKAGE_ROOT, ...parts);
}

/** Where scripts/bundle.mjs writes the bundles (git-ignored with the rest of dist/). */
export const BUNDLE_DIR = "dist/bundle";

/**
 * The script to run for one of cocoon's programs: its bundle (dist/bundle/<bundle>.js) when
 * there is one at least as new as tsc's output for it (dist/<distEntry>), else that output. A
 * bundle older than tsc's output was left by an earlier build (`tsc` alone does not bundle): its
 * code may be stale, so it is passed over (equal times count as current: npm's tarballs give
 * every file the same one). Without a bundle (built by `tsc` alone, or esbuild missing), the
 * programs run from dist/ as before, only slower to start.
 */
export function programScript(bundle: string, distEntry: string, root = PACKAGE_ROOT): string {
  const plain = path.join(root, "dist", distEntry);
  const bundled = path.join(root, BUNDLE_DIR, `${bundle}.js`);
  try {
    if (statSync(bundled).mtimeMs >= statSync(plain).mtimeMs) return bundled;
  } catch {
    // no bundle (or no dist/ output): the plain output
  }
  return plain;
}
