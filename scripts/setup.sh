#!/usr/bin/env bash
# Sets up a machine for cocoon: Debian packages, npm dependencies, the build, and the guest
# kernel and rootfs. Safe to run again: each step is skipped
# when already done. Needs root for apt-get (it uses sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Debian packages: QEMU and virtiofsd, the kernel source and its build tools, the guest's
# userland (busybox, runc, socat), image tools, and iproute2 for network namespaces.
# Networking (docs/network.md): the CNI plugins (bridge, host-local, portmap), iptables for
# their NAT rules, nftables for egress policies; dnsmasq-base for the network tests' DNS server.
PACKAGES=(
  qemu-system-x86 qemu-utils
  linux-source-6.1 make gcc libc6-dev flex bison bc libelf-dev libssl-dev xz-utils cpio kmod
  busybox-static runc socat e2fsprogs erofs-utils util-linux iproute2
  containernetworking-plugins iptables nftables dnsmasq-base
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "Debian packages: all present"
fi

# containerd shim v2 (issue 10): Debian's containerd (its tests start a private one), protoc and
# containerd's .proto files (src/gen/shim is generated from them; a unit test checks for drift).
SHIM_PACKAGES=(containerd protobuf-compiler golang-github-containerd-containerd-dev)
shim_missing=()
for p in "${SHIM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || shim_missing+=("$p")
done
if [ ${#shim_missing[@]} -gt 0 ]; then
  say "installing Debian packages for the containerd shim: ${shim_missing[*]}"
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  ${SUDO:-} apt-get install -y -qq --no-install-recommends "${shim_missing[@]}" ||
    { ${SUDO:-} apt-get update -qq && ${SUDO:-} apt-get install -y -qq --no-install-recommends "${shim_missing[@]}"; }
fi

# cocoon-runtime (issue 16): Debian's podman 4.3 and conmon (its tests run podman with
# --runtime cocoon-runtime), and gcc for the console helper.
OCI_PACKAGES=(podman conmon gcc)
oci_missing=()
for p in "${OCI_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || oci_missing+=("$p")
done
if [ ${#oci_missing[@]} -gt 0 ]; then
  say "installing Debian packages for cocoon-runtime: ${oci_missing[*]}"
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  ${SUDO:-} apt-get install -y -qq --no-install-recommends "${oci_missing[@]}" ||
    { ${SUDO:-} apt-get update -qq && ${SUDO:-} apt-get install -y -qq --no-install-recommends "${oci_missing[@]}"; }
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "cocoon needs Node.js 20 or newer (found $(node --version))" >&2
  exit 1
fi

# npm dependencies: reinstall when the lock file is newer than the installed tree.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --ignore-scripts
else
  say "npm dependencies: up to date"
fi

say "building cocoon"
npm run --silent build
# The shim binary on PATH, where containerd looks for runtime io.containerd.cocoon.v1 (issue 10).
if [ -w /usr/local/bin ]; then
  ln -sfn "$(pwd)/bin/containerd-shim-cocoon-v1.js" /usr/local/bin/containerd-shim-cocoon-v1
fi
# cocoon-runtime on PATH (podman --runtime "$(command -v cocoon-runtime)", docker's runtimes), and
# its console helper (a pty and SCM_RIGHTS, which Node cannot do).
if [ -w /usr/local/bin ]; then
  ln -sfn "$(pwd)/bin/cocoon-runtime.js" /usr/local/bin/cocoon-runtime
fi
bash src/oci/console/build.sh
# ACRN's platform-info helper (an ioctl Node cannot issue); only used on ACRN hosts.
bash src/vmm/acrn/build-platform-info.sh

# Guest kernel and rootfs: cached by content under the assets directory, so this is a
# no-op in seconds once built (the first kernel build takes about 8 minutes on 2 cores).
say "building guest assets (kernel, rootfs)"
node bin/cocoon.js image build
