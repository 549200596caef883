"""A check that bfloat16 autocast computes what float32 does on this machine's kernels.

bf16 rounding through the whole model moves an output by about 1 %; a backend bug moves it by
about 100 % and nothing else notices: oneDNN's bf16 convolution once returned scrambled patch
embeddings on AMX CPUs (16 input channels, 4x4 stride-4 kernel), and an hour of training learned
from them. Training (``astra-train``) and inference (``WorldModel.set_precision``) both run one
forward pass in each precision and refuse bf16 when they disagree.
"""

from __future__ import annotations

from typing import Callable

import torch

# Largest relative difference between a bf16-autocast forward pass and the fp32 one that is
# accepted (real models here: 0.3-1.1 %).
BF16_TOLERANCE = 0.05


class UnreliablePrecision(RuntimeError):
    """bf16 autocast gives other results than float32 on this device."""


def bf16_relative_difference(forward: Callable[[], torch.Tensor], device_type: str) -> float:
    """``|f_bf16 - f_fp32| / |f_fp32|`` (Frobenius norms) of ``forward()`` run plainly and under bf16 autocast."""
    with torch.no_grad():
        reference = forward().float()
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            low = forward().float()
    return float((low - reference).norm() / reference.norm().clamp_min(1e-12))


def require_bf16_agrees(forward: Callable[[], torch.Tensor], device_type: str, what: str,
                        fallback: str) -> float:
    """The relative difference of :func:`bf16_relative_difference`; raises :class:`UnreliablePrecision`
    (naming ``what`` and the ``fallback`` to use) above :data:`BF16_TOLERANCE`."""
    error = bf16_relative_difference(forward, device_type)
    if not error <= BF16_TOLERANCE:  # NaN fails too
        raise UnreliablePrecision(
            f"bf16 is unreliable on this {device_type} for {what}: its forward pass differs from fp32 by "
            f"{error:.1%} (bf16 rounding alone stays under {BF16_TOLERANCE:.0%}); {fallback}")
    return error
