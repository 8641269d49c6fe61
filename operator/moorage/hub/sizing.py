"""Will the weights fit on the GPUs? A pure estimate the operator checks before it schedules anything.

The model: vLLM takes gpu_memory_utilization of each GPU; the weights, split evenly by tensor parallelism,
plus a KV-cache margin (a share of the weights, so a model gets room for a useful context), plus a fixed
per-GPU overhead (activations, CUDA graphs, the CUDA context) must fit in it.
"""

from dataclasses import dataclass

from moorage.hub.metadata import DTYPE_BYTES, TORCH_TO_SAFETENSORS

GiB = 1024**3
KV_MARGIN = 0.20
"""KV cache reserved on top of the weights, as a share of the weights."""
OVERHEAD_BYTES = 1 * GiB
"""Per GPU: activations during the profiling run, CUDA graphs, the CUDA context."""
MAX_GPUS = 8
"""Suggestions stay on one node: tensor parallelism across nodes is not something to suggest lightly."""


@dataclass(frozen=True)
class GpuProfile:
    name: str
    memory_bytes: int
    fp8: bool
    """Native FP8 (Ada, Hopper); others run FP8 checkpoints weight-only, slower."""


def _mib(n: int) -> int:
    return n * 1024**2


# Total memory as nvidia-smi reports it, which is what gpu_memory_utilization is a share of.
GPU_PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile("nvidia-t4", _mib(15360), fp8=False),
        GpuProfile("nvidia-l4", _mib(23034), fp8=True),
        GpuProfile("nvidia-a10g", _mib(23028), fp8=False),
        GpuProfile("nvidia-l40s", _mib(46068), fp8=True),
        GpuProfile("nvidia-a100-40gb", _mib(40960), fp8=False),
        GpuProfile("nvidia-a100-80gb", _mib(81920), fp8=False),
        GpuProfile("nvidia-h100-80gb", _mib(81559), fp8=True),
        GpuProfile("nvidia-h200-141gb", _mib(143771), fp8=True),
    )
}

QUANTIZATION_BYTES: dict[str, float] = {
    "fp8": 1.0,
    "int8": 1.0,
    "w8a8": 1.0,
    "compressed-tensors": 1.0,
    "awq": 0.5,
    "awq_marlin": 0.5,
    "gptq": 0.5,
    "gptq_marlin": 0.5,
}
"""Bytes per parameter of the quantized weights (4-bit schemes at their usual setting; scales ignored)."""
SUGGESTED_QUANTIZATIONS = ("fp8", "awq")
"""Tried in this order: fp8 loses least, awq (a 4-bit checkpoint) saves most."""


@dataclass(frozen=True)
class Fit:
    fits: bool
    message: str
    weights_bytes: int
    needed_bytes: int
    """Per GPU: the weights' share, the KV-cache margin and the overhead."""
    usable_bytes: int
    """Per GPU: gpu_memory_utilization of its memory."""
    suggested_gpus: int | None = None
    """The fewest GPUs (a power of two, up to MAX_GPUS) that hold the model as it is, when it does not fit."""
    suggested_quantization: str | None = None
    """A quantization that fits on the given GPUs, when it does not fit."""


def bytes_per_parameter(
    weights_dtype: str | None, quantization: str | None, dtype_override: str | None
) -> float:
    """Quantization decides; else the dtype vLLM is told to use; else the stored dtype; else 16-bit."""
    if quantization:
        return QUANTIZATION_BYTES.get(quantization.lower(), 2.0)
    if dtype_override and dtype_override.lower() != "auto":
        return _dtype_bytes(dtype_override) or 2.0
    # vLLM's dtype auto serves fp32 checkpoints in 16 bits, and fp8 ones in fp8.
    return min(_dtype_bytes(weights_dtype) or 2.0, 2.0)


def _dtype_bytes(dtype: str | None) -> float | None:
    if not dtype:
        return None
    name = TORCH_TO_SAFETENSORS.get(dtype.lower(), dtype.upper())
    return float(DTYPE_BYTES[name]) if name in DTYPE_BYTES else None


def needed_per_gpu(weights_bytes: float, gpus: int) -> float:
    return weights_bytes * (1 + KV_MARGIN) / gpus + OVERHEAD_BYTES


def estimate_fit(  # noqa: PLR0917 - positional by design, as the operator passes the spec's fields
    parameters: int,
    weights_dtype: str | None,
    quantization: str | None,
    dtype_override: str | None,
    gpus: int,
    gpu_memory_bytes: int,
    gpu_memory_utilization: float = 0.9,
    *,
    gpu_name: str | None = None,
) -> Fit:
    """Whether `parameters` weights fit on `gpus` GPUs of gpu_memory_bytes each, with advice when not.

    parameters counts real weights: for a pre-quantized checkpoint pass the unquantized model's count (the
    hub's summary counts packed int32 elements) together with its quantization.
    """
    if gpus < 1 or gpu_memory_bytes <= 0 or not 0 < gpu_memory_utilization <= 1:
        raise ValueError("gpus, gpu_memory_bytes and gpu_memory_utilization must be positive")
    weights = parameters * bytes_per_parameter(weights_dtype, quantization, dtype_override)
    usable = gpu_memory_bytes * gpu_memory_utilization
    needed = needed_per_gpu(weights, gpus)
    gpu = f"{gpus} x {gpu_name or 'GPU'} ({_gib(gpu_memory_bytes)} GiB)"
    summary = (
        f"needs ~{_gib(weights * (1 + KV_MARGIN) + OVERHEAD_BYTES * gpus)} GiB for "
        f"{_gib(weights)} GiB of weights + KV-cache margin; {gpu} hold{'s' if gpus == 1 else ''} "
        f"{_gib(usable * gpus)} GiB at gpu_memory_utilization {gpu_memory_utilization:g}"
    )
    if needed <= usable:
        return Fit(True, summary, int(weights), int(needed), int(usable))

    more_gpus = _fewest_gpus(weights, usable, above=gpus)
    quantized = (
        None
        if quantization
        else next(
            (
                q
                for q in SUGGESTED_QUANTIZATIONS
                if needed_per_gpu(parameters * QUANTIZATION_BYTES[q], gpus) <= usable
            ),
            None,
        )
    )
    options = []
    if more_gpus:
        options.append(f"{more_gpus} GPUs")
    if quantized:
        options.append(f"quantization: {quantized}")
    if not options and not quantization:
        options = [
            f"{n} GPUs with quantization: {q}"
            for q in SUGGESTED_QUANTIZATIONS
            if (n := _fewest_gpus(parameters * QUANTIZATION_BYTES[q], usable, above=gpus))
        ][:1]
    advice = f"use {' or '.join(options)}" if options else f"it does not fit on {MAX_GPUS} of these GPUs"
    return Fit(False, f"{summary}; {advice}", int(weights), int(needed), int(usable), more_gpus, quantized)


def _fewest_gpus(weights: float, usable: float, *, above: int) -> int | None:
    """Tensor parallelism wants a power of two that divides the attention heads: 2, 4 or 8."""
    fitting = (n for n in (2, 4, 8) if above < n <= MAX_GPUS and needed_per_gpu(weights, n) <= usable)
    return next(fitting, None)


def _gib(n: float) -> str:
    return f"{n / GiB:.1f}".removesuffix(".0")
