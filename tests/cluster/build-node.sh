#!/usr/bin/env bash
# Builds what the dev cluster's real node runs besides kubelet and kube-proxy
# (those are subcommands of build.sh's multi-call binary): containerd v2 with
# its runc shim and ctr, a CoreDNS with only the plugins the cluster needs
# (node/dns), and the static programs of the node's own images (node/images:
# pause, probe). Each part is cached under ~/.cache/moorage/node by a hash of
# its inputs. Also installs, once, the Debian packages the node needs.
#
# The last line on stdout is a bin dir holding every program by name.
#
#   tests/cluster/build-node.sh           # build if needed, print the bin dir
#   MOORAGE_CACHE_DIR=... build-node.sh   # cache root (default ~/.cache/moorage)
#   GO=/path/to/go build-node.sh          # go binary (default: go in PATH, else /usr/local/go/bin/go)
#   MOORAGE_NODE_NO_APT=1 build-node.sh   # leave the Debian packages alone
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

CONTAINERD_VERSION="v2.2.9"
# runc: the OCI runtime; containernetworking-plugins: bridge, host-local, loopback,
# portmap; iptables and conntrack: kube-proxy's iptables mode.
APT_PACKAGES=(runc containernetworking-plugins iptables conntrack)

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"; else GO=/usr/local/go/bin/go; fi
fi
go_version="$("$GO" version)"
cache_root="${MOORAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moorage}/node"
mkdir -p "$cache_root"

missing=()
if [[ -z "${MOORAGE_NODE_NO_APT:-}" ]]; then
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
  done
fi
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "build-node.sh: the real node needs ${missing[*]} (apt-get install as root)" >&2
    exit 1
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

exec 9>"$cache_root/.lock"
flock 9

# part NAME KEY BUILD_FUNCTION: run BUILD_FUNCTION into a temp dir unless
# $cache_root/NAME-KEY is complete; sets $part_dir to the cached dir.
part() {
  local name="$1" key="$2" fn="$3"
  part_dir="$cache_root/$name-$key"
  if [[ -f "$part_dir/.complete" ]]; then
    touch "$part_dir"  # recently used: kept by the pruning below
    return 0
  fi
  echo "building $name into $part_dir" >&2
  local start=$SECONDS tmp
  tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
  mkdir -p "$tmp/bin"
  if ! "$fn" "$tmp/bin"; then
    rm -rf "$tmp"
    echo "build-node.sh: building $name failed" >&2
    exit 1
  fi
  rm -rf "$part_dir"
  mv "$tmp" "$part_dir"
  touch "$part_dir/.complete"
  echo "built $name in $((SECONDS - start))s" >&2
}

build_containerd() {
  local pkg=github.com/containerd/containerd/v2
  GOFLAGS= GOBIN="$1" CGO_ENABLED=0 "$GO" install -trimpath -tags no_btrfs,no_devmapper,no_zfs \
    -ldflags "-s -w -X $pkg/version.Version=$CONTAINERD_VERSION" \
    "$pkg/cmd/containerd@$CONTAINERD_VERSION" \
    "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$pkg/cmd/ctr@$CONTAINERD_VERSION" >&2
}

build_dns() {
  (cd node/dns && GOFLAGS=-mod=mod CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$1/coredns" .) >&2
}

build_images() {
  (cd node/images && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$1/" ./cmd/...) >&2
}

# key FUNCTION [DIR]: a hash of how a part is built (the function's text, Go's
# version) and of what from (DIR's files).
key() {
  { declare -f "$1"; echo "$go_version"; [[ -z "${2:-}" ]] || find "$2" -type f | LC_ALL=C sort | xargs cat; } \
    | sha256sum | cut -c1-16
}

part containerd "$CONTAINERD_VERSION-$(key build_containerd)" build_containerd
containerd_dir="$part_dir"
part coredns "$(key build_dns node/dns)" build_dns
dns_dir="$part_dir"
part images "$(key build_images node/images)" build_images
images_dir="$part_dir"

# One bin dir per combination of parts, made of symlinks.
combined="$cache_root/bin-$(echo "$containerd_dir $dns_dir $images_dir" | sha256sum | cut -c1-16)"
if [[ -f "$combined/.complete" ]]; then
  touch "$combined"
else
  rm -rf "$combined"
  mkdir -p "$combined"
  for dir in "$containerd_dir" "$dns_dir" "$images_dir"; do
    for prog in "$dir"/bin/*; do ln -s "$prog" "$combined/$(basename "$prog")"; done
  done
  touch "$combined/.complete"
fi

# Keep the two most recent builds of each part.
for name in containerd coredns images bin; do
  find "$cache_root" -mindepth 1 -maxdepth 1 -type d -name "$name-*" -printf '%T@ %p\n' \
    | sort -rn | tail -n +3 | cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
done
echo "$combined"
