// Bundles cocoon's programs into one file each (dist/bundle/<name>.js), after tsc: node then
// loads one module instead of a few hundred files of dist/ and node_modules, which took most
// of a command's start (issue 11). Part of `npm run build`; bin/cocoon.js, the monitor's and the
// refill's starters use a bundle when it is there and no older than tsc's output
// (src/package-root.ts), else dist/ as before. The library (dist/index.js) is not bundled.
//
// Plain JavaScript so that it runs without tsx. esbuild is a dependency (image builds bundle the
// guest agent with it); without it this prints why and exits 0: the programs run from dist/.
import { statSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const outdir = path.join(root, "dist/bundle");

/** name → tsc's output for it. Keep in step with programScript() callers and bin/cocoon.js. */
const ENTRIES = {
  cli: "dist/cli/main.js",
  monitor: "dist/monitor/main.js",
  refill: "dist/sandbox/factory/refill-main.js",
};

let esbuild;
try {
  esbuild = await import("esbuild");
} catch (err) {
  process.stderr.write(`bundle: esbuild is not installed (${err.message}); the programs run from dist/\n`);
  process.exit(0);
}

for (const file of Object.values(ENTRIES)) statSync(path.join(root, file)); // tsc ran first

const result = await esbuild.build({
  entryPoints: Object.fromEntries(
    Object.entries(ENTRIES).map(([name, file]) => [name, path.join(root, file)]),
  ),
  outdir,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // esbuild has a native binary and starts a service process: it stays a package, loaded only
  // when an image is built (rootfs.ts imports it there).
  external: ["esbuild"],
  // The CommonJS packages (pino, ajv, undici, commander) call require() for Node's own modules;
  // an ES module has no require, so the bundle makes one.
  banner: {
    js: 'import { createRequire as __cocoonCreateRequire } from "node:module"; const require = __cocoonCreateRequire(import.meta.url);',
  },
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
  metafile: true,
  absWorkingDir: root,
});
if (result.errors.length > 0) process.exit(1);
for (const [file, out] of Object.entries(result.metafile.outputs)) {
  if (file.endsWith(".js")) {
    process.stdout.write(`bundle: ${file} (${Math.round(out.bytes / 1024)} KiB)\n`);
  }
}
