"""Summaries of scored clips for ``metrics.json``: means per horizon step, per action modality, the paired
rotation errors and the one-shot probe (split from :mod:`astra_ros.eval.replay`; plain numpy).

A clip here is anything with the ``scores``, ``modality`` and ``one_shot`` of a
:class:`~astra_ros.eval.replay.ClipResult`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from astra_ros.eval.metrics import action_sensitivity, action_sensitivity_interval

__all__ = ["one_shot_summary", "rotation_paired", "nanmean_rows", "per_modality"]


def one_shot_summary(clips: Sequence[Any]) -> dict[str, float] | None:
    """Mean latent MSE of the one-shot estimate (``model``) and of copy-last, and their ratio
    (below 1: the network's estimate of the next chunk beats copying the last frame), and both decoded
    (``model_psnr``, ``copy_last_psnr``) when the probes have them; None without probes."""
    probes = [c.one_shot for c in clips if c.one_shot is not None]
    if not probes:
        return None
    model = float(np.mean([p["one_shot"] for p in probes]))
    copy = float(np.mean([p["copy_last"] for p in probes]))
    # Every clip has the same number of cells: weighting by the still fraction pools the still cells.
    weights = np.array([p["still_cells"] for p in probes])
    still = float(np.sum([w * p["one_shot_still"] for w, p in zip(weights, probes) if w > 0]) / weights.sum()
                  if weights.sum() > 0 else float("nan"))
    summary = {"model": model, "copy_last": copy, "ratio": model / copy if copy > 0 else float("nan"),
               "still_cells": float(weights.mean()), "model_on_still_cells": still, "clips": len(probes)}
    if all("one_shot_psnr" in p for p in probes):  # the same estimate decoded, against the real frames
        summary["model_psnr"] = float(np.mean([p["one_shot_psnr"] for p in probes]))
        summary["copy_last_psnr"] = float(np.mean([p["copy_last_psnr"] for p in probes]))
    return summary




def rotation_paired(clips: Sequence[Any]) -> dict[str, Any]:
    """Rotation errors of predicted and real frames on the same (clip, horizon) pairs.

    ``rotation_error_deg`` averages each over the pairs where its own estimate worked; blurry
    predictions defeat the estimator more often, so that compares different subsets. Here: the
    means over the pairs where both worked (``pairs`` of them), their ratio, and the fraction of
    pairs with a known true motion where each estimate worked (``*_defined``). ``still_deg``: the
    mean true rotation on those pairs, which is the error of frames that show no rotation at all
    (copy-last's): a model error near it says the predicted view did not turn as commanded.
    ``codec_ceiling``: the same for the codec ceiling's frames (the real future through the codec
    and the decoding), on the pairs where they and the real frames gave estimates: how much of a
    turn any prediction could show. ``clips``: at least one.
    """
    model = np.concatenate([c.scores["rot_model"] for c in clips])
    real = np.concatenate([c.scores["rot_ground_truth"] for c in clips])
    ceiling = np.concatenate([c.scores["rot_codec_ceiling"] for c in clips])
    true = np.concatenate([c.scores["rot_true"] for c in clips])
    known = np.concatenate([c.scores["motion_known"] for c in clips])
    both = np.isfinite(model) & np.isfinite(real)
    out: dict[str, Any] = {"pairs": int(both.sum()), "model_deg": None, "ground_truth_deg": None, "ratio": None,
                           "still_deg": None, "model_defined": None, "ground_truth_defined": None,
                           "codec_ceiling": {"pairs": 0, "deg": None, "ground_truth_deg": None, "still_deg": None}}
    if known.any():
        out["model_defined"] = float(np.isfinite(model)[known].mean())
        out["ground_truth_defined"] = float(np.isfinite(real)[known].mean())
    if both.any():
        out["model_deg"], out["ground_truth_deg"] = float(model[both].mean()), float(real[both].mean())
        out["ratio"] = out["model_deg"] / out["ground_truth_deg"] if out["ground_truth_deg"] > 0 else None
        out["still_deg"] = float(true[both].mean())
    # The same for the codec ceiling's frames, on the pairs where they and the real frames gave estimates.
    with_ceiling = np.isfinite(ceiling) & np.isfinite(real)
    if with_ceiling.any():
        out["codec_ceiling"] = {"pairs": int(with_ceiling.sum()), "deg": float(ceiling[with_ceiling].mean()),
                                "ground_truth_deg": float(real[with_ceiling].mean()),
                                "still_deg": float(true[with_ceiling].mean())}
    return out


def nanmean_rows(rows: list[np.ndarray]) -> list[float]:
    """Mean over clips per horizon step, ignoring NaN; NaN where no clip has a value."""
    stacked = np.stack(rows).astype(np.float64)  # (clips, N)
    counts = np.isfinite(stacked).sum(axis=0)
    sums = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
    return [float(v) for v in np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)]




def per_modality(clips: Sequence[Any], series: tuple[str, ...],
                  scale_of: Callable[[str], float]) -> dict[str, dict[str, Any]]:
    """Per action modality: clips, guidance scale, PSNR of each series (mean over clips and horizon),
    action sensitivity, paired rotation errors."""
    out: dict[str, dict[str, Any]] = {}
    for modality in sorted({c.modality for c in clips}):
        members = [c for c in clips if c.modality == modality]
        row: dict[str, Any] = {"clips": len(members), "guidance_scale": scale_of(modality)}
        for name in series:
            per_horizon = np.array(nanmean_rows([c.scores[f"psnr_{name}"] for c in members]))
            finite = per_horizon[np.isfinite(per_horizon)]
            row[f"psnr_{name}"] = float(finite.mean()) if finite.size else float("nan")
        errors = (np.array([c.scores["mse_model"] for c in members]),
                  np.array([c.scores["mse_shuffled_actions"] for c in members]))
        row["action_sensitivity"] = action_sensitivity(*errors)
        row["action_sensitivity_ci95"] = list(action_sensitivity_interval(*errors))
        row["rotation_paired"] = rotation_paired(members)
        row["one_shot_latent_mse"] = one_shot_summary(members)
        out[modality] = row
    return out
