"""A check that bfloat16 autocast computes what float32 does on this machine's kernels.

bf16 rounding through the whole model moves an output by about 1 %; a backend bug moves it by
about 100 % and nothing else notices: oneDNN's bf16 convolution once returned scrambled patch
embeddings on AMX CPUs (16 input channels, 4x4 stride-4 kernel), and an hour of training learned
from them. Training (``astra-train``) and inference (``WorldModel.set_precision``) both run one
forward pass in each precision and refuse bf16 when they disagree.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

# Largest relative difference between a bf16-autocast forward pass and the fp32 one that is
# accepted (real models here: 0.3-1.1 %).
BF16_TOLERANCE = 0.05


class UnreliablePrecision(RuntimeError):
    """bf16 autocast gives other results than float32 on this device."""


Outputs = torch.Tensor | Sequence[torch.Tensor]


def bf16_relative_difference(forward: Callable[[], Outputs], device_type: str) -> float:
    """``|f_bf16 - f_fp32| / |f_fp32|`` (Frobenius norms) of ``forward()`` run plainly and under bf16
    autocast; when it returns several tensors, the largest of their differences."""
    with torch.no_grad():
        reference = _as_tuple(forward())
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            low = _as_tuple(forward())
    return max(float((b.float() - a.float()).norm() / a.float().norm().clamp_min(1e-12))
               for a, b in zip(reference, low, strict=True))


def _as_tuple(outputs: Outputs) -> tuple[torch.Tensor, ...]:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def transformer_probe(transformer: nn.Module, latents: torch.Tensor, flow_t: torch.Tensor,
                      frame_pos: torch.Tensor) -> Callable[[], tuple[torch.Tensor, ...]]:
    """A fixed forward pass of an ``AstraTransformer`` for :func:`require_bf16_agrees`: its output
    and the features entering its output projection (``proj_out``).

    A zeroed head (``reset_output_head``: x0 / latent-delta runs start at copy-last) makes the output
    exactly zero in both precisions, and a comparison of outputs alone would pass any kernel bug
    in the body; the features entering the head still show it.
    """
    def run() -> tuple[torch.Tensor, ...]:
        seen: list[torch.Tensor] = []
        handle = transformer.proj_out.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
        try:
            output = transformer(latents, flow_t, frame_pos)[0]
        finally:
            handle.remove()
        return seen[-1], output
    return run


def require_bf16_agrees(forward: Callable[[], Outputs], device_type: str, what: str,
                        fallback: str) -> float:
    """The relative difference of :func:`bf16_relative_difference`; raises :class:`UnreliablePrecision`
    (naming ``what`` and the ``fallback`` to use) above :data:`BF16_TOLERANCE`."""
    error = bf16_relative_difference(forward, device_type)
    if not error <= BF16_TOLERANCE:  # NaN fails too
        raise UnreliablePrecision(
            f"bf16 is unreliable on this {device_type} for {what}: its forward pass differs from fp32 by "
            f"{error:.1%} (bf16 rounding alone stays under {BF16_TOLERANCE:.0%}); {fallback}")
    return error
