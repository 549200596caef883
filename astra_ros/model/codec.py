"""Latent codec: frames <-> latents through a diffusers autoencoder, one interface for both kinds.

Frames are coded one by one (``temporal_factor`` 1) so a stream can be cut at any frame.
Latents are normalised per channel with ``latent_mean``/``latent_std`` (saved with the weights)
so the flow model sees roughly unit-variance inputs whatever the autoencoder.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import CodecConfig


class LatentCodec(nn.Module):
    """``encode(frames [B,T,3,H,W] in [-1,1]) -> [B,C,T,h,w]`` and ``decode`` back."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        if config.kind == "autoencoder_kl":
            from diffusers import AutoencoderKL

            levels = len(config.block_out_channels)
            self.vae = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels,
                block_out_channels=config.block_out_channels,
                layers_per_block=config.layers_per_block,
                latent_channels=config.latent_channels,
                norm_num_groups=config.norm_num_groups,
            )
        elif config.kind == "wan":
            from diffusers import AutoencoderKLWan

            self.vae = AutoencoderKLWan(
                base_dim=config.base_dim,
                z_dim=config.latent_channels,
                dim_mult=list(config.dim_mult),
                num_res_blocks=config.num_res_blocks,
                temperal_downsample=list(config.temporal_downsample),
                latents_mean=[0.0] * config.latent_channels,
                latents_std=[1.0] * config.latent_channels,
            )
        else:  # config validation makes this unreachable
            raise ValueError(f"unknown codec kind {config.kind!r}")
        # Per-channel statistics of the raw latents, measured when the codec is trained.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    def _raw_posterior(self, images: torch.Tensor):
        # images: (N, 3, H, W)
        if self.config.kind == "autoencoder_kl":
            return self.vae.encode(images).latent_dist
        self.vae.clear_cache()
        return self.vae.encode(images.unsqueeze(2)).latent_dist  # Wan wants (N, 3, 1, H, W)

    def encode(self, frames: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frames (B, T, 3, H, W) in [-1, 1] -> normalised latents (B, C, T, h, w).

        ``sample`` draws from the posterior (codec training); otherwise its mean is used.
        """
        b, t = frames.shape[:2]
        dist = self._raw_posterior(frames.flatten(0, 1))
        z = dist.sample(generator) if sample else dist.mode()
        if z.ndim == 5:  # Wan: (N, C, 1, h, w)
            z = z[:, :, 0]
        z = (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]
        return z.unflatten(0, (b, t)).transpose(1, 2).contiguous()  # (B, C, T, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, T, h, w) -> frames (B, T, 3, H, W) in [-1, 1]."""
        b, _, t = latents.shape[:3]
        z = latents.transpose(1, 2).flatten(0, 1)  # (B*T, C, h, w)
        z = z * self.latent_std[:, None, None] + self.latent_mean[:, None, None]
        if self.config.kind == "autoencoder_kl":
            images = self.vae.decode(z).sample
        else:
            self.vae.clear_cache()
            images = self.vae.decode(z.unsqueeze(2)).sample[:, :, 0]
        return images.clamp(-1, 1).unflatten(0, (b, t))

    @torch.no_grad()
    def set_latent_statistics(self, frames: torch.Tensor) -> None:
        """Measure per-channel mean/std of the raw latents of ``frames`` (B, T, 3, H, W)."""
        self.latent_mean.zero_()
        self.latent_std.fill_(1.0)
        z = self.encode(frames)  # raw, since the statistics are identity now
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
        self.latent_std.copy_(z.std(dim=(0, 2, 3, 4)).clamp_min(1e-4))
