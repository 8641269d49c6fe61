#!/usr/bin/env bash
# The whole check: lint, types, layering, then every test (unit, contract, fine-tune, end to end).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PWD/.venv/bin:${XDG_CACHE_HOME:-$HOME/.cache}/moorage/bin:$PATH"
MOORAGE_VLLM_PYTHON="${MOORAGE_VLLM_PYTHON:-$(tests/contract/setup_vllm.sh)}"
export MOORAGE_VLLM_PYTHON

ruff check .
ruff format --check operator tests bench
mypy
lint-imports
hadolint images/*/Dockerfile
exec pytest "${@:-tests}"
