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
    ],
)
def test_errors_name_the_field(spec: dict[str, object], message: str) -> None:
    assert message in _error(spec)
