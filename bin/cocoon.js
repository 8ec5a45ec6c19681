#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, which `npm install` runs).
// It runs the CLI's bundle, dist/bundle/cli.js (one file: quicker to load), when the build made
// one no older than tsc's dist/cli/main.js, else dist/cli/main.js (see src/package-root.ts).
import { statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const plain = new URL("../dist/cli/main.js", import.meta.url);
const bundled = new URL("../dist/bundle/cli.js", import.meta.url);
const mtime = (url) => statSync(fileURLToPath(url), { throwIfNoEntry: false })?.mtimeMs;
const plainTime = mtime(plain);
if (plainTime === undefined) {
  process.stderr.write(
    "cocoon: not built yet: run `npm install` (or `npm run build`) in the cocoon checkout\n",
  );
  process.exit(1);
}
const entry = (mtime(bundled) ?? -1) >= plainTime ? bundled : plain;
const { main } = await import(entry.href);
await main(process.argv);
// A command is done when main returns: do not wait for sockets a library user might keep.
// (stdout and stderr are synchronous for files, pipes and terminals on Linux: nothing is lost.)
process.exit(process.exitCode ?? 0);
