#!/usr/bin/env bash
# Builds cocoon's ACRN platform-info helper (see platform-info.c) with the host's C compiler.
# Usage: build-platform-info.sh [output]   (default: <repo>/.cache/acrn/cocoon-acrn-platform-info)
# Skips the build when the output is newer than the source. Needs gcc (or $CC).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
src="$here/platform-info.c"
out="${1:-$root/.cache/acrn/cocoon-acrn-platform-info}"
cc="${CC:-gcc}"

if [ -x "$out" ] && [ "$out" -nt "$src" ]; then
  echo "ACRN platform-info helper: up to date ($out)"
  exit 0
fi
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "cannot build the ACRN platform-info helper: no C compiler ($cc); install gcc, or set max_vms in [hypervisor.acrn]" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$cc" -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror -o "$tmp" "$src"
mv -f "$tmp" "$out"
echo "ACRN platform-info helper: built $out"
