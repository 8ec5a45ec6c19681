#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, which `npm install` runs).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write(
    "cocoon: not built yet: run `npm install` (or `npm run build`) in the cocoon checkout\n",
  );
  process.exit(1);
}
const { main } = await import(entry.href);
await main(process.argv);
// A command is done when main returns: do not wait for sockets a library user might keep.
// (stdout and stderr are synchronous for files, pipes and terminals on Linux: nothing is lost.)
process.exit(process.exitCode ?? 0);
