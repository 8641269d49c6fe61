#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) and the real node's kubelet and kube-proxy as one
# multi-call binary, cached by a hash of the module files and our Go sources.
# The last line on stdout is the bin dir, which holds `testcluster` plus one
# symlink per component name. The real node's other programs (containerd,
# CoreDNS, pause) are separate modules under node/, built by build-node.sh.
#
#   tests/cluster/build.sh            # build if needed, print the bin dir
#   MOORAGE_CACHE_DIR=... build.sh    # cache root (default ~/.cache/moorage)
#   GO=/path/to/go build.sh           # go binary (default: go in PATH, else /usr/local/go/bin/go)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# Versions reported by the binaries; keep in step with go.mod.
KUBE_VERSION="v1.36.3"
KWOK_VERSION="0.8.0"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"; else GO=/usr/local/go/bin/go; fi
fi

components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubelet kube-proxy)

# The cache key covers everything that affects the output: module files,
# our Go sources, this script and the Go toolchain version.
hash="$(
  {
    cat go.mod go.sum build.sh
    find . -path ./node -prune -o -name '*.go' -type f -print | LC_ALL=C sort | xargs cat
    "$GO" version
  } | sha256sum | cut -c1-16
)"
cache_root="${MOORAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moorage}/testcluster"
out="$cache_root/$hash"
bin="$out/bin"

if [[ -f "$out/.complete" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
# Somebody else may have finished the build while we waited for the lock.
if [[ -f "$out/.complete" ]]; then
  echo "$bin"
  exit 0
fi

echo "building test cluster binaries into $bin (cold builds take a while)" >&2
start=$SECONDS
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

build_date="$(date -u +'%Y-%m-%dT%H:%M:%SZ')"
major="${KUBE_VERSION#v}"; major="${major%%.*}"
minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"

GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0 \
  "$GO" build -trimpath -ldflags="$ldflags" -o "$tmp/bin/testcluster" ./cmd/testcluster >&2

for c in "${components[@]}"; do
  ln -s testcluster "$tmp/bin/$c"
done

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
touch "$out/.complete"
echo "built in $((SECONDS - start))s" >&2

# Keep the three most recent builds; older ones are ~130 MB each.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -name '[0-9a-f]*' -printf '%T@ %p\n' \
  | sort -rn | tail -n +4 | cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
echo "$bin"
