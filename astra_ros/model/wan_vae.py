"""The Wan2.1 VAE as it was trained: 4x causal temporal compression, coded as a stream.

Wan2.1's ``AutoencoderKLWan`` maps 1 + 4k frames to 1 + k latent frames: the first frame alone is
latent 0, then each group of 4 frames is one latent. Its 3D convolutions are causal in time (a
frame's features depend on it and the frames before), so a video can be coded piece by piece if
each causal convolution keeps the last input frames it needs (its *feature cache*: two frames) from
one piece to the next. diffusers runs this cache inside one ``encode``/``decode`` call and clears it
at the end; :class:`WanStreamEncoder` and :class:`WanStreamDecoder` keep it between calls, so the
live node can hand over frames as the camera delivers them and decode each new latent as it is
sampled, with no frame ever coded twice. The result equals coding the whole video at once
(``test_wan_vae``).

The layers are diffusers' own (``AutoencoderKLWan.encoder``/``decoder``, called with their
``feat_cache``/``feat_idx`` arguments), so Wan2.1 VAE weights load under their published names.

Temporal layout (``frames_for_latents``/``latents_for_frames``): latent j covers frames
``[0]`` for j = 0 and ``[4j - 3, 4j]`` otherwise; a decoder turns latent 0 into 1 frame and every
later latent into 4.
"""

from __future__ import annotations

import torch
from torch import nn

TEMPORAL_FACTOR = 4  # frames per latent after the first (Wan2.1: two temporal downsamplings by 2)


def latents_for_frames(frames: int) -> int:
    """Latent frames of ``frames`` pixel frames: 1 + (frames - 1) // 4 (a partial group of 4 waits)."""
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    return 0 if frames == 0 else 1 + (frames - 1) // TEMPORAL_FACTOR


def frames_for_latents(latents: int) -> int:
    """Pixel frames decoded from ``latents`` latent frames: 1 + 4 (latents - 1)."""
    if latents < 0:
        raise ValueError(f"latents must be >= 0, got {latents}")
    return 0 if latents == 0 else 1 + TEMPORAL_FACTOR * (latents - 1)


def _conv_count(module: nn.Module) -> int:
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    return sum(isinstance(m, WanCausalConv3d) for m in module.modules())


def _check_vae(vae: nn.Module) -> None:
    from diffusers import AutoencoderKLWan

    if not isinstance(vae, AutoencoderKLWan):
        raise TypeError(f"expected a diffusers AutoencoderKLWan, got {type(vae).__name__}")
    cfg = vae.config
    if cfg.patch_size is not None or getattr(cfg, "is_residual", False):
        raise ValueError("only the Wan2.1 VAE layout is supported (no patch_size, not residual as Wan 2.2)")
    if list(cfg.temperal_downsample) != [False, True, True]:
        raise ValueError(f"the stream assumes Wan2.1's 4x temporal compression (temperal_downsample "
                         f"[False, True, True]), got {list(cfg.temperal_downsample)}")


class WanStreamEncoder:
    """Frames in as they come, latent frames out as soon as their frames are all in.

    ``push(frames)`` takes (B, 3, T, H, W) in [-1, 1], any T >= 0; it returns the posterior means
    (raw, un-normalised latents, as ``AutoencoderKLWan.encode(...).latent_dist.mode()``) of the
    latents completed by these frames, (B, C, n, H/8, W/8) with n possibly 0. Frames of an
    unfinished group of 4 wait inside (``pending``). The encoder runs once per latent, on that
    latent's frames only: the frames before reach it through the cached causal convolutions.
    """

    def __init__(self, vae: nn.Module) -> None:
        _check_vae(vae)
        self.vae = vae
        self.reset()

    def reset(self) -> None:
        """Start a new video (the next frame is frame 0)."""
        self._cache: list = [None] * _conv_count(self.vae.encoder)
        self._pending: torch.Tensor | None = None
        self.frames_seen = 0
        self.latents_out = 0

    @property
    def pending(self) -> int:
        """Frames received that do not yet make a whole latent."""
        return 0 if self._pending is None else self._pending.shape[2]

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, T, H, W), got {tuple(frames.shape)}")
        if self._pending is not None and (frames.shape[0], *frames.shape[3:]) != (
                self._pending.shape[0], *self._pending.shape[3:]):
            raise ValueError(f"frames {tuple(frames.shape)} do not continue the stream's "
                             f"{tuple(self._pending.shape)}; reset() for a new video")
        buffer = frames if self._pending is None else torch.cat([self._pending, frames], dim=2)
        outs = []
        while buffer.shape[2] > 0:
            need = 1 if self.latents_out == 0 else TEMPORAL_FACTOR
            if buffer.shape[2] < need:
                break
            group, buffer = buffer[:, :, :need], buffer[:, :, need:]
            # feat_idx counts the convolutions of one pass; each pass starts from the first
            h = self.vae.encoder(group, feat_cache=self._cache, feat_idx=[0])
            outs.append(self.vae.quant_conv(h))
            self.latents_out += 1
        self.frames_seen += frames.shape[2]
        self._pending = buffer if buffer.shape[2] > 0 else None
        if not outs:
            b, _, _, h, w = frames.shape
            f = self.vae.spatial_compression_ratio
            return frames.new_zeros(b, self.vae.config.z_dim, 0, h // f, w // f)
        moments = torch.cat(outs, dim=2)
        return moments[:, : self.vae.config.z_dim]  # the posterior mean (mode); the rest is its log-variance


class WanStreamDecoder:
    """Latent frames in as they are sampled, pixel frames out: 1 for the first latent, 4 for each later one.

    ``push(latents)`` takes raw latents (B, C, n, h, w), any n >= 0, and returns (B, 3, T, 8h, 8w)
    clamped to [-1, 1] as ``AutoencoderKLWan.decode`` does.
    """

    def __init__(self, vae: nn.Module) -> None:
        _check_vae(vae)
        self.vae = vae
        self.reset()

    def reset(self) -> None:
        self._cache: list = [None] * _conv_count(self.vae.decoder)
        self.latents_seen = 0

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.vae.config.z_dim:
            raise ValueError(f"latents must be (B, {self.vae.config.z_dim}, n, h, w), got {tuple(latents.shape)}")
        x = self.vae.post_quant_conv(latents)
        outs = []
        for i in range(latents.shape[2]):
            first = self.latents_seen == 0
            outs.append(self.vae.decoder(x[:, :, i: i + 1], feat_cache=self._cache, feat_idx=[0], first_chunk=first))
            self.latents_seen += 1
        if not outs:
            b, _, _, h, w = latents.shape
            f = self.vae.spatial_compression_ratio
            return latents.new_zeros(b, 3, 0, h * f, w * f)
        return torch.cat(outs, dim=2).clamp(-1.0, 1.0)
