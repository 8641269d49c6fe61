#!/usr/bin/env bash
# Fetches the Gateway API CRDs (standard channel) from the sigs.k8s.io/gateway-api Go module, through the
# Go module proxy and checked against the module's pinned hash, into a cache keyed by this script's
# content. The last line on stdout is the directory holding the CRD YAML files.
#
#   tests/cluster/gateway-api.sh            # fetch if needed, print the CRD dir
#   MOORAGE_CACHE_DIR=... gateway-api.sh    # cache root (default ~/.cache/moorage)
#   GO=/path/to/go gateway-api.sh           # go binary (default: go in PATH, else /usr/local/go/bin/go)
set -euo pipefail

# v1.7.0 needs Go 1.27 to be downloaded by `go mod download`; v1.6.3 is the newest this toolchain takes.
VERSION="v1.6.3"
SUM="h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc="

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"; else GO=/usr/local/go/bin/go; fi
fi

hash="$(sha256sum "$here/gateway-api.sh" | cut -c1-16)"
cache_root="${MOORAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moorage}/gateway-api"
out="$cache_root/$hash"
if [[ -f "$out/.complete" ]]; then
  echo "$out/crd"
  exit 0
fi
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [[ -f "$out/.complete" ]]; then
  echo "$out/crd"
  exit 0
fi

tmp="$(mktemp -d "$cache_root/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# `go mod download` needs a module to run in; an empty one asks for nothing else.
printf 'module moorage.dev/gatewayapi\n\ngo 1.26.0\n' > "$tmp/go.mod"
info="$(cd "$tmp" && GOFLAGS=-mod=mod "$GO" mod download -json "sigs.k8s.io/gateway-api@$VERSION")"
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$info" "$1"; }
if [[ -n "$(field Error)" ]]; then
  echo "go mod download sigs.k8s.io/gateway-api@$VERSION: $(field Error)" >&2
  exit 1
fi
if [[ "$(field Sum)" != "$SUM" ]]; then
  echo "sigs.k8s.io/gateway-api@$VERSION: hash $(field Sum), expected $SUM" >&2
  exit 1
fi
mkdir -p "$tmp/out/crd"
cp "$(field Dir)"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$tmp/out/crd/"
chmod u+w "$tmp/out/crd"/*
rm -rf "$out"
mv "$tmp/out" "$out"
touch "$out/.complete"
echo "$out/crd"
