"""Training on the model's own rollouts (``rollout_history_fraction``).

A long rollout feeds the model its own predictions as history, and teacher-forced training never shows
it one: its errors compound (over 4 s the default falls from +3 dB over copy-last to below it while
the codec ceiling stays level, docs/RESULTS.md). For a share of the clips, the history after the first
chunk is replaced by what the model itself predicts from that chunk with the clip's actions, and each
later chunk's reference by the one that rollout gives it (the newest predicted frame turned by the
actions, as ``imagine`` builds it); the targets stay the real future. Rolled out with the current
weights, without gradient, through ``WorldModel.start`` and ``imagine``: exactly the inference path.
"""

from __future__ import annotations

import numpy as np
import torch

from astra_ros.model import WorldModel


def rollout_rows(fraction: float, batch: int, seed: int, step: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Which clips of step ``step``'s batch get their own rollout as history (bool ``[batch]``): drawn from a
    stream of their own, so a run's batches and noise are those of the same run without rollouts, and a
    resumed run draws the same rows. ``eligible`` (bool ``[batch]``, e.g. the clips of the modalities that
    may be rolled out) masks the draw after it is made, so restricting it leaves the other rows' draws alone."""
    if fraction <= 0:
        return np.zeros(batch, bool)
    rows = np.random.default_rng([seed, step, 0x5E1F]).random(batch) < fraction
    return rows if eligible is None else rows & np.asarray(eligible, bool)


def eligible_rows(ids: torch.Tensor, names: list[str] | tuple[str, ...], modalities: tuple[str, ...] | list[str]) -> np.ndarray | None:
    """The clips (bool ``[batch]``) whose modality (``names[ids[i]]``) is one of ``modalities``; None when
    ``modalities`` is empty (every clip may be rolled out)."""
    if not modalities:
        return None
    return np.array([names[int(i)] in modalities for i in ids], bool)


@torch.no_grad()
def own_rollout(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, modality: str,
                intrinsics: torch.Tensor | None, camera_in_base: torch.Tensor | None,
                seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One clip rolled out from its first chunk: ``frames`` (T, 3, H, W) in [-1, 1] at the model's resolution,
    ``actions`` (T, D) of ``modality``; ``intrinsics`` (3, 3) and ``camera_in_base`` (4, 4) or None (unknown).

    Returns the predicted latents of chunks 1... (C, T - n, h, w) and the reference each was predicted from
    (the same shape; None without ``rotation_reference``). Run on a twin of the model: its stream and camera
    are untouched, its modules' train/eval modes restored, its weights only read.
    """
    n = model.frames_per_chunk
    modes = {module: module.training for module in model.modules()}
    try:
        rollout = model.twin()  # its own stream and camera over the same weights (in eval mode while it runs)
        rollout.set_intrinsics(intrinsics if intrinsics is not None and torch.isfinite(intrinsics).all() else None)
        rollout.set_camera_in_base(camera_in_base if camera_in_base is not None and torch.isfinite(camera_in_base).all()
                                   else None)
        pixels = model._to_uint8(frames[None])[0]  # as the model hands out frames
        acts = actions.cpu().numpy()
        rollout.start(pixels[:n], acts[:n], modality=modality, seed=seed)
        record: list = []
        rollout.imagine(acts[n:][None], seed=seed, decode="last", record=record)
    finally:
        for module, training in modes.items():
            module.training = training
    latents = torch.cat([chunk for _, chunk in record], dim=2)[0]
    references = None
    if record[0][0] is not None:
        references = torch.cat([reference for reference, _ in record], dim=2)[0]
    return latents, references


def rolled_out_history(model: WorldModel, rows: np.ndarray, frames: torch.Tensor, actions: torch.Tensor,
                       ids: torch.Tensor, intrinsics: torch.Tensor, camera_in_base: torch.Tensor,
                       latents: torch.Tensor, references: torch.Tensor | None,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch's history (B, C, (K-1)n, h, w) and references, the clips of ``rows`` rolled out by the model from
    their first chunk (:func:`own_rollout`), the others' their own. ``frames`` (B, T, 3, H, W), ``actions``
    (B, T, Dmax) zero-padded, ``ids`` the modality indices, ``intrinsics`` (B, 3, 3) and ``camera_in_base``
    (B, 4, 4) (NaN: unknown), ``latents`` (B, C, T, h, w) and ``references`` as the trainer made them."""
    n = model.frames_per_chunk
    history = latents[:, :, :-n].clone()
    references = None if references is None else references.clone()
    names = model.transformer.action_encoder.modality_names
    for i in np.flatnonzero(rows).tolist():
        modality = names[int(ids[i])]
        predicted, turned = own_rollout(model, frames[i].to(latents.device), actions[i, :, :model.action_dim(modality)],
                                        modality, intrinsics[i], camera_in_base[i], seed=seed + i)
        history[i, :, n:] = predicted[:, :-n]
        if references is not None and turned is not None:
            references[i, :, n:] = turned
    return history, references
