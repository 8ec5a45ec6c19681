#!/usr/bin/env bash
# Builds cocoon-runtime's console helper (see cocoon-console.c) with the host's C compiler.
# Usage: build.sh [output]   (default: <repo>/.cache/oci/cocoon-console)
# Skips the build when the output is newer than the source. Needs gcc (or $CC).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
src="$here/cocoon-console.c"
out="${1:-$root/.cache/oci/cocoon-console}"
cc="${CC:-gcc}"

if [ -x "$out" ] && [ "$out" -nt "$src" ]; then
  echo "cocoon-runtime console helper: up to date ($out)"
  exit 0
fi
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "cannot build cocoon-runtime's console helper: no C compiler ($cc); install gcc (only terminals need it)" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$cc" -std=c99 -O2 -Wall -Wextra -Werror -o "$tmp" "$src"
mv -f "$tmp" "$out"
echo "cocoon-runtime console helper: built $out"
