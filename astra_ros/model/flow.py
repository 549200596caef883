"""Flow matching: noise schedules, the training loss over all chunks, and guided Euler steps.

Convention (DESIGN §2): ``x_t = (1 - t) * x0 + t * noise``; the network predicts the velocity
``noise - x0``; sampling integrates from t = 1 (noise) to t = 0 (data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .attention import block_causal_mask
from .config import AstraConfig
from .transformer import AstraTransformer


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Shifted time ``shift*t / (1 + (shift-1)*t)``: shift > 1 spends more steps at high noise
    (as diffusers' FlowMatchEulerDiscreteScheduler does)."""
    return shift * t / (1 + (shift - 1) * t)


def sampling_schedule(steps: int, shift: float) -> torch.Tensor:
    """Flow times (steps + 1,) from 1 down to 0 for Euler sampling."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def sample_training_time(shape: tuple[int, ...], shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit-normal flow times in (0, 1), shifted (SD3-style); weights mid-range noise levels."""
    u = torch.sigmoid(torch.randn(shape, generator=generator))
    return shift_time(u, shift)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for per-frame times t (B, F) on latents (B, C, F, h, w)."""
    t = t[:, None, :, None, None].to(x0.dtype)
    return (1 - t) * x0 + t * noise


def chunk_layout(num_chunks: int, chunk_frames: int, history_chunks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frame-level (chunk id, is_target, frame position) for [history 0..H-1, target 0..K-1]."""
    hist = torch.arange(history_chunks).repeat_interleave(chunk_frames)
    targ = torch.arange(num_chunks).repeat_interleave(chunk_frames)
    chunk_ids = torch.cat([hist, targ])
    is_target = torch.cat([torch.zeros_like(hist, dtype=torch.bool), torch.ones_like(targ, dtype=torch.bool)])
    frame_pos = torch.cat([torch.arange(history_chunks * chunk_frames), torch.arange(num_chunks * chunk_frames)])
    return chunk_ids, is_target, frame_pos


def latent_targets(latents: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """Per chunk, its latents minus the newest latent frame before it (``latent_delta``); chunk 0,
    with no frame before it, is returned unchanged (B, C, F, h, w)."""
    cf = chunk_frames
    out = latents.clone()
    if latents.shape[2] > cf:
        reference = latents[:, :, cf - 1:-1:cf]  # last frame of chunks 0..K-2 (B, C, K-1, h, w)
        out[:, :, cf:] -= reference.repeat_interleave(cf, dim=2)
    return out


def motion_weights(latents: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-cell loss weights (B, 1, F, h, w) with mean 1: ``1 + strength * m / mean(m)``, normalised,
    where ``m`` is the channel-mean absolute change of a latent cell since the previous frame (frame 0
    takes frame 1's). Uniform when ``strength`` is 0 or nothing moves."""
    b, _, f, h, w = latents.shape
    if strength == 0.0 or f < 2:
        return latents.new_ones(b, 1, f, h, w)
    change = (latents[:, :, 1:] - latents[:, :, :-1]).abs().mean(dim=1, keepdim=True)  # (B, 1, F-1, h, w)
    change = torch.cat([change[:, :, :1], change], dim=2)
    weights = 1.0 + strength * change / change.mean().clamp_min(1e-8)
    return weights / weights.mean()


@dataclass
class TrainingLoss:
    total: torch.Tensor
    flow: torch.Tensor  # MSE of the velocity (of x0 when the network predicts x0) over all target chunks
    load_balance: torch.Tensor  # MoAE router balance (1.0 = uniform)
    pixel: torch.Tensor | None = None  # decoded-frame MSE of the clean-latent estimate (pixel_loss_weight > 0)


def flow_matching_loss(
    model: AstraTransformer,
    latents: torch.Tensor,
    actions: torch.Tensor,
    modality_ids: torch.Tensor,
    generator: torch.Generator | None = None,
    history_noise_max: float | None = None,
    action_dropout: float | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    references: torch.Tensor | None = None,
    arm_maps: torch.Tensor | None = None,
    history_latents: torch.Tensor | None = None,
) -> TrainingLoss:
    """Teacher-forced loss over every chunk of a clip in one block-causal pass.

    latents (B, C, K*chunk_frames, h, w) clean; actions (B, K*chunk_frames, Dmax); modality_ids (B,).
    The sequence is [noise-augmented history chunks 0..K-2, noisy target chunks 0..K-1]: target k
    attends to history chunks < k (each at its own random level t_h ~ U(0, history_noise_max))
    and to itself, exactly the context it has when streaming.

    With ``pixel_loss_weight`` > 0, ``decode`` (normalised latents (B, C, T, h, w) -> frames
    (B, T, 3, H, W): the frozen codec's decoder) adds :func:`pixel_loss` of the network's
    clean-latent estimate.

    ``references`` (B, C, F, h, w): with ``latent_delta``, each frame's reference instead of the newest
    latent frame before its chunk (``rotation_reference``: the anchor turned by the actions, encoded);
    chunk 0's entries are unused.

    ``history_latents`` (B, C, (K-1)*chunk_frames, h, w): the history the targets are predicted from, when it
    is not the clip's own latents (training on the model's own rollouts: the targets stay the real future).

    ``arm_maps`` (B, F, n, cells**2): each frame's end-effector map per token (model/arm_map.py; zero
    where a clip has none), for a model with ``arm_map_cells``; dropped actions drop their maps too.
    """
    cfg: AstraConfig = model.config
    if references is not None and (not cfg.latent_delta or references.shape != latents.shape):
        raise ValueError(f"references need latent_delta and the latents' shape {tuple(latents.shape)}, got "
                         f"{tuple(references.shape)} (latent_delta={cfg.latent_delta})")
    if cfg.pixel_loss_weight > 0 and decode is None:
        raise ValueError("pixel_loss_weight > 0 needs the codec's decoder: pass decode=codec.decode")
    history_noise_max = cfg.history_noise_max if history_noise_max is None else history_noise_max
    action_dropout = cfg.action_dropout if action_dropout is None else action_dropout
    b, _, f, _, _ = latents.shape
    cf = cfg.chunk_frames
    if f % cf:
        raise ValueError(f"clip has {f} latent frames, not a multiple of chunk_frames={cf}")
    k = f // cf
    dev = latents.device
    rand = lambda *s: torch.rand(s, generator=generator).to(dev)  # noqa: E731

    # 1. Noisy targets, one flow time per chunk
    t_target = sample_training_time((b, k), cfg.train_shift, generator).to(dev).repeat_interleave(cf, dim=1)  # (B, F)
    noise = torch.randn(latents.shape, generator=generator).to(dev)
    if references is not None:
        x0 = torch.cat([latents[:, :, :cf], latents[:, :, cf:] - references[:, :, cf:]], dim=2)
    else:
        x0 = latent_targets(latents, cf) if cfg.latent_delta else latents
    targets = add_noise(x0, noise, t_target)
    # 2. Noise-augmented history (the last chunk is never anyone's history)
    hf = (k - 1) * cf
    t_hist = (rand(b, k - 1) * history_noise_max).repeat_interleave(cf, dim=1)  # (B, hf)
    clean_history = latents[:, :, :hf] if history_latents is None else history_latents
    if clean_history.shape != latents[:, :, :hf].shape:
        raise ValueError(f"history_latents must have the shape of the clip's first {k - 1} chunks "
                         f"{tuple(latents[:, :, :hf].shape)}, got {tuple(clean_history.shape)}")
    history = add_noise(clean_history, torch.randn(clean_history.shape, generator=generator).to(dev), t_hist)
    # 3. Actions: drop a target chunk's actions w.p. action_dropout; all history actions likewise per clip
    drop_target = (rand(b, k) < action_dropout).repeat_interleave(cf, dim=1)  # (B, F)
    drop_history = (rand(b, 1) < action_dropout).expand(b, hf)
    seq_actions = torch.cat([actions[:, :hf], actions], dim=1)
    dropped = torch.cat([drop_history, drop_target], dim=1)
    seq_motion = None
    if cfg.action_motion:  # measured along the clip, so target frame 0 has no frame before it
        motion = model.action_encoder.motion(actions, modality_ids)
        seq_motion = torch.cat([motion[:, :hf], motion], dim=1)
    features, routing = model.encode_actions(seq_actions, modality_ids, dropped, seq_motion)
    if arm_maps is not None:
        arm_maps = torch.cat([arm_maps[:, :hf], arm_maps], dim=1) * (~dropped)[:, :, None, None]
    features = model.add_arm_maps(features, arm_maps)
    # 4. One pass with the block-causal mask
    chunk_ids, is_target, frame_pos = chunk_layout(k, cf, k - 1)
    n = cfg.tokens_per_frame
    mask = block_causal_mask(chunk_ids.repeat_interleave(n), is_target.repeat_interleave(n), cfg.max_history_chunks).to(dev)
    velocity, _ = model(
        torch.cat([history, targets], dim=2),
        torch.cat([t_hist, t_target], dim=1),
        frame_pos,  # positions stay on the CPU: rope_angles builds its tables there
        action_features=features,
        attention_mask=mask,
    )
    # With latent deltas chunk 0 has no frame before it (streaming never predicts without history).
    first = cf if cfg.latent_delta else 0
    target = x0 if cfg.prediction == "x0" else noise - x0
    squared = (velocity[:, :, hf + first:] - target[:, :, first:]) ** 2
    weights = motion_weights(latents, cfg.motion_loss_weight)[:, :, first:]
    flow = (squared * weights).mean()  # weights have mean 1: plain MSE when motion_loss_weight is 0
    total = flow + cfg.load_balance_weight * routing.load_balance_loss
    pixel = None
    if cfg.pixel_loss_weight > 0:
        output = velocity[:, :, hf:]
        estimate = output if cfg.prediction == "x0" else targets - t_target[:, None, :, None, None] * output
        if cfg.latent_delta:
            estimate = estimate + (latents - x0)  # back to absolute latents: add each chunk's reference
        pixel = pixel_loss(estimate[:, :, first:], latents[:, :, first:], decode, cfg.pixel_loss_frames, generator)
        total = total + cfg.pixel_loss_weight * pixel
    return TrainingLoss(total=total, flow=flow, load_balance=routing.load_balance_loss, pixel=pixel)


def pixel_loss(estimate: torch.Tensor, latents: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor],
               frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between ``decode(estimate)`` and ``decode(latents)`` (no gradient through the latter) on
    ``frames`` latent frames drawn at random from (B, C, F, h, w), all of them when there are fewer.

    The real latents' decoding is the target, not the camera frames: the codec's own error is not
    the transformer's to fix, and residual decoding cancels it where nothing moves.
    """
    b, c, f, h, w = estimate.shape
    flat = lambda x: x.transpose(1, 2).reshape(b * f, c, h, w)  # noqa: E731
    pick = torch.randperm(b * f, generator=generator)[:frames].to(estimate.device)
    as_clip = lambda x: flat(x)[pick].transpose(0, 1)[None]  # (1, C, N, h, w)  # noqa: E731
    with torch.no_grad():
        target = decode(as_clip(latents).float())
    return (decode(as_clip(estimate).float()) - target).pow(2).mean()


def velocity_from_output(output: torch.Tensor, x_t: torch.Tensor, t: float, prediction: str) -> torch.Tensor:
    """The velocity ``noise - x0`` that the network's ``output`` at ``x_t`` and flow time ``t`` > 0 stands
    for: the output itself, or ``(x_t - x0) / t`` when the network predicts x0 (``prediction``)."""
    if prediction == "x0":
        return (x_t - output) / t
    return output


def guided_velocity(v_act: torch.Tensor, v_free: torch.Tensor, scale: float) -> torch.Tensor:
    """Action-free guidance: v_free + s * (v_act - v_free)."""
    return v_free + scale * (v_act - v_free)
