import { execFileSync } from "node:child_process";
import path from "node:path";

/**
 * The CLI tests run bin/cocoon.js, which loads dist/ (its bundles when they are current): build
 * both from the current sources first, as `npm run build` does.
 */
export default function setup(): void {
  // The CLI's default network is the bridge: no test may make cocoon0 in the machine's own
  // namespace, so tests that want a network say so (test/integration/network.test.ts).
  process.env.COCOON_NETWORK ??= "none";
  const root = path.resolve(import.meta.dirname, "../..");
  execFileSync(
    process.execPath,
    [path.join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: root,
      stdio: "inherit",
    },
  );
  execFileSync(process.execPath, [path.join(root, "scripts/bundle.mjs")], { cwd: root, stdio: "inherit" });
}
