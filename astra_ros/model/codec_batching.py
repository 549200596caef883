"""Whether the codec may run a step's work in fewer, larger calls without changing a bit.

A step (``WorldModel.batch_codec_calls``) can decode its predicted frames and their turned anchors as
one batch, and in open loop encode its references' frames and the anchor views its decoding needs as
one batch. Whether a row of a larger batch rounds exactly as it does in the smaller one depends on the
kernels the CPU library picks for each batch size, which depend on the processor and the thread count
(on this project's machines identical at 1 and 2 threads; at 3 or more both the decoder's batch of 4
and the encoder's of 5 round differently). The kernels do not depend on the values, so one probe per
thread count and resolution, with random inputs and exactly the calls the step makes, says whether
batching keeps every bit; where it does not, the step keeps its separate calls. Compiling the codec
(compiled.py) swaps its kernels, so it forgets what was probed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

# codec -> {(threads, height, width, device, dtype): batching exact}; its weights do not change the kernels.
_PROBED: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, bool]]" = weakref.WeakKeyDictionary()

Encode = Callable[[torch.Tensor], torch.Tensor]  # images (N, 3, H, W) -> latents (N, C, h, w)
DecodePair = Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]


def batching_is_exact(codec: torch.nn.Module, resolution: tuple[int, int], latent_shape: tuple[int, int, int],
                      encode: Encode, decode_pair: DecodePair, frames_per_chunk: int) -> bool:
    """True when, at the current thread count, one encoder call of a chunk's reference rows and anchor
    rows, and one decoder call of its frames and their anchors, give every row bit for bit as the separate
    calls do. ``encode`` and ``decode_pair(latents (1, C, n, h, w), anchor_latents (n, C, h, w), together)``
    are the step's own calls. Probed once per codec, thread count, resolution, device and dtype."""
    weight = next(codec.parameters())
    key = (torch.get_num_threads(), *resolution, weight.device, weight.dtype)
    known = _PROBED.setdefault(codec, {})
    if key not in known:
        known[key] = _probe(weight, resolution, latent_shape, encode, decode_pair, frames_per_chunk)
    return known[key]


def forget(codec: torch.nn.Module) -> None:
    """Drop what was probed for ``codec`` (its kernels changed: compiled, or back to eager)."""
    _PROBED.pop(codec, None)


@torch.no_grad()
def _probe(weight: torch.Tensor, resolution, latent_shape, encode, decode_pair, n: int) -> bool:
    """``weight``: one of the codec's parameters, whose dtype and device the inputs take."""
    gen = torch.Generator().manual_seed(0)
    like = {"dtype": weight.dtype, "device": weight.device}
    h, w = resolution
    # Open loop: n turned views and the frame they turn (the references), n turned anchor views.
    images = (torch.rand(2 * n + 1, 3, h, w, generator=gen) * 2 - 1).to(**like)
    apart = torch.cat([encode(images[:n + 1]), encode(images[n + 1:])])
    if not torch.equal(apart, encode(images)):
        return False
    c, lh, lw = latent_shape
    latents = torch.randn(1, c, n, lh, lw, generator=gen).to(**like)
    # The anchors' latents laid out as the turned-view cache hands them over: (C, N, h, w) storage.
    anchors = torch.randn(c, n, lh, lw, generator=gen).to(**like).transpose(0, 1)
    frames, reconstructed = decode_pair(latents, anchors, False)
    frames_together, reconstructed_together = decode_pair(latents, anchors, True)
    return torch.equal(frames, frames_together) and torch.equal(reconstructed, reconstructed_together)
