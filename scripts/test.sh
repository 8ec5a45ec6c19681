#!/usr/bin/env bash
# The whole test suite: sets up what it needs (scripts/setup.sh), then runs the unit and
# integration tests (integration tests boot real QEMU VMs under TCG), then the chaos suite's short
# form (test/chaos/; it prints its own "N passed, N failed"). Ends with one summary
# line "tests: N passed, N failed, N skipped" and a non-zero status when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> static checks (types, lint, formatting, generated files)"
npx tsc -p tsconfig.json --noEmit
npx eslint .
npx prettier --check . >/dev/null || { npx prettier --check .; exit 1; }
node --import tsx scripts/gen-error-docs.ts --check
npm run --silent gen:firecracker -- --check
echo "==> tests (unit, contract, integration on real QEMU VMs)"
report=$(mktemp /tmp/cocoon-vitest-XXXXXX.json)
chaos_log=$(mktemp /tmp/cocoon-chaos-XXXXXX.log)
trap 'rm -f "$report" "$chaos_log"' EXIT
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
if [ $# -eq 0 ]; then
  echo "==> chaos suite, short form (faults injected into real QEMU VMs; npm run chaos is the long form)"
  npm run --silent chaos -- --short --no-build 2>&1 | tee "$chaos_log" || status=1
fi
# One closing line for everything: vitest's counts plus each chaos fault as one test.
node -e '
  const fs = require("fs");
  const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  const chaos = /^(\d+) passed, (\d+) failed$/m.exec(fs.readFileSync(process.argv[2], "utf8").split("\n").reverse().join("\n"));
  const passed = r.numPassedTests + (chaos ? Number(chaos[1]) : 0);
  const failed = r.numFailedTests + (chaos ? Number(chaos[2]) : 0);
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
  if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
' "$report" "$chaos_log" || status=1
exit $status
