"""The references ``rotation_reference`` trains from, built as the model streams them.

At inference each chunk is predicted from the newest frame before it turned by the rotation its actions
imply (``WorldModel.imagine``); training builds the same from real clips: the turn of every later frame
from each clip's own modality, its camera (the model's default where a bag had none), the turned views
and their latents.
"""

from __future__ import annotations

import torch

from astra_ros.model import WorldModel
from astra_ros.model.view_rotation import chain_rotations


def clip_rotations(model: WorldModel, actions: torch.Tensor, ids: torch.Tensor, anchor: int, count: int) -> torch.Tensor:
    """Camera rotations (B, count, 3, 3) of frames ``anchor + 1 ...`` relative to frame ``anchor`` of
    each clip, from its own modality's actions (``actions`` zero-padded (B, T, Dmax))."""
    names = model.transformer.action_encoder.modality_names
    rotations = torch.empty(actions.shape[0], count, 3, 3, dtype=torch.float64)
    for index in ids.unique().tolist():
        rows = (ids == index).nonzero().flatten()
        acts = actions[rows][:, :, :model.action_dim(names[index])]
        rotations[rows] = chain_rotations(names[index], acts[:, anchor + 1:anchor + 1 + count], acts[:, anchor])
    return rotations


def clip_intrinsics(model: WorldModel, intrinsics: torch.Tensor) -> torch.Tensor:
    """Each clip's intrinsics (B, 3, 3); the model's default camera for a bag that had none (NaN)."""
    known = torch.isfinite(intrinsics).all(dim=-1).all(dim=-1)[:, None, None]
    return torch.where(known, intrinsics, model.intrinsics)


@torch.no_grad()
def chunk_references(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, ids: torch.Tensor,
                     intrinsics: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """``rotation_reference`` targets (B, C, T, h, w), as the model streams them: each chunk's frames
    from the newest frame before the chunk turned to them (``WorldModel.imagine``; here every frame is
    real). Chunk 0 has no frame before it: its entries are its latents (unused)."""
    cf = model.config.chunk_frames
    b, t = frames.shape[:2]
    befores = list(range(cf - 1, t - 1, cf))  # the newest frame before chunks 1..K-1
    rotations = torch.stack([clip_rotations(model, actions, ids, before, cf) for before in befores], dim=1)
    K = clip_intrinsics(model, intrinsics).repeat_interleave(len(befores) * cf, dim=0)
    pixels = frames[:, befores].flatten(0, 1).repeat_interleave(cf, dim=0)  # (B * (K-1) * cf, 3, H, W)
    turned = model.turned_views(pixels, rotations.flatten(0, 2), K)[1]  # (B * (K-1) * cf, C, h, w)
    turned = turned.unflatten(0, (b, len(befores) * cf)).transpose(1, 2)
    return torch.cat([latents[:, :, :cf], turned], dim=2)


@torch.no_grad()
def turned_anchors(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, ids: torch.Tensor,
                   intrinsics: torch.Tensor, anchor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``anchor`` of each clip (B, T, 3, H, W) turned by the camera rotation of every later
    frame (``rotation_reference``, as at inference): pixels (B, N, 3, H, W), latents (B, C, N, h, w).
    Clips without intrinsics take the model's default camera."""
    b, t = frames.shape[:2]
    later = t - anchor - 1
    rotations = clip_rotations(model, actions, ids, anchor, later)
    K = clip_intrinsics(model, intrinsics).repeat_interleave(later, dim=0)
    pixels = frames[:, anchor].repeat_interleave(later, dim=0)
    turned, latents = model.turned_views(pixels, rotations.flatten(0, 1), K)
    return turned.unflatten(0, (b, later)), latents.unflatten(0, (b, later)).transpose(1, 2)
