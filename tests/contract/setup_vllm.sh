#!/usr/bin/env bash
# Make (once) a venv with the pinned vLLM for the flag contract test, and print its python's path.
#
#   export MOORAGE_VLLM_PYTHON="$(tests/contract/setup_vllm.sh)"
#   .venv/bin/pytest tests/contract
#
# CPU only: vLLM's argument parser needs no GPU. The first run downloads vLLM and its pinned torch (~4 min,
# ~10 GB; cache the venv directory in CI, keyed on this file); later runs only print the path.
# Progress goes to stderr, stdout carries the path alone. Keep VLLM_VERSION the same as the tag of DEFAULT_VLLM_IMAGE in
# operator/moorage/plan/config.py (tests/contract/test_vllm_flags.py checks that they agree).
set -euo pipefail

VLLM_VERSION="${MOORAGE_VLLM_VERSION:-0.33.0}"
PYTHON="${PYTHON:-python3}"
root="${XDG_CACHE_HOME:-$HOME/.cache}/moorage"
venv="$root/vllm-$VLLM_VERSION"
marker="$venv/.moorage-ready"

if [[ -f "$marker" && -x "$venv/bin/python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

echo "setup_vllm: installing vllm==$VLLM_VERSION into $venv (first run: several minutes, ~10 GB)" >&2
mkdir -p "$root"
[[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
{
  # pip skips what an interrupted earlier run already installed.
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "vllm==$VLLM_VERSION"
  # The venv is good only if the checker can build vLLM's parser in it.
  echo '[]' | "$venv/bin/python" "$(dirname "$0")/check_vllm_args.py"
} 1>&2
echo "$VLLM_VERSION" > "$marker"
echo "$venv/bin/python"
