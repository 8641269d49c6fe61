#!/usr/bin/env bash
# Installs helm from the Go module proxy (no binary download from GitHub), cached and idempotent.
#
#   scripts/install-helm.sh            # prints the path of a helm of HELM_VERSION
#   HELM=$(scripts/install-helm.sh)    # e.g. in CI; or export MOORAGE_HELM="$HELM" for the chart tests
#
# Reuses `helm` on PATH or in the cache when it is already that version; otherwise
# `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION` into $MOORAGE_BIN (~/.cache/moorage/bin).
# Needs Go (1.24+). A cold install compiles helm: a few minutes on two cores.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
BIN="${MOORAGE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/moorage/bin}"

version_of() {
  "$1" version --template '{{.Version}}' 2>/dev/null || true
}

for candidate in "$(command -v helm || true)" "$BIN/helm"; do
  if [[ -n "$candidate" && -x "$candidate" && "$(version_of "$candidate")" == "$HELM_VERSION" ]]; then
    echo "$candidate"
    exit 0
  fi
done

if ! command -v go >/dev/null; then
  echo "install-helm.sh: helm $HELM_VERSION not found and no Go toolchain to build it" >&2
  exit 1
fi

mkdir -p "$BIN"
echo "install-helm.sh: building helm $HELM_VERSION from the Go module proxy into $BIN" >&2
# -trimpath and no VCS stamping: the build does not depend on where it ran. The version string is
# set the way helm's own Makefile sets it, so `helm version` reports it.
GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" go install \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2

installed="$(version_of "$BIN/helm")"
if [[ "$installed" != "$HELM_VERSION" ]]; then
  echo "install-helm.sh: built $BIN/helm but it reports version '$installed', not $HELM_VERSION" >&2
  exit 1
fi
echo "$BIN/helm"
