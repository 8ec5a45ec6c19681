#!/usr/bin/env bash
# Generates the protobuf code the containerd shim uses (src/gen/shim/) from the .proto files Debian's
# golang-github-containerd-containerd-dev package ships, plus cocoon's transcribed ttrpc envelope.
# Output is committed; src/shim/gen.test.ts regenerates into a temp dir and fails on drift.
# Usage: scripts/gen-shim-proto.sh [out-dir]   (needs protobuf-compiler and the -dev package)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/src/gen/shim}
go=/usr/share/gocode/src
ctd=github.com/containerd/containerd
for f in "$go/$ctd/runtime/v2/task/shim.proto" "$go/github.com/gogo/protobuf/gogoproto/gogo.proto"; do
  [[ -f $f ]] || { echo "missing $f: apt-get install golang-github-containerd-containerd-dev" >&2; exit 1; }
done
command -v protoc >/dev/null || { echo "missing protoc: apt-get install protobuf-compiler" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
protoc --plugin=protoc-gen-es="$here/node_modules/.bin/protoc-gen-es" \
  --es_out="$out" --es_opt=target=ts,import_extension=js \
  -I "$here/src/shim/proto" -I "$go" -I "$go/github.com/gogo/protobuf" -I /usr/include \
  ttrpc.proto runtime_info.proto \
  "$ctd/runtime/v2/task/shim.proto" \
  "$ctd/api/types/mount.proto" \
  "$ctd/api/types/task/task.proto" \
  "$ctd/api/events/task.proto" \
  "$ctd/api/services/ttrpc/events/v1/events.proto" \
  "$ctd/protobuf/plugin/fieldpath.proto" \
  github.com/containerd/cgroups/v2/stats/metrics.proto \
  gogoproto/gogo.proto
