"""What a serving replica needs besides its GPUs, sized from the model: the default requests the plan
sets and the memory check the operator makes before serving on CPU, from one formula."""

import math

from moorage.api.quantity import GIB
from moorage.api.spec import Serving

CPU_ENGINE_BYTES = 2 * GIB
"""A CPU replica's engine beside the weights and the KV cache: Python, torch and vLLM's workers."""
GPU_SERVER_BYTES = 4 * GIB
"""A GPU replica's host memory beside each worker's share of the weights: API server, tokenizer, CUDA."""


def kv_cache_gib(weights_bytes: int) -> int:
    """The KV cache of a CPU replica (VLLM_CPU_KVCACHE_SPACE): a fifth of the weights, 1 GiB at least."""
    return max(1, math.ceil(weights_bytes * 0.2 / GIB))


def cpu_memory_bytes(weights_bytes: int) -> int:
    """Host memory a CPU replica needs: weights, KV cache and engine."""
    return weights_bytes + kv_cache_gib(weights_bytes) * GIB + CPU_ENGINE_BYTES


def _gib(n: float) -> str:
    return f"{max(1, math.ceil(n / GIB))}Gi"


def default_requests(serving: Serving, weights_bytes: int) -> dict[str, str]:
    """CPU and memory each replica requests when the spec says nothing, so serving pods are never
    BestEffort (the first evicted). On GPUs: 2 cores per GPU, and host memory for a worker's share of the
    weights while it loads them plus 4 GiB; on CPU: 1 core, and the weights, the KV cache and 2 GiB."""
    if serving.on_cpu:
        return {"cpu": "1", "memory": _gib(cpu_memory_bytes(weights_bytes))}
    return {"cpu": str(2 * serving.gpus), "memory": _gib(weights_bytes / serving.gpus + GPU_SERVER_BYTES)}
