"""Analytic FLOP counts of the model's parts, from the config alone (``astra-bench``'s figures).

Counted as ``torch.utils.flop_counter`` counts: 2 FLOPs per multiply-accumulate of every
convolution, linear layer and matrix product, biases, norms and activations not counted. Attention
(``softmax(QK^T) V``: ``4 * queries * keys * width``) is included here but given separately: the CPU
flash kernel that ``scaled_dot_product_attention`` runs has no FLOP formula in the counter, so a
counter's total lacks exactly that part (a test checks the rest equals the counter's).

Parts: :func:`transformer_pass` (one forward of ``L`` query tokens over ``P`` cached ones),
:func:`codec_encode` / :func:`codec_decode` (one frame; ``autoencoder_kl`` codecs only) and
:func:`anchor_decoder` (one frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import AstraConfig, CodecConfig


@dataclass
class Flops:
    """A FLOP count split into dense (convolutions, linear layers) and attention."""

    dense: int = 0
    attention: int = 0

    @property
    def total(self) -> int:
        return self.dense + self.attention

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.dense + other.dense, self.attention + other.attention)

    def __mul__(self, k: int) -> "Flops":
        return Flops(self.dense * k, self.attention * k)

    __rmul__ = __mul__


def _conv(cin: int, cout: int, k: int, h: int, w: int) -> int:
    """A k x k convolution producing (cout, h, w)."""
    return 2 * cin * cout * k * k * h * w


def _attention(queries: int, keys: int, width: int) -> int:
    """QK^T and the weighted sum of V, summed over heads of total ``width``."""
    return 4 * queries * keys * width


def transformer_pass(cfg: AstraConfig, tokens: int, past_tokens: int, batch: int = 1,
                     split: tuple[int, int] | None = None) -> Flops:
    """One :class:`AstraTransformer` forward of ``tokens`` query tokens (whole frames) attending to
    ``past_tokens`` cached ones and to themselves, for a batch of ``batch``. ``split`` (history
    tokens, dropped past tokens): a fused append + predict pass, whose first tokens attend to the past
    and themselves, the rest to the past less the dropped tokens and all ``tokens``."""
    if tokens % cfg.tokens_per_frame:
        raise ValueError(f"tokens must be whole frames of {cfg.tokens_per_frame}, got {tokens}")
    d, f = cfg.inner_dim, tokens // cfg.tokens_per_frame
    patch = cfg.codec.latent_channels * math.prod(cfg.patch_size)
    dense = 2 * tokens * patch * d  # patch embedding
    dense += 2 * f * (cfg.freq_dim * d + d * d + d * 6 * d)  # time embedding, per frame
    per_block = 2 * tokens * (cfg.action_dim * d + 5 * d * d + 2 * d * cfg.ffn_dim)  # action, q k v out adapter, ffn
    if cfg.text_dim:
        raise ValueError("transformer_pass counts models without cross-attention (text_dim 0)")
    dense += cfg.num_layers * per_block + 2 * tokens * d * patch  # blocks, output projection
    if split is None:
        attention = cfg.num_layers * _attention(tokens, past_tokens + tokens, d)
    else:
        history, drop = split
        attention = cfg.num_layers * (_attention(history, past_tokens + history, d)
                                      + _attention(tokens - history, past_tokens - drop + tokens, d))
    return Flops(dense, attention) * batch


def _resnet(cin: int, cout: int, h: int, w: int) -> int:
    """A diffusers ResnetBlock2D: two 3x3 convolutions, a 1x1 shortcut when the width changes."""
    return _conv(cin, cout, 3, h, w) + _conv(cout, cout, 3, h, w) + (_conv(cin, cout, 1, h, w) if cin != cout else 0)


def _mid_block(c: int, h: int, w: int) -> Flops:
    """UNetMidBlock2D: resnet, single-head self-attention over the h*w cells, resnet."""
    dense = 2 * _resnet(c, c, h, w) + 4 * 2 * h * w * c * c  # to_q, to_k, to_v, to_out
    return Flops(dense, _attention(h * w, h * w, c))


def _check_kl(codec: CodecConfig) -> None:
    if codec.kind != "autoencoder_kl":
        raise ValueError(f"analytic codec FLOPs cover autoencoder_kl codecs, not {codec.kind!r}")


def codec_encode(codec: CodecConfig, height: int, width: int) -> Flops:
    """One frame (3, height, width) through diffusers' AutoencoderKL encoder and quant_conv."""
    _check_kl(codec)
    widths, latent = codec.block_out_channels, codec.latent_channels
    h, w = height, width
    dense = _conv(3, widths[0], 3, h, w)
    cin = widths[0]
    for i, c in enumerate(widths):
        for _ in range(codec.layers_per_block):
            dense += _resnet(cin, c, h, w)
            cin = c
        if i + 1 < len(widths):  # stride-2 3x3 downsampling
            h, w = h // 2, w // 2
            dense += _conv(c, c, 3, h, w)
    out = Flops(dense) + _mid_block(cin, h, w)
    return out + Flops(_conv(cin, 2 * latent, 3, h, w) + _conv(2 * latent, 2 * latent, 1, h, w))


def codec_decode(codec: CodecConfig, height: int, width: int) -> Flops:
    """One frame's latents through post_quant_conv and the AutoencoderKL decoder to (3, height, width)."""
    _check_kl(codec)
    widths, latent = list(reversed(codec.block_out_channels)), codec.latent_channels
    h, w = height // codec.spatial_factor, width // codec.spatial_factor
    dense = _conv(latent, latent, 1, h, w) + _conv(latent, widths[0], 3, h, w)
    out = _mid_block(widths[0], h, w)
    cin = widths[0]
    for i, c in enumerate(widths):
        for _ in range(codec.layers_per_block + 1):
            dense += _resnet(cin, c, h, w)
            cin = c
        if i + 1 < len(widths):  # nearest 2x upsampling, then a 3x3 convolution
            h, w = 2 * h, 2 * w
            dense += _conv(c, c, 3, h, w)
    return out + Flops(dense + _conv(cin, 3, 3, h, w))


def anchor_decoder(cfg: AstraConfig, height: int, width: int) -> Flops:
    """One frame through :class:`~astra_ros.model.anchor_decoder.AnchorDecoder` (both pyramids included)."""
    if not cfg.anchor_decoder_width:
        return Flops()
    levels = int(math.log2(cfg.codec.spatial_factor))
    widths = [max(8, cfg.anchor_decoder_width * (1 + level) // 4) for level in range(levels + 1)]
    size = lambda level: (height // 2 ** level, width // 2 ** level)  # noqa: E731
    dense = 2 * _conv(3, widths[0], 3, *size(0))  # pyramids of the anchor and the coarse decoding
    dense += 2 * sum(_conv(widths[lv - 1], widths[lv], 3, *size(lv)) for lv in range(1, levels + 1))
    search, top, c = (2 * cfg.anchor_decoder_search + 1) ** 2, widths[-1], cfg.codec.latent_channels
    dense += (_conv(2 * c + 2 * search + 2 * top, 2 * top, 3, *size(levels)) + _conv(2 * top, 2 * top, 3, *size(levels))
              + _conv(2 * top, top, 3, *size(levels)) + _conv(top, 2, 3, *size(levels)))
    for lv in range(levels - 1, 0, -1):
        cl = widths[lv]
        dense += (_conv(widths[lv + 1] + 2 * cl + 9, 2 * cl, 3, *size(lv)) + _conv(2 * cl, cl, 3, *size(lv))
                  + _conv(cl, 2, 3, *size(lv)))
    dense += _conv(widths[1] + 9, widths[0], 3, *size(0)) + _conv(widths[0], 1 + 3, 3, *size(0))  # blend, correction
    return Flops(dense)
