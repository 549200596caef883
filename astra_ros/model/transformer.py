"""The Action-aware Flow Transformer (AFT): a Wan2.1-style DiT with block-causal attention,
per-token flow time, a KV cache interface and the ACT-Adapter.

Parameter names follow diffusers' ``WanTransformer3DModel`` wherever the layer is the same
(see ``wan_import.py``), so Wan2.1 weights in diffusers format load with a documented key map.
New in Astra: ``blocks.N.act_adapter`` (identity-initialised linear after self-attention),
``blocks.N.action_proj`` (action features into the block, zero-initialised) and
``action_encoder`` (MoAE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import apply_rope, rope_angles, rope_tables
from .config import AstraConfig
from .moae import MixtureOfActionExperts, RoutingInfo

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values: (B, heads, L, head_dim)

# Wan feeds its time embedding with timesteps in [0, 1000]; flow time t in [0, 1] is scaled to it.
TIMESTEP_SCALE = 1000.0


# ----------------------------------------------------------------------------- embedders

def timestep_sinusoid(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) -> (N, dim) sinusoidal embedding, cos first (diffusers Timesteps, flip_sin_to_cos=True)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps[:, None].float() * exponent.exp()[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class TextProjection(nn.Module):
    """Context embedding for optional cross-attention (diffusers PixArtAlphaTextProjection, gelu_tanh)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class ConditionEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int, text_dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_embedder = TimestepEmbedding(freq_dim, dim)
        self.act_fn = nn.SiLU()
        self.time_proj = nn.Linear(dim, 6 * dim)
        self.text_embedder = TextProjection(text_dim, dim) if text_dim > 0 else None

    def forward(self, flow_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """flow_t (B, F) -> temb (B, F, dim), modulation (B, F, 6, dim)."""
        b, f = flow_t.shape
        temb = self.time_embedder(timestep_sinusoid(flow_t.flatten() * TIMESTEP_SCALE, self.freq_dim))
        temb = temb.unflatten(0, (b, f))
        return temb, self.time_proj(self.act_fn(temb)).unflatten(-1, (6, -1))


# ----------------------------------------------------------------------------- block

class FeedForward(nn.Module):
    """GELU(tanh) MLP with diffusers' parameter names ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        proj = nn.Module()
        proj.proj = nn.Linear(dim, hidden)
        self.net = nn.ModuleList([proj, nn.Dropout(0.0), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class Attention(nn.Module):
    """Multi-head attention with RMS-normed q/k across heads (Wan's ``rms_norm_across_heads``)."""

    def __init__(self, dim: int, heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        self.norm_q = nn.RMSNorm(inner, eps=eps)
        self.norm_k = nn.RMSNorm(inner, eps=eps)

    def project_kv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> KV:
        k = self.norm_k(self.to_k(x)).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, L, d)
        v = self.to_v(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, L, d)
        if rope is not None:
            k = apply_rope(k, *rope)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        past_kv: KV | None = None,
        context: torch.Tensor | None = None,
        split: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """x (B, L, dim) -> (B, L, dim) and this call's own keys/values (for the cache).

        Self-attention when ``context`` is None: keys are ``past_kv`` followed by x's own;
        ``mask`` (L, Lpast + L) bool. Cross-attention otherwise (no rotary, no mask).
        ``split`` (Lh, drop): the first Lh tokens are a history chunk being appended, the rest the
        chunk after it: the first attend to ``past_kv`` and themselves, the rest to ``past_kv`` less
        its first ``drop`` tokens (evicted by the append), the history chunk and themselves. Two
        attentions without a mask, each the one the separate passes run.
        """
        b = x.shape[0]
        q = self.norm_q(self.to_q(x)).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, L, d)
        if context is None:
            if rope is not None:
                q = apply_rope(q, *rope)
            k, v = self.project_kv(x, rope)
            own = (k, v)
            if split is not None:
                return self._split_attention(q, k, v, past_kv, *split), own
            if past_kv is not None:
                pk, pv = past_kv
                k = torch.cat([pk.expand(b, -1, -1, -1), k], dim=2)  # (B, H, Lpast + L, d)
                v = torch.cat([pv.expand(b, -1, -1, -1), v], dim=2)
        else:
            k, v = self.project_kv(context, None)
            own = (k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, d)
        return self.to_out[0](out.transpose(1, 2).flatten(2)), own

    def _split_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_kv: KV | None,
                         history: int, drop: int) -> torch.Tensor:
        b = q.shape[0]
        pk, pv = past_kv if past_kv is not None else (k[:, :, :0], v[:, :, :0])
        pk, pv = pk.expand(b, -1, -1, -1), pv.expand(b, -1, -1, -1)
        hk, hv = k[:, :, :history], v[:, :, :history]
        first = F.scaled_dot_product_attention(q[:, :, :history], torch.cat([pk, hk], dim=2), torch.cat([pv, hv], dim=2))
        rest = F.scaled_dot_product_attention(q[:, :, history:], torch.cat([pk[:, :, drop:], k], dim=2),
                                              torch.cat([pv[:, :, drop:], v], dim=2))
        out = torch.cat([first, rest], dim=2)
        return self.to_out[0](out.transpose(1, 2).flatten(2))


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).type_as(x)


class AstraBlock(nn.Module):
    def __init__(self, config: AstraConfig) -> None:
        super().__init__()
        dim, eps = config.inner_dim, config.eps
        self.eps = eps
        # 1. Self-attention (norm1 has no parameters: AdaLN provides scale/shift)
        self.attn1 = Attention(dim, config.num_attention_heads, config.attention_head_dim, eps)
        self.act_adapter = nn.Linear(dim, dim)  # ACT-Adapter: identity at init
        self.action_proj = nn.Linear(config.action_dim, dim)  # action features into this block: zero at init
        # 2. Optional cross-attention on a context embedding
        self.attn2 = None
        self.norm2 = None
        if config.text_dim > 0:
            self.attn2 = Attention(dim, config.num_attention_heads, config.attention_head_dim, eps)
            self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        # A Wan text cross-attention folded for a fixed all-zero context: a constant (config.context_bias)
        self.context_bias = nn.Parameter(torch.zeros(dim)) if config.context_bias else None
        # 3. Feed-forward
        self.ffn = FeedForward(dim, config.ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        action_tokens: torch.Tensor | None,
        mask: torch.Tensor | None,
        past_kv: KV | None,
        context: torch.Tensor | None,
        split: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """x (B, L, dim), L = F frames x n tokens; modulation (B, F, 6, dim) per frame;
        action_tokens (B, L, action_dim); ``split``: see :meth:`Attention.forward`.

        The modulation is applied per frame by broadcasting over a frame's tokens: the same values
        as repeating it per token, without materialising a (B, L, 6, dim) tensor in every block
        (that copy was a third of a training step on the CPU).
        """
        b, length, dim = x.shape
        frames = modulation.shape[1]
        per_frame = lambda t: t.view(b, frames, length // frames, dim)  # noqa: E731
        shift, scale, gate, c_shift, c_scale, c_gate = (
            (self.scale_shift_table[None] + modulation)[:, :, None].unbind(dim=3))  # each (B, F, 1, dim)
        # 1. Self-attention with actions added to its modulated input, then the ACT-Adapter
        h = (per_frame(_layer_norm(x, self.eps)) * (1 + scale) + shift).view(b, length, dim)
        if action_tokens is not None:
            h = h + self.action_proj(action_tokens)
        attn, kv = self.attn1(h, rope=rope, mask=mask, past_kv=past_kv, split=split)
        x = x + (per_frame(self.act_adapter(attn)) * gate).view(b, length, dim)
        # 2. Cross-attention
        if self.attn2 is not None:
            h = self.norm2(x.float()).type_as(x)
            x = x + self.attn2(h, context=context)[0]
        elif self.context_bias is not None:
            x = x + self.context_bias
        # 3. Feed-forward
        h = (per_frame(_layer_norm(x, self.eps)) * (1 + c_scale) + c_shift).view(b, length, dim)
        x = x + (per_frame(self.ffn(h)) * c_gate).view(b, length, dim)
        return x, kv


# ----------------------------------------------------------------------------- model

class AstraTransformer(nn.Module):
    """Predicts the flow velocity of every latent frame; history and target frames in one sequence."""

    def __init__(self, config: AstraConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.inner_dim
        c = config.codec.latent_channels
        # A Conv3d holds the weights (Wan's names and layout); ``_patchify`` applies it as a matmul.
        self.patch_embedding = nn.Conv3d(c, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.condition_embedder = ConditionEmbedder(dim, config.freq_dim, config.text_dim)
        self.action_encoder = MixtureOfActionExperts(
            config.modalities, config.action_dim, config.num_experts, config.expert_hidden_dim,
            motion=config.action_motion,
        )
        # End-effector maps per token (model/arm_map.py) into the action features; None without them.
        cells = config.arm_map_cells
        self.arm_map = nn.Linear(cells * cells, config.action_dim) if cells else None
        self.blocks = nn.ModuleList(AstraBlock(config) for _ in range(config.num_layers))
        self.proj_out = nn.Linear(dim, c * math.prod(config.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for block in self.blocks:
            # ACT-Adapter starts as the identity so a pretrained backbone is unchanged at step 0.
            nn.init.eye_(block.act_adapter.weight)
            nn.init.zeros_(block.act_adapter.bias)
            # Action features enter through zero so actions cannot change the output at step 0.
            nn.init.zeros_(block.action_proj.weight)
            nn.init.zeros_(block.action_proj.bias)
        if self.arm_map is not None:  # maps enter through zero: a checkpoint without them is unchanged
            nn.init.zeros_(self.arm_map.weight)
            nn.init.zeros_(self.arm_map.bias)

    def add_arm_maps(self, features: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        """Per-frame action features (B, F, A) -> per-token (B, F, n, A) with each token's end-effector map
        ``maps`` (B, F, n, cells**2) projected in (None: zero maps). Without ``arm_map_cells`` the features
        are returned as they are."""
        if self.arm_map is None:
            return features
        n = self.config.tokens_per_frame
        tokens = features[:, :, None, :].expand(*features.shape[:2], n, features.shape[-1])
        if maps is None:
            return tokens
        return tokens + self.arm_map(maps.to(features.dtype))

    def _patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """The patch embedding as one matmul over non-overlapping patches: (B, C, F, h, w) -> (B, L, dim),
        tokens in (frame, row, col) order. The same function as the Conv3d (its stride is its kernel),
        but not oneDNN's bf16 convolution, which on AMX CPUs returns wrong values for 16-channel 4x4
        patches (relative error above 1: a bf16 run trained on scrambled tokens; pytorch#169688)."""
        b, c, f, h, w = latents.shape
        p_t, p_h, p_w = self.config.patch_size
        patches = latents.reshape(b, c, f // p_t, p_t, h // p_h, p_h, w // p_w, p_w)
        patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4).flatten(1, 3)  # (B, L, C*p_t*p_h*p_w)
        weight = self.patch_embedding.weight
        return F.linear(patches, weight.reshape(weight.shape[0], -1), self.patch_embedding.bias)

    @torch.no_grad()
    def make_blocks_identity(self, first: int) -> None:
        """Blocks ``first``.. pass their input through unchanged: the outputs of their ACT-Adapter and
        feed-forward (the only paths into the residual stream) zeroed. How a deeper model starts
        as a shallower checkpoint's exact function (its extra blocks then learn from there)."""
        for block in self.blocks[first:]:
            for layer in (block.act_adapter, block.ffn.net[2]):
                layer.weight.zero_()
                layer.bias.zero_()

    @torch.no_grad()
    def zero_output_head(self) -> None:
        """Zero the output projection: the network then outputs 0 everywhere (with ``prediction: x0``
        and ``latent_delta``, an exact copy of the last frame; ``reset_output_head`` in a recipe)."""
        self.proj_out.weight.zero_()
        self.proj_out.bias.zero_()

    def encode_actions(
        self, actions: torch.Tensor, modality_ids: torch.Tensor, dropped: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RoutingInfo]:
        """Per-frame action features (B, F, action_dim) through MoAE (``motion``: each frame's motion,
        used when the config has ``action_motion``)."""
        return self.action_encoder(actions, modality_ids, dropped, motion)

    def forward(
        self,
        latents: torch.Tensor,
        flow_t: torch.Tensor,
        frame_pos: torch.Tensor,
        action_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_kv: list[KV] | None = None,
        context: torch.Tensor | None = None,
        split: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, list[KV]]:
        """Velocity for every frame of ``latents`` and the keys/values of its tokens per layer.

        ``split`` (history frames, dropped past tokens): the first frames are a history chunk being
        appended and the rest the chunk after it, in one pass that gives both exactly what two
        passes would (see :meth:`Attention.forward`; no mask, no cross-attention).

        latents (B, C, F, h, w); flow_t (B, F) in [0, 1]; frame_pos (F,) absolute frame indices;
        action_features (B, F, action_dim), per token (B, F, n, action_dim), or None; attention_mask
        (L, Lpast + L) bool or None (None = full attention); past_kv per layer (B or 1, heads, Lpast, head_dim) from the cache;
        context (B, S, text_dim) when the model has cross-attention.
        """
        cfg = self.config
        b, _, f, h, w = latents.shape
        _, p_h, p_w = cfg.patch_size
        rows, cols = h // p_h, w // p_w
        n = rows * cols  # tokens per frame
        if flow_t.shape != (b, f):
            raise ValueError(f"flow_t must be (B, F) = {(b, f)}, got {tuple(flow_t.shape)}")
        if (context is None) != (cfg.text_dim == 0):
            raise ValueError("context is required exactly when the model has cross-attention (text_dim > 0)")

        # 1. Patchify, rotary angles, per-token time modulation
        x = self._patchify(latents)  # (B, L, dim)
        angles = rope_angles(frame_pos, rows, cols, cfg.attention_head_dim, cfg.rope_theta)
        rope = tuple(t.to(x.dtype).to(x.device) for t in rope_tables(angles))  # (L, d) each
        if split is None:
            temb, modulation = self.condition_embedder(flow_t)  # (B, F, dim), (B, F, 6, dim): per frame
        else:  # each chunk's as its own pass computes it (a matmul's rounding can depend on its rows)
            parts = [self.condition_embedder(t) for t in flow_t.split([split[0], f - split[0]], dim=1)]
            temb, modulation = (torch.cat(p, dim=1) for p in zip(*parts))
            if attention_mask is not None or context is not None:
                raise ValueError("a split pass takes no attention mask and no context")
            split = (split[0] * n, split[1])
        if action_features is None:
            action_tokens = None
        elif action_features.ndim == 4:  # per token (add_arm_maps): (B, F, n, A)
            action_tokens = action_features.flatten(1, 2)
        else:
            action_tokens = action_features.repeat_interleave(n, dim=1)
        if context is not None:
            context = self.condition_embedder.text_embedder(context)

        # 2. Blocks
        new_kv: list[KV] = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, modulation, rope, action_tokens, attention_mask,
                          past_kv[i] if past_kv is not None else None, context, split)
            new_kv.append(kv)

        # 3. Output norm, projection, unpatchify
        shift, scale = (self.scale_shift_table[None] + temb[:, :, None])[:, :, None].unbind(dim=3)  # (B, F, 1, dim)
        x = (_layer_norm(x, cfg.eps).view(b, f, n, -1) * (1 + scale) + shift).flatten(1, 2)
        x = self.proj_out(x)  # (B, L, C * p_t * p_h * p_w)
        x = x.reshape(b, f, rows, cols, 1, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3), new_kv
