#!/usr/bin/env node
// containerd's runtime-v2 shim for cocoon (runtime io.containerd.cocoon.v1); the code is in dist/shim/.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/shim/main.js", import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write(
    "containerd-shim-cocoon-v1: not built yet: run `npm run build` in the cocoon checkout\n",
  );
  process.exit(1);
}
const { main } = await import(entry.href);
const code = await main(process.argv, fileURLToPath(import.meta.url));
if (code >= 0) process.exit(code);
