#!/usr/bin/env bash
# Builds what the autoscaling tests run on the dev cluster as host processes: KEDA's operator and its
# metrics API server (github.com/kedacore/keda/v2) and Prometheus (github.com/prometheus/prometheus), each
# from its Go module as released (fetched through the Go module proxy, checked against the pinned hash),
# into a cache keyed by this script's content and the Go toolchain. The last line on stdout is the bin dir,
# holding keda-operator, keda-adapter and prometheus; KEDA's CRDs, as its release installs them, are beside it
# in keda-crd/.
#
#   tests/cluster/build-autoscaling.sh            # build if needed, print the bin dir
#   MOORAGE_CACHE_DIR=... build-autoscaling.sh    # cache root (default ~/.cache/moorage)
#   GO=/path/to/go build-autoscaling.sh           # go binary (default: go in PATH, else /usr/local/go/bin/go)
set -euo pipefail

KEDA_VERSION="v2.21.0"
KEDA_SUM="h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps="
# Prometheus's Go module numbers 3.x.y as v0.3xx.y: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_VERSION="v0.316.0"
PROMETHEUS_RELEASE="3.16.0"
PROMETHEUS_SUM="h1:f1GRFerhTMKQma+awCoC9T820ecWeGSdF+xAlMHzZzM="

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"; else GO=/usr/local/go/bin/go; fi
fi

hash="$({ cat "$here/build-autoscaling.sh"; "$GO" version; } | sha256sum | cut -c1-16)"
cache_root="${MOORAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moorage}/autoscaling"
out="$cache_root/$hash"
if [[ -f "$out/.complete" ]]; then
  echo "$out/bin"
  exit 0
fi
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [[ -f "$out/.complete" ]]; then
  echo "$out/bin"
  exit 0
fi

echo "building KEDA $KEDA_VERSION and Prometheus $PROMETHEUS_RELEASE into $out/bin (cold builds take a while)" >&2
start=$SECONDS
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/mod"
# The toolchain we have builds these; never fetch another one.
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0

# The module's source directory in the module cache, after checking its hash against the pinned one.
module_dir() {
  local module="$1" sum="$2" info field
  # `go mod download` needs a module to run in; an empty one asks for nothing else.
  printf 'module moorage.dev/autoscaling\n\ngo 1.26.0\n' > "$tmp/mod/go.mod"
  info="$(cd "$tmp/mod" && GOFLAGS=-mod=mod "$GO" mod download -json "$module")"
  field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$info" "$1"; }
  if [[ -n "$(field Error)" ]]; then
    echo "go mod download $module: $(field Error)" >&2
    return 1
  fi
  if [[ "$(field Sum)" != "$sum" ]]; then
    echo "$module: hash $(field Sum), expected $sum" >&2
    return 1
  fi
  field Dir
}

# Each is built in its own module's directory, as its release is: with its go.mod's replace directives
# (KEDA has one), which `go install module@version` refuses. The module cache is read-only, so the build
# only reads it (-mod=readonly: its go.sum is complete) and writes nothing but the binary.
build() {
  local dir="$1" package="$2" output="$3" ldflags="$4" tags="${5:-}"
  local part=$SECONDS
  (cd "$dir" && GOFLAGS=-mod=readonly "$GO" build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" \
    -o "$tmp/bin/$output" "$package") >&2
  echo "  $output built in $((SECONDS - part))s" >&2
}

keda="$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION" "$KEDA_SUM")"
keda_ldflags="-X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v}"
mkdir -p "$tmp/keda-crd"
cp "$keda"/config/crd/bases/*.yaml "$tmp/keda-crd/"
chmod u+w "$tmp/keda-crd"/*
build "$keda" ./cmd/operator keda-operator "$keda_ldflags"
build "$keda" ./cmd/adapter keda-adapter "$keda_ldflags"

prometheus="$(module_dir "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" "$PROMETHEUS_SUM")"
# Only the Kubernetes service discovery (the tests' scrape config uses no other): Prometheus's own build tags
# leave out the cloud providers' discoveries and their SDKs. Without `builtinassets` there is no web UI;
# the HTTP API that KEDA queries is all there.
build "$prometheus" ./cmd/prometheus prometheus \
  "-X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE" remove_all_sd,enable_kubernetes_sd

rm -rf "$tmp/mod"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
touch "$out/.complete"
echo "built in $((SECONDS - start))s" >&2

# Keep the two most recent builds; older ones are ~250 MB each.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -name '[0-9a-f]*' -printf '%T@ %p\n' \
  | sort -rn | tail -n +3 | cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
echo "$out/bin"
