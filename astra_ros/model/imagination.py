"""``WorldModel.imagine``: candidate futures from the live history, the live stream left untouched.

A mixin of :class:`~astra_ros.model.world_model.WorldModel` (the rollout API of DESIGN §2), kept in its
own module because it is the planner's whole batched rollout: noise drawn for every candidate first,
sub-batches by a memory estimate, per-chunk turned references, and decoding only the frames asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .streaming import draw_noise
from .view_rotation import ROTATING_MODALITIES, chain_rotations, is_identity, latent_intrinsics, rotate_view


class ImagineCancelled(RuntimeError):
    """``imagine`` stopped early because its ``should_stop`` said so."""


def _stop_if(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise ImagineCancelled("imagination cancelled before it finished")


def checked_guidance(scale: float | None) -> float | None:
    """A guidance scale given to a call: None (the config's) or a finite number >= 0."""
    if scale is None:
        return None
    value = float(scale)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {scale!r}")
    return value


def as_generator(seed: int | None, generator: torch.Generator | None, fallback: torch.Generator) -> torch.Generator:
    if generator is not None:
        return generator
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return fallback


# Memory ``imagine`` may use at once by default (see ``WorldModel.default_imagine_batch``).
IMAGINE_MEMORY_BUDGET_BYTES = 1 << 30


class Imagination:
    """``imagine`` and its batch sizing; mixed into ``WorldModel``, whose state and helpers it uses."""

    @torch.no_grad()
    def imagine(self, actions: np.ndarray, modality: str | None = None, seed: int | None = None,
                generator: torch.Generator | None = None, guidance_scale: float | None = None,
                shared_noise: bool = False, steps: int | None = None, max_batch: int | None = None,
                decode: str | Sequence[int] = "all", should_stop: Callable[[], bool] | None = None,
                draft: bool = False, record: list | None = None) -> np.ndarray:
        """B candidate futures for ``actions`` (B, N, D) from the live history, in one batch.

        Returns uint8 (B, N, H, W, 3). The live stream is not changed: the candidates share its
        cached history and extend private copies of the cache. ``shared_noise`` gives every
        candidate the same noise, so their differences come from the actions alone (common random
        numbers: what a planner or an evaluation comparing candidates wants).

        For planners: ``steps`` overrides the Euler steps per chunk (``denoise_steps``);
        ``max_batch`` splits the candidates into sub-batches of at most that many, run one after
        the other (default: :meth:`default_imagine_batch`, a memory estimate); all noise is drawn
        for the whole batch first, so a split gives the same futures as one batch (up to float
        rounding). ``decode`` picks the frames returned and decoded (the decoder is a large share
        of the cost): ``"all"``, ``"last"`` (B, 1, H, W, 3), or a sequence of frame indices in [0, N).
        ``should_stop`` is polled before every chunk and decode; when it returns True the call raises
        :class:`ImagineCancelled` (a server abandoning a request, a node shutting down). The live
        stream is unchanged either way.

        ``draft`` trades detail for speed, for a planner that scores coarse layout: each chunk's turned
        reference is its newest latents turned on the latent grid (no frame decoded and re-encoded
        between chunks), and the returned frames are the codec's plain decoding (no anchor decoder, so
        blurrier). The futures differ from the full path's; ``bench/plan_eval.py --draft`` measures
        what that does to planning.

        ``record`` (a list): each chunk's ``(reference, latents)`` is appended to it, (B, C, chunk_frames, h, w)
        each (reference None without ``rotation_reference``), sub-batch after sub-batch: what training on the
        model's own rollouts needs (``rollout_history_fraction``).
        """
        self._require_started("imagine")
        self._require_whole_chunks("imagine")
        guidance_scale = checked_guidance(guidance_scale)
        modality = modality or self._modality
        self._check_modality(modality)
        actions_t = self._actions_to_tensor(actions, modality, None, "actions", batched=True)
        b, horizon = actions_t.shape[:2]
        if b == 0 or horizon == 0:
            raise ValueError(f"imagine() needs at least one candidate and one frame, got actions of shape {tuple(actions_t.shape)}")
        frame_indices = self._decode_indices(decode, horizon)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        steps = self.config.denoise_steps if steps is None else int(steps)
        max_batch = (self.default_imagine_batch(guidance_scale, len(frame_indices), modality) if max_batch is None
                     else max_batch)
        if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        max_batch = int(max_batch)
        n = self.frames_per_chunk
        chunks = -(-horizon // n)
        if horizon % n:  # pad the last chunk by holding the last action; extra frames are not returned
            pad = actions_t[:, -1:].expand(b, chunks * n - horizon, -1)
            actions_t = torch.cat([actions_t, pad], dim=1)
        gen = as_generator(seed, generator, self._imagine_generator)
        self._views.clear()  # views are shared within one call (see turned_views.py)
        # Draw every chunk's noise for the whole batch, in the order one batch would draw it, so
        # sub-batches get their own rows of it.
        cfg = self.config
        h, w = cfg.latent_size
        shape = (b, cfg.codec.latent_channels, cfg.chunk_frames, h, w)
        noises = []
        for c in range(chunks):
            noises.append((draw_noise(shape, gen, shared_noise), draw_noise(shape, gen, shared_noise) if c + 1 < chunks else None))
        # Only the chunks holding a requested frame need their latents kept.
        last_needed = max(frame_indices) // n
        out = []
        for lo in range(0, b, max_batch):
            rows = slice(lo, min(b, lo + max_batch))
            branch = self.stream.fork()
            latents = []
            rotations = None
            if self.config.rotation_reference:
                known = modality == self._modality  # another modality's history says nothing of this one's turn
                rotations = chain_rotations(modality, actions_t[rows, :(last_needed + 1) * n],
                                            self._turn_action if known else None, self._turn_rotation)
                newest, newest_rotation = self._turn_frame, self._turn_rotation.expand(rotations.shape[0], 3, 3)
            # Only camera and twist actions turn the view: otherwise no predicted frame need be decoded.
            turns = rotations is not None and modality in ROTATING_MODALITIES and known
            for c in range(last_needed + 1):
                _stop_if(should_stop)
                chunk_actions = actions_t[rows, c * n:(c + 1) * n]
                predict_noise, history_noise = noises[c]
                previous = self._last_action if c == 0 else actions_t[rows, c * n - 1]
                if c == 0 and modality != self._modality:
                    previous = None  # the history's actions are another modality's
                features = self._features(chunk_actions, chunk_actions.shape[0], modality, previous=previous)
                reference = None
                if rotations is not None:
                    relative = newest_rotation.transpose(-1, -2)[:, None] @ rotations[:, c * n:(c + 1) * n]
                    reference = (self._turned_latents(newest[1], relative) if draft
                                 else self._turned_reference(*newest, relative))
                chunk = self._predict(branch, features, gen, guidance_scale, shared_noise,
                                      steps=steps, noise=predict_noise[rows], modality=modality, reference=reference,
                                      first_frame_ahead=self._frames_ahead + c * n + 1)
                if rotations is not None and c < last_needed:  # the next chunk refers to this chunk's newest frame
                    newest_rotation = rotations[:, (c + 1) * n - 1]
                    pixels = (self._decode_float(chunk[:, :, -1:], rotations[:, (c + 1) * n - 1:(c + 1) * n])[:, 0]
                              if turns and not draft else newest[0])  # pixels are only read to be turned
                    newest = (pixels, chunk[:, :, -1])
                latents.append(chunk)
                if record is not None:
                    record.append((reference, chunk))
                if c < last_needed:
                    branch.append_history(chunk, features, noise=history_noise[rows], defer=self.fuse_passes)
            wanted = torch.cat(latents, dim=2)[:, :, frame_indices]
            _stop_if(should_stop)
            if draft:
                out.append(self._to_uint8(self.codec.decode(wanted)))
            else:
                out.append(self._decode(wanted, rotations=rotations[:, frame_indices] if rotations is not None else None))
        return np.concatenate(out, axis=0)

    def _turned_latents(self, latents: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        """Draft references (B, C, n, h, w): ``latents`` (B or 1, C, h, w) turned on the latent grid by
        each frame's rotation ``relative`` (B, n, 3, 3), bilinear with the edge repeated, as
        :func:`rotate_view` turns pixels (the full path encodes the turned pixels instead)."""
        b, n = relative.shape[:2]
        latents = latents.expand(b, -1, -1, -1)
        if is_identity(relative):
            return latents[:, :, None].expand(-1, -1, n, -1, -1)
        K = latent_intrinsics(self.intrinsics, self.codec.spatial_factor)
        turned = rotate_view(latents.repeat_interleave(n, dim=0), K, relative.flatten(0, 1))
        return turned.unflatten(0, (b, n)).transpose(1, 2)

    @staticmethod
    def _decode_indices(decode: str | Sequence[int], horizon: int) -> list[int]:
        if isinstance(decode, str):
            if decode == "all":
                return list(range(horizon))
            if decode == "last":
                return [horizon - 1]
            raise ValueError(f"decode must be 'all', 'last' or a sequence of frame indices, got {decode!r}")
        indices = [int(i) for i in decode]
        if not indices or any(not 0 <= i < horizon for i in indices):
            raise ValueError(f"decode frame indices must be a non-empty sequence in [0, {horizon}), got {list(decode)}")
        return indices

    def default_imagine_batch(self, guidance_scale: float | None = None, decoded_frames: int = 1,
                              modality: str | None = None) -> int:
        """Largest sub-batch ``imagine`` runs at once by default: a memory estimate against
        :data:`IMAGINE_MEMORY_BUDGET_BYTES`, in [1, 256].

        Per candidate (float32): the window's keys/values materialised for every layer, one
        layer's attention scores and MLP activations for the chunk (twice with guidance), and the
        decoder's activations for each decoded frame (about four full-resolution maps of its widest
        level, an overestimate for small models; plus the anchor decoder's, when there is one).
        """
        cfg = self.config
        scale = self.guidance_scale_for(modality) if guidance_scale is None else float(guidance_scale)
        passes = 2 if scale != 1.0 else 1
        inner = cfg.num_attention_heads * cfg.attention_head_dim
        chunk_tokens = cfg.tokens_per_frame * cfg.chunk_frames
        context_tokens = chunk_tokens * (cfg.max_history_chunks + 1)
        transformer = (cfg.num_layers * 2 * context_tokens * inner
                       + cfg.num_attention_heads * chunk_tokens * context_tokens
                       + chunk_tokens * (cfg.ffn_dim + 4 * inner))
        height, width = cfg.resolution
        widest = max(cfg.codec.block_out_channels if cfg.codec.kind == "autoencoder_kl"
                     else [cfg.codec.base_dim * m for m in cfg.codec.dim_mult])
        decoder = 4 * height * width * widest
        if self.anchor_decoder is not None:
            decoder += self.anchor_decoder.activation_floats(height, width)
        per_candidate = 4 * (passes * transformer + decoded_frames * decoder)
        return int(min(256, max(1, IMAGINE_MEMORY_BUDGET_BYTES // per_candidate)))

