#!/usr/bin/env bash
# Everything a fresh machine needs to develop, demo and test moorage. Idempotent; warm runs take seconds.
#
#   Python venv with the package, dev tools and the fine-tune stack   (.venv → a cached venv)
#   the local Kubernetes control plane, built from Go modules         (tests/cluster/build.sh)
#   the Gateway API CRDs for the gateway tests, from their Go module   (tests/cluster/gateway-api.sh)
#   helm, built from its Go module                                    (scripts/install-helm.sh)
#   KEDA and Prometheus, built from their Go modules                   (tests/cluster/build-autoscaling.sh)
#   a venv with the pinned vLLM, whose own parser checks our flags    (tests/contract/setup_vllm.sh)
#   as root on Linux: the real node (containerd, CoreDNS)               (tests/cluster/build-node.sh)
#                     and our images, built with buildah               (images/build.sh → .work/images.txt)
#
# Caches live under ~/.cache/moorage (and Go's own caches), so a new clone on the same machine is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/moorage"
python="${PYTHON:-python3}"
step() { printf '\n== %s\n' "$*" >&2; }
# Go's official tarball lives here when it is not on PATH.
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

step "Python environment"
if [[ ! -e .venv ]]; then
  key="$({ "$python" --version; cat pyproject.toml; } | sha256sum | cut -c1-12)"
  venv="$cache/venvs/$key"
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  ln -s "$venv" .venv
fi
# The venv is shared by every checkout: pip runs as its real path, so the scripts it writes (mypy,
# pytest, moorage...) do not name this checkout's .venv in their #! line, which dies with the checkout;
# scripts an earlier pip wrote that way are pointed back at the venv itself.
venv_python="$(cd .venv && pwd -P)/bin/python"
for script in .venv/bin/*; do
  head -c 2 "$script" 2>/dev/null | grep -q '^#!' || continue
  first="$(head -n 1 "$script")"
  if [[ $first == '#!'*/bin/python* && $first != "#!$venv_python"* && ! -x ${first#\#!} ]]; then
    sed -i "1s|.*|#!$venv_python|" "$script"
  fi
done
"$venv_python" -m pip install --quiet --upgrade pip
"$venv_python" -m pip install --quiet -e '.[dev,finetune]'

# The vLLM venv is mostly download and unpacking: it goes on beside the Go builds, which are mostly CPU.
step "vLLM for the flag contract test, in the background (the first install takes about 10 minutes)"
mkdir -p .work
tests/contract/setup_vllm.sh > /dev/null 2> .work/setup-vllm.log &
vllm_install=$!

step "Test control plane (the first build compiles Kubernetes: about 10 minutes on 2 cores)"
tests/cluster/build.sh >/dev/null
tests/cluster/gateway-api.sh >/dev/null

if [[ $(id -u) -eq 0 && $(uname -s) == Linux ]]; then
  step "The real node: containerd, CoreDNS, runc and CNI plugins (the first build takes about 10 minutes)"
  tests/cluster/build-node.sh >/dev/null

  step "Images: operator, finetune, vllm-cpu, built with buildah (the first build takes about 15 minutes)"
  images/build.sh > .work/images.txt
else
  step "not root on Linux: no real node and no images (their tests will skip and say so)"
fi

step "helm"
scripts/install-helm.sh >/dev/null

step "KEDA and Prometheus for the autoscaling tests, from their Go modules (the first build takes about 15 minutes on 2 cores)"
tests/cluster/build-autoscaling.sh >/dev/null

step "vLLM for the flag contract test: waiting for the background install"
if ! wait "$vllm_install"; then
  cat .work/setup-vllm.log >&2
  exit 1
fi

step "ready: .venv/bin/moorage demo   |   scripts/test.sh"
