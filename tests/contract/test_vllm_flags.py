"""Contract: every `vllm serve` command line the operator writes is accepted by vLLM's own parser.

The argv lists come from moorage.plan.serving.vllm_args over a matrix of specs that covers every typed flag
and every value the API's enums allow (read from the API models, so the matrix grows with them), every
LoRA rank bucket, and every OpenSourceModel in examples/*.yaml. tests/contract/check_vllm_args.py parses
them with vLLM's parser, in a separate venv with the pinned vLLM (vLLM pins its own torch and must not
share the main venv):

    export MOORAGE_VLLM_PYTHON="$(tests/contract/setup_vllm.sh)"

Without MOORAGE_VLLM_PYTHON these tests are skipped; the pin check at the bottom always runs.
"""

import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml

from moorage.api.finetune import Lora
from moorage.api.layout import WEIGHTS_MOUNT, adapter_dir
from moorage.api.model import KIND, OpenSourceModel
from moorage.api.spec import Vllm
from moorage.plan.config import DEFAULT_VLLM_IMAGE
from moorage.plan.serving import Adapter, ServingTarget, vllm_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHECKER = HERE / "check_vllm_args.py"
SETUP = HERE / "setup_vllm.sh"
SETUP_HINT = (
    "set MOORAGE_VLLM_PYTHON to the python of a venv with the pinned vLLM: "
    'export MOORAGE_VLLM_PYTHON="$(tests/contract/setup_vllm.sh)"'
)

SHA = "0123456789abcdef0123456789abcdef01234567"
TARGET = ServingTarget(SHA, "m-weights", str(WEIGHTS_MOUNT / "models" / "org" / "model" / SHA))


def _model(name: str = "m", vllm: dict[str, Any] | None = None, **spec: Any) -> OpenSourceModel:
    serving = spec.pop("serving", {})
    if vllm is not None:
        serving["vllm"] = vllm
    return OpenSourceModel.parse(
        {
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"source": {"uri": "hf://org/model"}, "serving": serving, **spec},
        }
    )


def _enum(field: str) -> list[str]:
    """The values a Literal field of spec.serving.vllm allows, None left out."""
    annotation = Vllm.model_fields[field].annotation
    is_literal = typing.get_origin(annotation) is typing.Literal
    arms = (annotation,) if is_literal else typing.get_args(annotation)
    values = [
        value
        for arm in arms
        if typing.get_origin(arm) is typing.Literal
        for value in typing.get_args(arm)
        if isinstance(value, str)
    ]
    assert values, f"spec.serving.vllm.{field} is no longer a Literal: update this test"
    return values


def _lora_ranks() -> list[int]:
    """Every rank the API allows at a bucket edge of _lora_rank_bucket, plus 0 (a lost annotation)."""
    bounds = Lora.model_fields["r"].metadata
    low = next(b.ge for b in bounds if isinstance(b, annotated_types.Ge))
    high = next(b.le for b in bounds if isinstance(b, annotated_types.Le))
    edges = {0, low, high} | {edge + step for edge in (8, 16, 32, 64, 128, 256, 320, 512) for step in (0, 1)}
    return sorted(rank for rank in edges if rank == 0 or low <= rank <= high)


def _adapter_target(rank: int) -> ServingTarget:
    path = str(adapter_dir(WEIGHTS_MOUNT, f"m-{rank}"))
    return ServingTarget(TARGET.revision, TARGET.claim, TARGET.weights_path, Adapter("m-ft", path, rank))


def _matrix() -> dict[str, list[str]]:
    cases: dict[str, list[str]] = {"minimal": vllm_args(_model(), TARGET)}
    for dtype in _enum("dtype"):
        cases[f"dtype-{dtype}"] = vllm_args(_model(vllm={"dtype": dtype}), TARGET)
    for method in _enum("quantization"):
        cases[f"quantization-{method}"] = vllm_args(_model(vllm={"quantization": method}), TARGET)
    for length in (16, 4096, 10485760):
        cases[f"max-model-len-{length}"] = vllm_args(_model(vllm={"maxModelLen": length}), TARGET)
    for fraction in (0.05, 0.9, 1.0):
        cases[f"gpu-memory-utilization-{fraction}"] = vllm_args(
            _model(vllm={"gpuMemoryUtilization": fraction}), TARGET
        )
    cases["tensor-parallel-from-gpus"] = vllm_args(_model(serving={"gpus": 8}), TARGET)
    cases["tensor-parallel-explicit"] = vllm_args(
        _model(serving={"gpus": 4}, vllm={"tensorParallelSize": 2}), TARGET
    )
    cases["cpu"] = vllm_args(_model(serving={"gpus": 0}), TARGET)
    cases["served-model-name"] = vllm_args(_model(vllm={"servedModelName": "org/Model-7B.v2"}), TARGET)
    cases["trust-remote-code"] = vllm_args(
        _model(source={"uri": "hf://org/model", "trustRemoteCode": True}), TARGET
    )
    cases["extra-args"] = vllm_args(
        _model(vllm={"extraArgs": ["--enable-prefix-caching", "--max-num-seqs", "64"]}), TARGET
    )
    for rank in _lora_ranks():
        cases[f"lora-rank-{rank}"] = vllm_args(_model(), _adapter_target(rank))
    cases["everything"] = vllm_args(
        _model(
            source={"uri": "hf://org/model", "trustRemoteCode": True},
            serving={"gpus": 2},
            vllm={
                "servedModelName": "everything",
                "maxModelLen": 8192,
                "dtype": "bfloat16",
                "quantization": "fp8",
                "gpuMemoryUtilization": 0.85,
                "extraArgs": ["--enable-prefix-caching"],
            },
        ),
        _adapter_target(64),
    )
    return cases


def _examples() -> dict[str, list[str]]:
    cases = {}
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                continue
            model = OpenSourceModel.parse(doc)
            target = TARGET
            if model.spec.fine_tune:
                target = _adapter_target(model.spec.fine_tune.lora.r)
            cases[f"example-{path.name}-{index}-{model.metadata.name}"] = vllm_args(model, target)
    return cases


# Command lines vLLM must reject: proof that the checker can fail at all.
REJECTED = {
    "misspelled-flag": [TARGET.weights_path, "--max-model-lenn", "4096"],
    "bad-dtype": [TARGET.weights_path, "--dtype", "bfloat17"],
    "bad-max-lora-rank": [TARGET.weights_path, "--enable-lora", "--max-lora-rank", "24"],
    "bad-quantization": [TARGET.weights_path, "--quantization", "awq_typo"],
    "int-flag-not-a-number": [TARGET.weights_path, "--tensor-parallel-size", "two"],
}

ACCEPTED = _matrix() | _examples()


def _vllm_python() -> str:
    python = os.environ.get("MOORAGE_VLLM_PYTHON")
    if not python:
        pytest.skip(SETUP_HINT)
    if not Path(python).is_file():
        pytest.fail(f"MOORAGE_VLLM_PYTHON={python} does not exist; {SETUP_HINT}")
    return python


@pytest.fixture(scope="module")
def verdicts() -> dict[str, dict[str, Any]]:
    """Every case, accepted and rejected, through one run of the checker (importing vLLM takes seconds)."""
    cases = ACCEPTED | {f"rejected-{name}": argv for name, argv in REJECTED.items()}
    run = subprocess.run(
        [_vllm_python(), str(CHECKER), "--json"],
        input=json.dumps(list(cases.values())),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if run.returncode not in (0, 1):
        pytest.fail(f"the checker crashed (exit {run.returncode}):\n{run.stderr[-4000:]}")
    results = json.loads(run.stdout)
    assert [result["argv"] for result in results] == list(cases.values())
    return dict(zip(cases, results, strict=True))


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_vllm_accepts(case: str, verdicts: dict[str, dict[str, Any]]) -> None:
    verdict = verdicts[case]
    assert verdict["ok"], f"vllm serve {' '.join(verdict['argv'])}\n  rejected: {verdict['error']}"


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_vllm_rejects(case: str, verdicts: dict[str, dict[str, Any]]) -> None:
    verdict = verdicts[f"rejected-{case}"]
    assert not verdict["ok"], f"vLLM accepted {verdict['argv']}: the checker cannot fail"
    assert verdict["error"]


def test_matrix_covers_every_typed_flag() -> None:
    """If vllm_args learns a flag, the matrix must exercise it (and so vLLM must accept it)."""
    source = (REPO / "operator" / "moorage" / "plan" / "serving.py").read_text()
    emitted = set(re.findall(r'"(--[a-z0-9-]+)"', source))
    covered = {arg for argv in _matrix().values() for arg in argv if arg.startswith("--")}
    assert emitted <= covered, f"flags of serving.py that no case emits: {sorted(emitted - covered)}"


def test_pinned_vllm_matches_default_image() -> None:
    """setup_vllm.sh installs the vLLM that DEFAULT_VLLM_IMAGE runs, and the venv in use has it."""
    pinned = re.search(r'VLLM_VERSION="\$\{MOORAGE_VLLM_VERSION:-([^}]+)\}"', SETUP.read_text())
    assert pinned, "setup_vllm.sh no longer pins VLLM_VERSION the way this test reads it"
    assert DEFAULT_VLLM_IMAGE.rsplit(":", 1)[1] == f"v{pinned[1]}", (
        f"DEFAULT_VLLM_IMAGE {DEFAULT_VLLM_IMAGE} is not the vLLM setup_vllm.sh pins ({pinned[1]})"
    )
    python = os.environ.get("MOORAGE_VLLM_PYTHON")
    if python:
        expected = os.environ.get("MOORAGE_VLLM_VERSION", pinned[1])
        installed = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        assert installed == expected, f"MOORAGE_VLLM_PYTHON has vllm {installed}, the contract is {expected}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
