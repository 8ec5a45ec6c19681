#!/usr/bin/env bash
# Builds cocoon's guest kernel from Debian's linux-source tarball.
#   build-kernel.sh <linux-source.tar.xz> <fragment.config> <out-dir> [jobs]
# Writes <out-dir>/vmlinux, <out-dir>/bzImage and <out-dir>/config. The output directory is
# created atomically (built in <out-dir>.partial, then renamed), so an interrupted build never
# looks finished. Progress goes to stdout as lines "step: <name>" for the caller to relay.
set -euo pipefail
tarball=$1 fragment=$2 out=$3 jobs=${4:-$(nproc)}
[ -f "$tarball" ] || { echo "error: kernel source tarball not found: $tarball" >&2; exit 2; }
[ -f "$fragment" ] || { echo "error: kernel config fragment not found: $fragment" >&2; exit 2; }
# Absolute paths: the build changes directory into the extracted source tree.
tarball=$(realpath "$tarball") fragment=$(realpath "$fragment") out=$(realpath -m "$out")
for tool in make gcc flex bison bc tar xz; do
  command -v "$tool" >/dev/null || { echo "error: missing build tool: $tool" >&2; exit 3; }
done
work="$out.partial"
rm -rf "$work"
mkdir -p "$work"
echo "step: extract"
tar -xf "$tarball" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' | head -n1)
[ -n "$src" ] || { echo "error: no linux-source-* directory inside $tarball" >&2; exit 2; }
cd "$src"
echo "step: configure"
make -s tinyconfig >/dev/null
# Strip comments so merge_config sees only options.
grep -E '^CONFIG_' "$fragment" > "$work/fragment.config"
scripts/kconfig/merge_config.sh -m .config "$work/fragment.config" >/dev/null
make -s olddefconfig >/dev/null
missing=()
while IFS= read -r line; do
  grep -qxF "$line" .config || missing+=("$line")
done < "$work/fragment.config"
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: kernel options dropped by olddefconfig (unmet dependencies):" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 4
fi
echo "step: compile"
make -s -j"$jobs" vmlinux bzImage
echo "step: install"
cp vmlinux "$work/vmlinux"
cp arch/x86/boot/bzImage "$work/bzImage"
cp .config "$work/config"
cd /
rm -rf "$src" "$work/fragment.config"
rm -rf "$out"
mv "$work" "$out"
echo "step: done"
