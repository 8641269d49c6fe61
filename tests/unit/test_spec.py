"""The API's own checks: defaults, bounds and the cross-field rules, with messages that name the field."""

import pytest
from pydantic import ValidationError

from moorage.api.errors import describe
from moorage.api.spec import OpenSourceModelSpec


def _error(spec: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as caught:
        OpenSourceModelSpec.model_validate(spec)
    return describe(caught.value, "spec")


def test_minimal_spec_gets_defaults() -> None:
    spec = OpenSourceModelSpec.model_validate({"source": {"uri": "hf://Qwen/Qwen2.5-0.5B"}})
    assert spec.source.revision == "main"
    assert spec.source.trust_remote_code is False
    assert spec.serving.replicas == 1
    assert spec.serving.tensor_parallel_size() == 1
    assert spec.serving.rollout.surge() == 1 and spec.serving.rollout.unavailable() == 0


def test_tensor_parallel_follows_gpus() -> None:
    spec = OpenSourceModelSpec.model_validate({"source": {"uri": "hf://a/b"}, "serving": {"gpus": 4}})
    assert spec.serving.tensor_parallel_size() == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": {"uri": "s3://bucket/model"}}, "spec.source.uri: must be hf://<org>/<name>"),
        (
            {"source": {"uri": "hf://a/b"}, "serving": {"rollout": {"maxSurge": 0}}},
            "spec.serving.rollout: maxSurge and maxUnavailable must not both be 0",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "serving": {"gpus": 2, "vllm": {"tensorParallelSize": 4}}},
            "spec.serving.vllm: vllm.tensorParallelSize cannot exceed gpus",
        ),
        ({"source": {"uri": "hf://a/b"}, "serving": {"gpus": -1}}, "spec.serving.gpus:"),
        (
            {"source": {"uri": "hf://a/b"}, "serving": {"gpus": 0, "gpuProfile": "nvidia-l4"}},
            "spec.serving.gpuProfile: gpuProfile has no meaning with gpus: 0",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "serving": {"vllm": {"extraArgs": ["--port", "9000"]}}},
            "spec.serving.vllm.extraArgs: extraArgs must not set --port",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "serving": {"vllm": {"extraArgs": ["--served_model_name=x"]}}},
            "use vllm.servedModelName",
        ),
        ({"source": {"uri": "hf://a/b"}, "serving": {"replica": 2}}, "spec.serving.replica: unknown field"),
        ({"serving": {}}, "spec.source: required"),
        (
            {"source": {"uri": "hf://a/b"}, "serving": {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}},
            "spec.serving.autoscaling.minReplicas: minReplicas must not exceed maxReplicas",
        ),
        (
            {
                "source": {"uri": "hf://a/b"},
                "serving": {"autoscaling": {"maxReplicas": 4, "minReplicas": -1}},
            },
            "spec.serving.autoscaling.minReplicas:",
        ),
        (
            {
                "source": {"uri": "hf://a/b"},
                "serving": {"autoscaling": {"maxReplicas": 4, "coldStart": {"maxQueued": 5}}},
            },
            "spec.serving.autoscaling.coldStart: coldStart has a meaning only with minReplicas: 0",
        ),
        (
            {
                "source": {"uri": "hf://a/b"},
                "serving": {
                    "autoscaling": {"maxReplicas": 4, "minReplicas": 0, "coldStart": {"maxQueued": 0}}
                },
            },
            "spec.serving.autoscaling.coldStart.maxQueued:",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "serving": {"autoscaling": {}}},
            "spec.serving.autoscaling.maxReplicas",
        ),
        (
            {
                "source": {"uri": "hf://a/b"},
                "serving": {
                    "autoscaling": {"maxReplicas": 4, "target": {"waitingRequests": 2, "kvCacheUsage": 0.8}}
                },
            },
            "spec.serving.autoscaling.target: set one target: waitingRequests or kvCacheUsage",
        ),
        (
            {
                "source": {"uri": "hf://a/b"},
                "serving": {"autoscaling": {"maxReplicas": 4, "target": {"kvCacheUsage": 80}}},
            },
            "spec.serving.autoscaling.target.kvCacheUsage:",
        ),
        ({"source": {"uri": "hf://a/b"}, "serving": {"vllm": {"dtype": "fp64"}}}, "spec.serving.vllm.dtype:"),
        (
            {"source": {"uri": "hf://a/b"}, "adapters": [{"name": "x", "uri": "pvc://loras//abs/x"}]},
            "spec.adapters[0].uri: must be hf://<org>/<name> (an adapter repository on the hub) or pvc://",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "adapters": [{"name": "x", "uri": "pvc://Loras/x"}]},
            "spec.adapters[0].uri: must be hf://<org>/<name>",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "adapters": [{"name": "x", "uri": "pvc://loras/"}]},
            "spec.adapters[0].uri: must be hf://<org>/<name>",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "adapters": [{"name": "x", "uri": "pvc://loras/a/../../etc"}]},
            "spec.adapters[0].uri: the path of a pvc:// uri must stay inside its claim: no .. segment",
        ),
        (
            {"source": {"uri": "hf://a/b"}, "adapters": [{"name": "x", "uri": "pvc://loras/.."}]},
            "no .. segment",
        ),
        (
            {
                "source": {"uri": "hf://a/b"},
                "adapters": [{"name": "x", "uri": "pvc://loras/x", "revision": "main"}],
            },
            "spec.adapters[0].revision: revision is for hf:// adapters",
        ),
    ],
)
def test_errors_name_the_field(spec: dict[str, object], message: str) -> None:
    assert message in _error(spec)


def test_pvc_adapters_take_relative_paths_and_no_revision() -> None:
    spec = OpenSourceModelSpec.from_manifest(
        {
            "source": {"uri": "hf://a/b"},
            "adapters": [
                {"name": "x", "uri": "pvc://loras/support/v3"},
                {"name": "y", "uri": "pvc://loras/..v3/./a..b"},
                {"name": "z", "uri": "hf://org/z", "revision": "v2"},
            ],
        }
    )
    assert [a.claim for a in spec.adapters or ()] == ["loras", "loras", None]


@pytest.mark.parametrize(("tune", "taken"), [({}, "tiny-ft"), ({"adapterName": "bot"}, "bot")])
def test_an_adapter_may_not_take_the_fine_tuned_adapters_name(tune: dict[str, str], taken: str) -> None:
    spec = {
        "source": {"uri": "hf://a/b"},
        "fineTune": {"dataset": {"uri": "pvc://data/train.jsonl"}, **tune},
        "adapters": [{"name": "other", "uri": "hf://org/x"}, {"name": taken, "uri": "hf://org/y"}],
    }
    with pytest.raises(ValidationError) as caught:
        OpenSourceModelSpec.from_manifest(spec, "tiny")
    assert describe(caught.value, "spec") == (
        "spec.adapters: must not reuse the name of the fine-tuned adapter (spec.fineTune.adapterName, "
        "default <model name>-ft)"
    )
    spec["adapters"] = [{"name": "tiny-ft" if taken == "bot" else "bot", "uri": "hf://org/y"}]
    assert OpenSourceModelSpec.from_manifest(spec, "tiny").adapters
