"""Sizing with real model sizes and real GPU memory."""

import pytest

from moorage.hub.sizing import GPU_PROFILES, GiB, bytes_per_parameter, estimate_fit

L4 = GPU_PROFILES["nvidia-l4"]
H100 = GPU_PROFILES["nvidia-h100-80gb"]
T4 = GPU_PROFILES["nvidia-t4"]
B7 = 7_615_616_512  # Qwen2.5-7B-Instruct, BF16
B70 = 70_553_706_496  # Llama-3.1-70B, BF16


def fit_on(parameters: int, gpu: str, gpus: int, **kwargs: str) -> tuple[bool, str]:
    profile = GPU_PROFILES[gpu]
    fit = estimate_fit(
        parameters,
        kwargs.get("dtype", "BF16"),
        kwargs.get("quantization"),
        kwargs.get("dtype_override"),
        gpus,
        profile.memory_bytes,
        gpu_name=gpu,
    )
    return fit.fits, fit.message


def test_7b_fits_on_one_l4() -> None:
    fits, message = fit_on(B7, "nvidia-l4", 1)
    assert fits, message
    assert "1 x nvidia-l4 (22.5 GiB)" in message


def test_70b_does_not_fit_on_one_h100_and_says_what_would() -> None:
    fit = estimate_fit(B70, "BF16", None, None, 1, H100.memory_bytes, gpu_name=H100.name)
    assert not fit.fits
    assert fit.suggested_gpus == 4
    assert fit.suggested_quantization == "awq"  # fp8 (~80 GiB with the margin) is still too much
    assert fit.message.endswith("use 4 GPUs or quantization: awq")
    assert "~" in fit.message and "nvidia-h100-80gb" in fit.message


def test_70b_fits_on_four_h100() -> None:
    assert fit_on(B70, "nvidia-h100-80gb", 4)[0]
    assert not fit_on(B70, "nvidia-h100-80gb", 2)[0]


def test_70b_in_fp8_fits_on_two_h100() -> None:
    assert fit_on(B70, "nvidia-h100-80gb", 2, quantization="fp8")[0]


def test_70b_on_l4s_needs_both_more_gpus_and_quantization() -> None:
    fits, message = fit_on(B70, "nvidia-l4", 1)
    assert not fits
    assert message.endswith("use 8 GPUs with quantization: fp8")


def test_7b_on_a_t4_needs_fp8_or_two() -> None:
    fit = estimate_fit(B7, "BF16", None, None, 1, T4.memory_bytes, gpu_name=T4.name)
    assert not fit.fits
    assert (fit.suggested_gpus, fit.suggested_quantization) == (2, "fp8")


def test_a_user_quantization_is_not_second_guessed() -> None:
    fit = estimate_fit(B70, "BF16", "awq", None, 1, L4.memory_bytes)
    assert not fit.fits and fit.suggested_quantization is None


def test_dtype_override_and_utilization_count() -> None:
    assert not fit_on(B7, "nvidia-l4", 1, dtype_override="float32")[0]
    low = estimate_fit(B7, "BF16", None, None, 1, L4.memory_bytes, gpu_memory_utilization=0.5)
    assert not low.fits


@pytest.mark.parametrize(
    ("dtype", "quantization", "override", "expected"),
    [
        ("BF16", None, None, 2.0),
        ("F32", None, None, 2.0),  # vLLM's dtype auto serves fp32 checkpoints in 16 bits
        ("F32", None, "float32", 4.0),
        ("BF16", None, "auto", 2.0),
        ("F8_E4M3", None, None, 1.0),
        ("BF16", "fp8", None, 1.0),
        ("BF16", "awq", None, 0.5),
        ("BF16", "gptq", "float16", 0.5),
        (None, None, None, 2.0),
    ],
)
def test_bytes_per_parameter(
    dtype: str | None, quantization: str | None, override: str | None, expected: float
) -> None:
    assert bytes_per_parameter(dtype, quantization, override) == expected


def test_numbers_in_the_fit() -> None:
    fit = estimate_fit(B7, "BF16", None, None, 1, 24 * GiB)
    assert fit.weights_bytes == 2 * B7
    assert fit.usable_bytes == int(24 * GiB * 0.9)
    assert fit.needed_bytes == int(2 * B7 * 1.2 + GiB)


def test_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        estimate_fit(B7, "BF16", None, None, 0, L4.memory_bytes)
