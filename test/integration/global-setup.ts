import { execFileSync } from "node:child_process";
import path from "node:path";

/** The CLI tests run bin/cocoon.js, which loads dist/: build it from the current sources first. */
export default function setup(): void {
  const root = path.resolve(import.meta.dirname, "../..");
  execFileSync(
    process.execPath,
    [path.join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: root,
      stdio: "inherit",
    },
  );
}
