"""Streaming inference: the KV cache and the chunk-by-chunk rollout that owns it.

A stream is a sequence of history chunks (observed or predicted latents, noised to the fixed
``history_noise`` level) followed by the chunk being denoised. With the cache, each history
chunk's keys/values are computed once when it is appended and reused by every later chunk;
the cache keeps the last ``max_history_chunks`` chunks, so the cost of a chunk does not grow
with the stream length. Without the cache (``use_cache=False``, the reference and benchmark
baseline) every denoising step recomputes the whole history with the block-causal mask; both
give the same output for the same noise.
"""

from __future__ import annotations

from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .attention import block_causal_mask
from .config import AstraConfig
from .flow import add_noise, guided_velocity, sampling_schedule, velocity_from_output
from .transformer import KV, AstraTransformer


@dataclass
class HistoryChunk:
    """One appended history chunk."""

    frame_start: int  # absolute frame index of its first latent frame (rotary position)
    noise_level: float  # flow time the chunk was noised to
    kv: list[KV] | None  # per layer (batch, heads, tokens, head_dim); None without the cache
    latents: torch.Tensor | None  # noised latents (batch, C, chunk_frames, h, w); kept without the cache
    features: torch.Tensor | None  # action features (batch, chunk_frames, action_dim); kept without the cache

    @property
    def batch(self) -> int:
        ref = self.kv[0][0] if self.kv is not None else self.latents
        return ref.shape[0]


class KVCache:
    """Bounded per-layer keys/values of the last ``max_chunks`` history chunks.

    Entries may have batch 1 (shared live history) or B (per-candidate); ``materialize`` joins
    them for a query batch, expanding shared entries without copying them per candidate.
    """

    def __init__(self, num_layers: int, max_chunks: int | None) -> None:
        self.num_layers = num_layers
        self.max_chunks = max_chunks
        self.chunks: deque[HistoryChunk] = deque()

    def __len__(self) -> int:
        return len(self.chunks)

    def append(self, chunk: HistoryChunk) -> None:
        self.chunks.append(chunk)
        while self.max_chunks is not None and len(self.chunks) > self.max_chunks:
            self.chunks.popleft()  # oldest out; rotary positions of the rest are absolute, so unchanged

    def fork(self) -> "KVCache":
        """A cache that starts with the same (shared, not copied) entries."""
        other = KVCache(self.num_layers, self.max_chunks)
        other.chunks = deque(self.chunks)
        return other

    def materialize(self, batch: int) -> list[KV] | None:
        """Per layer (batch, heads, cached tokens, head_dim), or None when empty."""
        if not self.chunks:
            return None
        out = []
        for layer in range(self.num_layers):
            ks = [_tile(c.kv[layer][0], batch) for c in self.chunks]
            vs = [_tile(c.kv[layer][1], batch) for c in self.chunks]
            out.append((torch.cat(ks, dim=2), torch.cat(vs, dim=2)))
        return out

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for c in self.chunks for kv in c.kv for t in kv)


def draw_noise(shape: tuple[int, ...], generator: torch.Generator | None, shared: bool) -> torch.Tensor:
    """Gaussian noise; ``shared`` draws one row and repeats it over the batch."""
    if not shared:
        return torch.randn(shape, generator=generator)
    return torch.randn((1, *shape[1:]), generator=generator).expand(shape).contiguous()


def _tile(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Bring a tensor with batch 1 or a divisor of ``batch`` to ``batch`` rows (tiling whole copies)."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    if batch % x.shape[0]:
        raise ValueError(f"cannot tile a batch of {x.shape[0]} to {batch}")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


class StreamingRollout:
    """Owns the history of one stream (its cache or its latents) and predicts chunk after chunk."""

    def __init__(self, model: AstraTransformer, use_cache: bool = True,
                 compute_dtype: torch.dtype | None = None) -> None:
        self.model = model
        self.config: AstraConfig = model.config
        self.use_cache = use_cache
        # None: float32. torch.bfloat16: the transformer runs under autocast (weights stay float32;
        # cached keys/values are stored in bfloat16; the sampler's state stays float32).
        self.compute_dtype = compute_dtype
        self._cache = KVCache(self.config.num_layers, self.config.max_history_chunks if use_cache else None)
        # A history chunk appended with ``defer``, not yet through the transformer: (noised latents,
        # flow times, features, frame_start, noise level). The next prediction computes it in its own pass; anything
        # else that reads the cache computes it alone first.
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, float] | None = None
        self.next_frame = 0  # absolute latent-frame index of the next chunk
        # Clean newest latent frame of the history (batch 1 or B, C, 1, h, w): what a chunk's
        # change is added to when the config predicts latent deltas.
        self.reference: torch.Tensor | None = None

    def reset(self) -> None:
        self._cache = KVCache(self.config.num_layers, self.config.max_history_chunks if self.use_cache else None)
        self._pending = None
        self.next_frame = 0
        self.reference = None

    @property
    def cache(self) -> KVCache:
        """The history's keys/values, a deferred chunk included (computed now if it was pending)."""
        self._flush()
        return self._cache

    @cache.setter
    def cache(self, value: KVCache) -> None:
        self._cache, self._pending = value, None

    def fork(self) -> "StreamingRollout":
        """An independent stream that continues from the same history (shared, not recomputed; a
        deferred chunk stays deferred in both)."""
        other = StreamingRollout(self.model, self.use_cache, self.compute_dtype)
        other._cache = self._cache.fork()
        other._pending = self._pending
        other.next_frame = self.next_frame
        other.reference = self.reference
        return other

    @property
    def num_history_chunks(self) -> int:
        count = len(self._cache) + (self._pending is not None)
        return count if self._cache.max_chunks is None else min(count, self._cache.max_chunks)

    def _flush(self) -> None:
        """Run a deferred history chunk through the transformer alone."""
        if self._pending is None:
            return
        noised, t, features, frame_start, level = self._pending
        self._pending = None
        pos = torch.arange(frame_start, frame_start + self.config.chunk_frames)
        _, kv = self._run(noised, t, pos, features, past_kv=self._cache.materialize(noised.shape[0]))
        self._cache.append(HistoryChunk(frame_start, level, kv, None, None))

    def _run(self, *args, **kwargs):
        """The transformer's forward, under autocast when a compute dtype is set; velocity in float32."""
        device_type = self.model.scale_shift_table.device.type
        ctx = torch.autocast(device_type, dtype=self.compute_dtype) if self.compute_dtype is not None else nullcontext()
        with ctx:
            v, kv = self.model(*args, **kwargs)
        return v.float(), kv

    def _frame_pos(self) -> torch.Tensor:
        return torch.arange(self.next_frame, self.next_frame + self.config.chunk_frames)

    @torch.no_grad()
    def append_history(
        self, latents: torch.Tensor, features: torch.Tensor, generator: torch.Generator | None = None,
        noise_level: float | None = None, shared_noise: bool = False, noise: torch.Tensor | None = None,
        defer: bool = False,
    ) -> None:
        """Add a finished chunk (B, C, chunk_frames, h, w) with its action features (B, chunk_frames, A).

        The chunk is noised to ``history_noise`` (noise-augmented memory) before the model sees it;
        ``noise`` (same shape) replaces the draw from ``generator`` when given. ``defer``: its pass
        waits for the next prediction, which runs both in one (the same keys, values and velocities,
        bit for bit; tested), or for whatever reads the cache first.
        """
        cfg = self.config
        level = cfg.history_noise if noise_level is None else noise_level
        b, cf = latents.shape[0], cfg.chunk_frames
        noise = (draw_noise(latents.shape, generator, shared_noise) if noise is None else noise).to(latents)
        t = torch.full((b, cf), level, device=latents.device)
        noised = add_noise(latents, noise, t)
        chunk = HistoryChunk(frame_start=self.next_frame, noise_level=level, kv=None, latents=None, features=None)
        self._flush()
        if self.use_cache and defer:
            self._pending = (noised, t, features, self.next_frame, level)
            self.next_frame += cf
            self.reference = latents[:, :, -1:]
            return
        if self.use_cache:
            _, kv = self._run(noised, t, self._frame_pos(), features, past_kv=self._cache.materialize(b))
            chunk.kv = kv
        else:
            chunk.latents, chunk.features = noised, features
        self._cache.append(chunk)
        self.next_frame += cf
        self.reference = latents[:, :, -1:]

    @torch.no_grad()
    def predict_chunk(
        self,
        features: torch.Tensor,
        null_features: torch.Tensor | None,
        guidance_scale: float,
        steps: int,
        generator: torch.Generator | None = None,
        batch: int | None = None,
        shared_noise: bool = False,
        noise: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        delta_scale: float | tuple[float, ...] | None = None,
    ) -> torch.Tensor:
        """Denoise the next chunk from noise; returns clean latents (B, C, chunk_frames, h, w).

        ``features`` (B, chunk_frames, A) are the action features; ``null_features`` the same with
        every action dropped. With guidance (scale != 1) both passes run as one batch of 2B.
        ``shared_noise`` starts every batch row from the same noise (common random numbers);
        ``noise`` (B, C, chunk_frames, h, w) gives the starting noise instead of drawing it.
        ``reference`` (B or 1, C, chunk_frames, h, w): with ``latent_delta``, each frame's reference
        instead of the newest history latent (``rotation_reference``). ``delta_scale``: the change scale,
        one for the chunk or one per frame (default: the config's ``delta_scale``).
        """
        cfg = self.config
        b = features.shape[0] if batch is None else batch
        h, w = cfg.latent_size
        shape = (b, cfg.codec.latent_channels, cfg.chunk_frames, h, w)
        device = features.device
        x = (draw_noise(shape, generator, shared_noise) if noise is None else noise).to(device)
        guided = guidance_scale != 1.0 and null_features is not None
        step_features = torch.cat([features, null_features]) if guided else features
        nb = 2 * b if guided else b
        times = sampling_schedule(steps, cfg.sample_shift).to(device)
        fuse = self._pending is not None and self._pending[0].shape[0] == nb
        past = None
        if self.use_cache and not fuse:
            past = self.cache.materialize(nb)
        for i in range(steps):
            t = torch.full((nb, cfg.chunk_frames), float(times[i]), device=device)
            inp = torch.cat([x, x]) if guided else x
            if fuse and i == 0:
                v = self._fused_velocity(inp, t, step_features)
                past = self._cache.materialize(nb) if steps > 1 else None
            elif self.use_cache:
                v, _ = self._run(inp, t, self._frame_pos(), step_features, past_kv=past)
            else:
                v = self._recompute_velocity(inp, t, step_features)
            v = velocity_from_output(v, inp, float(times[i]), cfg.prediction)
            if guided:
                v = guided_velocity(v[:b], v[b:], guidance_scale)
            x = x + (times[i + 1] - times[i]) * v
        if not cfg.latent_delta:
            return x
        scale = cfg.delta_scale if delta_scale is None else delta_scale
        if isinstance(scale, tuple):  # one per frame: (B, C, frames, h, w) scaled along frames
            x = x * torch.tensor(scale, dtype=x.dtype, device=x.device)[:, None, None]
        elif scale != 1.0:  # shrink the sampled change towards its reference
            x = x * scale
        if reference is not None:
            return x + reference.to(x).expand_as(x)
        if self.reference is None:
            raise ValueError("a model predicting latent deltas needs a history chunk before the first prediction")
        return x + _tile(self.reference.to(x), b)

    def _fused_velocity(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The pending history chunk's pass and the target's first one, as one: appends the chunk's
        keys/values to the cache and returns the target's velocity (B, C, chunk_frames, h, w)."""
        noised, times, hist_features, frame_start, level = self._pending
        self._pending = None
        cf = self.config.chunk_frames
        b = x.shape[0]
        past = self._cache.materialize(b)
        evicted = len(self._cache) + 1 - (self._cache.max_chunks or len(self._cache) + 1)
        drop = sum(c.kv[0][0].shape[2] for c in list(self._cache.chunks)[:max(0, evicted)])
        pos = torch.arange(frame_start, frame_start + 2 * cf)
        v, kv = self._run(torch.cat([noised, x], dim=2), torch.cat([times, t], dim=1), pos,
                          torch.cat([hist_features, features], dim=1), past_kv=past, split=(cf, drop))
        tokens = cf * self.config.tokens_per_frame
        own = [(k[:, :, :tokens].contiguous(), val[:, :, :tokens].contiguous()) for k, val in kv]
        self._cache.append(HistoryChunk(frame_start, level, own, None, None))
        return v[:, :, cf:]

    def _recompute_velocity(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Velocity of the target chunk from one dense pass over the whole history (no cache)."""
        cfg = self.config
        nb, cf, n = x.shape[0], cfg.chunk_frames, cfg.tokens_per_frame
        hist = list(self.cache.chunks)
        if not hist:
            return self._run(x, t, self._frame_pos(), features)[0]
        lat = torch.cat([_tile(c.latents, nb) for c in hist] + [x], dim=2)
        feats = torch.cat([_tile(c.features, nb) for c in hist] + [features], dim=1)
        levels = torch.tensor([c.noise_level for c in hist], device=x.device).repeat_interleave(cf)
        times = torch.cat([levels.expand(nb, -1), t], dim=1)
        pos = torch.cat([torch.arange(c.frame_start, c.frame_start + cf) for c in hist] + [self._frame_pos()])
        ids = torch.arange(len(hist) + 1).repeat_interleave(cf * n)
        is_target = torch.zeros_like(ids, dtype=torch.bool)
        is_target[-cf * n:] = True
        mask = block_causal_mask(ids, is_target, cfg.max_history_chunks).to(x.device)
        v, _ = self._run(lat, times, pos, feats, attention_mask=mask)
        return v[:, :, -cf:]
