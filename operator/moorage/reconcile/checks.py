"""Will the resolved weights serve as the spec asks? Checked before any pod is made, by the operator and
by `moorage render --resolve` alike: GPU memory (or host memory on CPU) and the cache volume's size."""

from moorage.api.model import OpenSourceModel
from moorage.api.quantity import gib, parse_quantity
from moorage.api.resolved import ResolvedSource
from moorage.api.resources import cpu_memory_bytes
from moorage.api.spec import Resources
from moorage.hub.sizing import GPU_PROFILES, estimate_fit
from moorage.plan.config import PlanConfig
from moorage.plan.observed import Problem


def serving_problem(model: OpenSourceModel, resolved: ResolvedSource, config: PlanConfig) -> Problem | None:
    """The first reason the model cannot be served as specified, naming the field to change; else None."""
    fits = _memory(model, resolved) if model.spec.serving.on_cpu else _gpu_fit(model, resolved, config)
    return fits or _cache(model, resolved)


def _memory(model: OpenSourceModel, resolved: ResolvedSource) -> Problem | None:
    """On CPU the weights and the KV cache live in the pod's memory: a limit too small would OOM-kill it."""
    memory = (model.spec.serving.resources or Resources()).memory
    needed = cpu_memory_bytes(resolved.total_bytes)
    if memory is None or parse_quantity(memory) >= needed:
        return None
    return Problem(
        "InsufficientMemory",
        f"spec.serving.resources.memory: {memory} cannot serve {resolved.repo_id} on CPU: it needs "
        f"~{gib(needed)} ({gib(resolved.total_bytes)} of weights, the KV cache and the engine); "
        "raise it, or leave it unset to size it from the model",
    )


def _gpu_fit(model: OpenSourceModel, resolved: ResolvedSource, config: PlanConfig) -> Problem | None:
    serving = model.spec.serving
    profile = serving.gpu_profile or config.default_gpu_profile
    if profile not in GPU_PROFILES:
        return Problem(
            "UnknownGPUProfile",
            f"spec.serving.gpuProfile: {profile!r} is not one of {', '.join(sorted(GPU_PROFILES))}",
        )
    if resolved.parameters is None:
        return None
    fit = estimate_fit(
        parameters=resolved.parameters,
        weights_dtype=resolved.dtype,
        quantization=serving.vllm.quantization,
        dtype_override=serving.vllm.dtype,
        gpus=serving.tensor_parallel_size(),
        gpu_memory_bytes=GPU_PROFILES[profile].memory_bytes,
        gpu_name=profile,
        gpu_memory_utilization=serving.vllm.gpu_memory_utilization or 0.9,
    )
    return None if fit.fits else Problem("InsufficientGPUMemory", f"spec.serving.gpus: {fit.message}")


def _cache(model: OpenSourceModel, resolved: ResolvedSource) -> Problem | None:
    size = model.spec.cache.size
    if size is None or parse_quantity(size) >= resolved.total_bytes:
        return None
    return Problem(
        "CacheTooSmall",
        f"spec.cache.size: {size} cannot hold the {gib(resolved.total_bytes)} of files of "
        f"{resolved.repo_id}@{resolved.sha[:12]}; leave it unset to size the volume from the files",
    )
