"""Metrics that see dynamics: pooled-MSE PSNR, changed-pixel PSNR, bootstrap intervals, per-second gains.

Plain numpy on the arrays that ``astra-eval --save-frames`` writes per clip (``observed_last``
``[H, W, 3]``, ``real``, ``model``, ``shuffled`` ``[N, H, W, 3]``, uint8, and a ``scenario``), so
anyone can recompute every number of ``metrics.json["dynamics"]`` from those files.

Why these and not the mean of per-frame PSNR: a frame identical to the last observed one gives
copy-last an infinite (capped) PSNR, and a few still frames then decide the mean. Pooling the
squared error of all frames of all clips first and taking one PSNR of the pooled MSE gives each
pixel the same weight and no frame a cap. The changed-pixel PSNR pools the error only over the
pixels where the real future differs from the last observed frame: there copying is wrong by
construction, so a model that only copies or blurs cannot win it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from astra_ros.eval.metrics import wilson_interval

__all__ = ["CHANGE_THRESHOLD", "BOOTSTRAP_RESAMPLES", "ClipErrors", "changed_mask", "clip_errors", "pooled_psnr",
           "bootstrap_gain", "dynamics_summary"]

# A pixel has changed when some channel of the real future differs from the last observed frame by
# more than this many grey levels (of 255). 8 is about the RMS error of the codec ceiling (real
# frames encoded and decoded: 28-32 dB PSNR, RMS 6-10 grey levels): a smaller change is below what
# any prediction decoded by this codec can reproduce, and the simulator's renders of a still scene
# are exact copies (difference 0), so the threshold only drops sub-codec shading changes.
CHANGE_THRESHOLD = 8
BOOTSTRAP_RESAMPLES = 1000  # resamples of the clips for each 95 % interval
PEAK = 255.0  # [grey levels]


@dataclass
class ClipErrors:
    """Per-frame squared-error sums of one clip (each ``[N]``), enough to pool over any clips and frames.

    ``*_se``: sum over all pixels and channels of the squared error [grey levels^2]; ``count``: pixels x
    channels per frame; ``changed_*``: the same over the changed pixels only (``changed_count`` of them, x3
    channels). ``shuffled_se`` is None without a shuffled-actions prediction. ``mse_model`` and
    ``mse_shuffled``: the clip's mean MSE over the horizon, as the action sensitivity compares them.
    ``ceiling_se`` / ``changed_ceiling_se``: the same for the codec ceiling (the real future encoded and
    decoded as predictions are), None without one.
    """

    scenario: str
    model_se: np.ndarray
    copy_se: np.ndarray
    count: np.ndarray
    changed_model_se: np.ndarray
    changed_copy_se: np.ndarray
    changed_count: np.ndarray
    shuffled_se: np.ndarray | None = None
    ceiling_se: np.ndarray | None = None
    changed_ceiling_se: np.ndarray | None = None

    @property
    def mse_model(self) -> float:
        return float(np.mean(self.model_se / self.count))

    @property
    def mse_shuffled(self) -> float:
        return math.nan if self.shuffled_se is None else float(np.mean(self.shuffled_se / self.count))


def _frames(name: str, frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must be frames shaped [N, H, W, 3], got {arr.shape}")
    return arr.astype(np.float64)


def changed_mask(observed_last: np.ndarray, real: np.ndarray, threshold: float = CHANGE_THRESHOLD) -> np.ndarray:
    """Bool ``[N, H, W]``: where some channel of ``real [N, H, W, 3]`` differs from ``observed_last [H, W, 3]``
    by more than ``threshold`` grey levels."""
    last = np.asarray(observed_last).astype(np.float64)
    future = _frames("real", real)
    if last.shape != future.shape[1:]:
        raise ValueError(f"observed_last {last.shape} and real frames {future.shape[1:]} differ in size")
    return np.abs(future - last[None]).max(axis=-1) > threshold


def clip_errors(observed_last: np.ndarray, real: np.ndarray, model: np.ndarray, shuffled: np.ndarray | None = None,
                scenario: str = "", threshold: float = CHANGE_THRESHOLD,
                ceiling: np.ndarray | None = None) -> ClipErrors:
    """The per-frame error sums of one clip: ``model`` (and ``shuffled``, may be None or empty; ``ceiling``, the
    codec ceiling, may be None) against ``real``, and copy-last (``observed_last`` repeated) against ``real``, over
    all pixels and over the changed ones."""
    future = _frames("real", real)
    pred = _frames("model", model)
    if pred.shape != future.shape:
        raise ValueError(f"model frames {pred.shape} and real frames {future.shape} differ in shape")
    last = np.asarray(observed_last).astype(np.float64)
    mask = changed_mask(observed_last, real, threshold)[..., None]  # [N, H, W, 1]
    model_sq = (pred - future) ** 2
    copy_sq = (last[None] - future) ** 2
    n = future.shape[0]
    out = ClipErrors(
        scenario=str(scenario),
        model_se=model_sq.sum(axis=(1, 2, 3)),
        copy_se=copy_sq.sum(axis=(1, 2, 3)),
        count=np.full(n, float(np.prod(future.shape[1:]))),
        changed_model_se=(model_sq * mask).sum(axis=(1, 2, 3)),
        changed_copy_se=(copy_sq * mask).sum(axis=(1, 2, 3)),
        changed_count=mask.sum(axis=(1, 2, 3)).astype(np.float64) * future.shape[-1],
    )
    if shuffled is not None and np.asarray(shuffled).size:
        other = _frames("shuffled", shuffled)
        if other.shape != future.shape:
            raise ValueError(f"shuffled frames {other.shape} and real frames {future.shape} differ in shape")
        out.shuffled_se = ((other - future) ** 2).sum(axis=(1, 2, 3))
    if ceiling is not None:
        best = _frames("ceiling", ceiling)
        if best.shape != future.shape:
            raise ValueError(f"ceiling frames {best.shape} and real frames {future.shape} differ in shape")
        ceiling_sq = (best - future) ** 2
        out.ceiling_se, out.changed_ceiling_se = ceiling_sq.sum(axis=(1, 2, 3)), (ceiling_sq * mask).sum(axis=(1, 2, 3))
    return out


def pooled_psnr(se: np.ndarray | float, count: np.ndarray | float) -> float:
    """``10 log10(255^2 / MSE)`` of the MSE pooled as sum(se) / sum(count) [dB]; inf for no error, NaN for no
    pixel."""
    total, pixels = float(np.sum(se)), float(np.sum(count))
    if pixels <= 0:
        return math.nan
    if total <= 0:
        return math.inf
    return 10.0 * math.log10(PEAK * PEAK * pixels / total)


def _psnr_rows(se: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Pooled PSNR of each row of ``se`` / ``count`` ``[B, C]`` -> ``[B]``."""
    total, pixels = se.sum(axis=1), count.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(PEAK * PEAK * pixels / total)


def bootstrap_gain(model_se: np.ndarray, copy_se: np.ndarray, count: np.ndarray, rng: np.random.Generator,
                   resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Pooled PSNR of the model and of copy-last over clips (one value per clip in each ``[C]`` array), their
    gain, and percentile 95 % intervals from ``resamples`` resamples of the clips with replacement.

    The clips are the unit that is resampled: frames of one clip are not independent. Intervals are None
    with fewer than two clips or where a resample has no pixel."""
    model_se, copy_se, count = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (model_se, copy_se, count))
    model_db, copy_db = pooled_psnr(model_se, count), pooled_psnr(copy_se, count)
    out: dict[str, Any] = {"model": model_db, "copy_last": copy_db, "gain": model_db - copy_db,
                           "model_ci95": None, "copy_last_ci95": None, "gain_ci95": None}
    clips = model_se.size
    if clips < 2 or not math.isfinite(out["gain"]):
        return out
    draw = rng.integers(0, clips, size=(resamples, clips))
    model_b = _psnr_rows(model_se[draw], count[draw])
    copy_b = _psnr_rows(copy_se[draw], count[draw])
    gain_b = model_b - copy_b
    for key, values in (("model_ci95", model_b), ("copy_last_ci95", copy_b), ("gain_ci95", gain_b)):
        finite = values[np.isfinite(values)]
        # A resample of only still clips has no changed pixel (NaN); the interval is over the others.
        if finite.size >= 0.95 * resamples:
            out[key] = [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
    return out


def _second_of(frame_interval_s: float, frames: int) -> np.ndarray:
    """Whole second ``k`` (1, 2, ...) each horizon frame falls in: its time ahead (h + 1) dt in (k - 1, k]."""
    ahead = (np.arange(frames) + 1) * frame_interval_s
    return np.ceil(ahead - 1e-6).astype(int)


def _block(clips: Sequence[ClipErrors], frames: np.ndarray | slice, rng: np.random.Generator,
           resamples: int) -> dict[str, Any]:
    """Pooled and changed-pixel PSNR (with intervals) of ``clips`` over horizon ``frames``."""
    def per_clip(field: str) -> np.ndarray:
        return np.array([getattr(c, field)[frames].sum() for c in clips])

    count, changed_count = per_clip("count"), per_clip("changed_count")
    pooled = bootstrap_gain(per_clip("model_se"), per_clip("copy_se"), count, rng, resamples)
    changed = bootstrap_gain(per_clip("changed_model_se"), per_clip("changed_copy_se"), changed_count, rng, resamples)
    changed["pixel_fraction"] = float(changed_count.sum() / count.sum())
    if all(c.ceiling_se is not None for c in clips):
        # Point values beside the model's, no bootstrap draw: the intervals above stay those of runs without it.
        for block, se, pixels in ((pooled, "ceiling_se", count), (changed, "changed_ceiling_se", changed_count)):
            block["codec_ceiling"] = pooled_psnr(per_clip(se), pixels)
            block["ceiling_gain"] = block["codec_ceiling"] - block["copy_last"]
    with_shuffled = [c for c in clips if c.shuffled_se is not None]
    if with_shuffled:
        pooled["shuffled_actions"] = pooled_psnr([c.shuffled_se[frames].sum() for c in with_shuffled],
                                                 [c.count[frames].sum() for c in with_shuffled])
        pooled["shuffled_clips"] = len(with_shuffled)
    return {"pooled_psnr": pooled, "changed_psnr": changed}


def _group(clips: Sequence[ClipErrors], frame_interval_s: float, rng: np.random.Generator,
           resamples: int) -> dict[str, Any]:
    row: dict[str, Any] = {"clips": len(clips)}
    row.update(_block(clips, slice(None), rng, resamples))
    wins_errors = (np.array([c.mse_model for c in clips]), np.array([c.mse_shuffled for c in clips]))
    valid = ~np.isnan(wins_errors[1])
    wins, trials = int(np.sum(wins_errors[0][valid] < wins_errors[1][valid])), int(valid.sum())
    row["action_sensitivity"] = wins / trials if trials else math.nan
    row["action_sensitivity_ci95"] = list(wilson_interval(wins, trials))
    row["action_sensitivity_clips"] = trials
    seconds = _second_of(frame_interval_s, len(clips[0].count))
    row["per_second"] = []
    for k in sorted(set(seconds.tolist())):
        block = _block(clips, seconds == k, rng, resamples)
        row["per_second"].append({"second": k, "frames": int(np.sum(seconds == k)), **block})
    return row


def dynamics_summary(clips: Sequence[ClipErrors], frame_interval_s: float, *, seed: int = 0,
                     resamples: int = BOOTSTRAP_RESAMPLES, threshold: float = CHANGE_THRESHOLD) -> dict[str, Any]:
    """``metrics.json["dynamics"]``: for all clips (``overall``) and per scenario: pooled PSNR of model,
    copy-last and shuffled actions with the gain and its 95 % bootstrap interval over clips; the same over
    the changed pixels; where every clip has one, the codec ceiling's PSNR and its gain over copy-last
    (``codec_ceiling``, ``ceiling_gain``: what exactly right latents would score, the network's headroom);
    the action sensitivity with its Wilson interval; and both PSNRs per whole second of the horizon
    (``per_second``: frames 0.1-1.0 s ahead are second 1, 1.1-2.0 s second 2, ...).

    Every clip needs the same number of horizon frames. The bootstrap is seeded (``seed``), so a run
    repeats exactly, and each group draws from its own generator with that seed, so a scenario's interval
    does not depend on which other scenarios share the set (and equals ``overall``'s on the same clips).
    ``threshold`` is only recorded: it was applied by :func:`clip_errors`."""
    if not clips:
        raise ValueError("no clip to summarise")
    if len({len(c.count) for c in clips}) != 1:
        raise ValueError("every clip needs the same number of horizon frames")
    out: dict[str, Any] = {
        "change_threshold": threshold,
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": "clip", "interval": "percentile 95 %"},
        "frame_interval_s": frame_interval_s,
        "overall": _group(clips, frame_interval_s, np.random.default_rng(seed), resamples),
        "per_scenario": {},
    }
    for scenario in sorted({c.scenario for c in clips}):
        members = [c for c in clips if c.scenario == scenario]
        out["per_scenario"][scenario] = _group(members, frame_interval_s, np.random.default_rng(seed), resamples)
    return out
