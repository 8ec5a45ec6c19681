#!/usr/bin/env node
// cocoon's runc-compatible OCI runtime (podman --runtime, docker's runtimes); the code is in dist/oci/.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/oci/main.js", import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write("cocoon-runtime: not built yet: run `npm run build` in the cocoon checkout\n");
  process.exit(1);
}
const { main } = await import(entry.href);
const code = await main(process.argv, fileURLToPath(import.meta.url));
process.exitCode = code;
// A relay's streams may keep the loop alive after its process ended: exit once output is flushed.
process.stdout.write("", () => process.exit(code));
