#!/usr/bin/env bash
# The whole check: lint, types, layering, then every test (unit, contract, fine-tune, end to end).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PWD/.venv/bin:${XDG_CACHE_HOME:-$HOME/.cache}/moorage/bin:$PATH"
MOORAGE_VLLM_PYTHON="${MOORAGE_VLLM_PYTHON:-$(tests/contract/setup_vllm.sh)}"
export MOORAGE_VLLM_PYTHON
# The images the real-node tests load, built (or found cached) by images/build.sh as root, when the run
# includes those tests (a changed operator package rebuilds two images: minutes).
runs_real_pods() {
  [[ $# -eq 0 ]] && return 0
  for arg; do [[ $arg == tests || $arg == tests/ || $arg == tests/e2e* || $arg == tests/images* ]] && return 0; done
  return 1
}
if [[ -z "${MOORAGE_IMAGES:-}" && $(id -u) -eq 0 && $(uname -s) == Linux ]] && runs_real_pods "$@"; then
  mkdir -p .work
  images/build.sh > .work/images.txt
  # tests/images also serve a model and an adapter with the vllm-cpu image as it is (default flags).
  export MOORAGE_IMAGES="$PWD/.work/images.txt" MOORAGE_IMAGES_SERVE="${MOORAGE_IMAGES_SERVE:-1}"
fi

ruff check .
ruff format --check operator tests bench
mypy
lint-imports
hadolint images/*/Dockerfile
exec pytest "${@:-tests}"
