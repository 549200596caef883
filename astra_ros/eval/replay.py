"""Rosbag replay evaluation of a world model (the library behind ``astra-eval``; no ROS imports).

For each evaluation point in a bag the replay takes a window of ``context + horizon`` consecutive
frames, with actions exactly as a training clip has them (the data layer's vectors; ``camera``
actions rebased to the window's first frame). The model observes the context frames and their
actions through ``WorldModel.start`` (the streaming path), then predicts the horizon twice from the
same noise: with the actions that really followed, and with the horizon actions of another clip
(the shuffled-actions baseline). Per horizon step it scores PSNR / SSIM against the real frames for
the model, the copy-last baseline and the shuffled actions, the action sensitivity, and how well
the camera motion seen in the predicted (and real) frames matches the recorded motion. A cheap
health check of the network rides along: its one-step estimate of the first horizon chunk's
latents from pure noise against a copy of the last latent (``one_shot_latent_mse``). Each clip's
per-frame error sums (all pixels and the changed ones) feed ``metrics["dynamics"]``
(:mod:`astra_ros.eval.dynamics`: pooled-MSE and changed-pixel PSNR with bootstrap intervals, per
scenario and per second).

    result = evaluate_bags(WorldModel.from_pretrained(ckpt), bags, EvalOptions(horizon_s=1.0))
    result.metrics  # the metrics.json dictionary of DESIGN.md section 4
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from astra_ros.data.actions import rebase_camera_actions
from astra_ros.eval.dynamics import CHANGE_THRESHOLD, ClipErrors, clip_errors, dynamics_summary
from astra_ros.eval.frames import scenario_of
from astra_ros.eval.metrics import (PSNR_CAP_DB, action_sensitivity, action_sensitivity_interval, copy_last_baseline, mse, psnr,
                                   shuffled_actions_indices, ssim)
from astra_ros.eval.motion import motion_errors, motion_from_relative_pose, rotation_angle_deg
from astra_ros.eval.options import MOTION_ESTIMATORS, EvalError, EvalOptions, ReplayPlan
from astra_ros.eval.replay_bags import ReplayBag, load_bags, model_intrinsics, poses_from_camera_actions
from astra_ros.eval.summaries import nanmean_rows, one_shot_summary, per_modality, rotation_paired

logger = logging.getLogger(__name__)

# The options and the bag loading live in their own modules; they are imported from here as before.
__all__ = ["EvalError", "EvalOptions", "ClipResult", "EvalResult", "ReplayPlan", "MOTION_ESTIMATORS", "evaluate_bags"]


@dataclass
class ClipResult:
    """One evaluation point: the frames, the actions used and its per-horizon scores."""

    bag: str
    start: int  # index of the window's first frame in the bag
    stamp_ns: int  # stamp of the window's first frame [ns]
    modality: str
    observed: np.ndarray  # uint8 [C, H, W, 3] context frames
    real: np.ndarray  # uint8 [N, H, W, 3] what really followed
    actions: np.ndarray  # float32 [C + N, D] window actions (camera: relative to the window's first frame)
    predicted: np.ndarray | None = None  # uint8 [N, H, W, 3] with the true actions
    shuffled_from: int | None = None  # index of the clip whose horizon actions were used, None if no other clip
    shuffled_actions: np.ndarray | None = None  # float32 [N, D] the other clip's horizon actions
    predicted_shuffled: np.ndarray | None = None  # uint8 [N, H, W, 3] with the shuffled actions
    reconstructed: np.ndarray | None = None  # uint8 [N, H, W, 3] the real frames through the codec (ceiling)
    one_shot: dict[str, float] | None = None  # latent MSEs of WorldModel.one_shot_error on the first horizon chunk
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # per-horizon [N] arrays, see _score_clip
    scenario: str = ""  # the bag's simulator scenario (its name <scenario>_s<seed>), else the modality
    errors: ClipErrors | None = None  # per-frame error sums behind metrics["dynamics"]


@dataclass
class EvalResult:
    """The metrics dictionary (metrics.json) and the clips behind it."""

    metrics: dict[str, Any]
    clips: list[ClipResult]
    plan: ReplayPlan


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def make_plan(frames_per_chunk: int, frame_interval_s: float, options: EvalOptions) -> ReplayPlan:
    """Window sizes for a model with ``frames_per_chunk`` and a camera with ``frame_interval_s`` [s]."""
    n = frames_per_chunk
    horizon = math.ceil(options.horizon_s / frame_interval_s - 1e-6)  # tolerate stamps rounded to ns
    return ReplayPlan(
        context_frames=_round_up(options.context_frames, n),
        horizon_frames=_round_up(horizon, n),
        frame_interval_s=frame_interval_s,
        stride_frames=max(1, round(options.stride_s / frame_interval_s)),
    )


def _gap_threshold_ns(bag: ReplayBag, max_gap_factor: float) -> float:
    """Steps between frames longer than this [ns] are time gaps. A camera faster than the model's grid is
    thinned onto it (frame_grid.py): each frame taken is the first at or after its target less half a
    camera period, so steps of up to one interval plus one camera period are the thinning itself (a
    12 Hz camera: 83 and 167 ms), not gaps."""
    period = bag.episode.camera_period_ns
    thinning = period if period is not None and period < bag.interval_s * 1e9 else 0
    return max_gap_factor * bag.interval_s * 1e9 + thinning


def _windows(bags: list[ReplayBag], plan: ReplayPlan, options: EvalOptions,
             skipped: dict[str, int]) -> list[tuple[int, int]]:
    """Usable (bag index, start) pairs: per bag at most clips_per_bag, then round-robin up to max_clips."""
    per_bag: list[list[int]] = []
    for b, bag in enumerate(bags):
        count = len(bag.episode.frames)
        starts = np.arange(0, count - plan.window_frames + 1, plan.stride_frames)
        if len(starts) == 0:
            skipped["bag_shorter_than_window"] = skipped.get("bag_shorter_than_window", 0) + 1
            logger.warning("bag %s has %d frames, fewer than one window of %d", bag.path, count, plan.window_frames)
        valid = bag.episode.valid
        gaps = np.diff(bag.episode.stamps_ns) > _gap_threshold_ns(bag, options.max_gap_factor)  # gap after frame i
        usable = []
        for start in starts:
            stop = start + plan.window_frames
            if not valid[start:stop].all():
                skipped["nan_actions"] = skipped.get("nan_actions", 0) + 1
            # the gap after the last frame counts too: a twist's action is its command x that interval
            elif gaps[start:stop].any():
                skipped["time_gap"] = skipped.get("time_gap", 0) + 1
            else:
                usable.append(int(start))
        if len(usable) > options.clips_per_bag:
            pick = np.unique(np.linspace(0, len(usable) - 1, options.clips_per_bag).round().astype(int))
            usable = [usable[i] for i in pick]
        per_bag.append(usable)
    chosen: list[tuple[int, int]] = []
    for rank in range(max((len(u) for u in per_bag), default=0)):
        chosen.extend((b, u[rank]) for b, u in enumerate(per_bag) if rank < len(u))
    return chosen[: options.max_clips]


def _make_clip(bag: ReplayBag, start: int, plan: ReplayPlan) -> ClipResult:
    episode = bag.episode
    stop = start + plan.window_frames
    actions = episode.actions[start:stop]
    if episode.modality == "camera":
        actions = rebase_camera_actions(actions)  # as a training clip: relative to the window's first frame
    c = plan.context_frames
    return ClipResult(
        bag=bag.path,
        start=start,
        stamp_ns=int(episode.stamps_ns[start]),
        modality=episode.modality,
        scenario=scenario_of(bag.path, episode.modality),
        observed=episode.frames[start:start + c],
        real=episode.frames[start + c:stop],
        actions=np.asarray(actions, dtype=np.float32),
    )


def borrowed_horizon(own: ClipResult, source: ClipResult, context_frames: int) -> np.ndarray:
    """``source``'s horizon actions as this clip's shuffled actions.

    Camera actions are poses relative to each window's first frame, so the other clip's horizon
    taken as it is would start the predicted view from an unrelated pose (a jump no camera makes,
    which any model tells apart easily). Its *motion* from its last observed frame is continued
    from this clip's last observed pose instead: the wrong camera path, not a teleport. Other
    modalities are taken as they are (robot poses are in the robot's fixed base frame; twists and
    keys are commands, not positions).
    """
    c = context_frames
    if own.modality != "camera":
        return source.actions[c:].copy()
    motion = poses_from_camera_actions(rebase_camera_actions(source.actions, reference_index=c - 1)[c:])
    start = poses_from_camera_actions(own.actions[c - 1:c])[0]
    return (start @ motion)[:, :3, :4].reshape(len(motion), 12).astype(np.float32)


def _sources(members: list[int], own: int, drawn: int, rng: np.random.Generator):
    """The clip the derangement drew for ``own``, then (only if asked for more: its actions were the
    same) the other members in random order. Lazy, so that runs without ties draw as before."""
    yield members[drawn]
    for j in rng.permutation(len(members)):
        if members[int(j)] not in (own, members[drawn]):
            yield members[int(j)]


def _assign_shuffled(clips: list[ClipResult], plan: ReplayPlan, seed: int, notes: list[str]) -> None:
    """Give each clip the horizon actions of another clip of its modality (a derangement per modality).

    Borrowed actions that equal the clip's own (one-hot keys, a robot standing still) would predict
    the same frames and count as a failure of the model; such a clip borrows from the next other
    clip whose actions differ, and has no shuffled baseline (NaN) when none does.
    """
    rng = np.random.default_rng(seed)
    c = plan.context_frames
    for modality in sorted({clip.modality for clip in clips}):
        members = [i for i, clip in enumerate(clips) if clip.modality == modality]
        if len(members) < 2:
            notes.append(f"only one {modality} clip: no shuffled-actions baseline for it")
            continue
        without = 0
        for own, other in zip(members, shuffled_actions_indices(len(members), rng)):
            for source in _sources(members, own, int(other), rng):
                borrowed = borrowed_horizon(clips[own], clips[source], c)
                if not np.allclose(borrowed, clips[own].actions[c:], rtol=0.0, atol=1e-6):
                    clips[own].shuffled_from = source
                    clips[own].shuffled_actions = borrowed
                    break
            else:
                without += 1
        if without:
            notes.append(f"{without} {modality} clip(s) have no other clip with different actions: "
                         "no shuffled-actions baseline for them")


def predict_pair(model: Any, clip: ClipResult, context_frames: int, seed: int,
                 guidance_scale: float | None = None) -> None:
    """Observe the clip's context, then predict its horizon with the true and the shuffled actions.

    Both predictions are one batched ``imagine`` call with shared noise from the same started
    stream, so they differ only through the actions.
    """
    model.start(clip.observed, clip.actions[:context_frames], modality=clip.modality, seed=seed)
    true_actions = clip.actions[context_frames:]
    if clip.shuffled_actions is None:
        clip.predicted = model.imagine(true_actions[None], seed=seed, shared_noise=True,
                                       guidance_scale=guidance_scale)[0]
        return
    pair = model.imagine(np.stack([true_actions, clip.shuffled_actions]), seed=seed, shared_noise=True,
                         guidance_scale=guidance_scale)
    clip.predicted, clip.predicted_shuffled = pair[0], pair[1]


def reconstruct_real(model: Any, clip: ClipResult, context_frames: int) -> None:
    """The codec ceiling of a started clip: its real future encoded and decoded as predictions are (from the
    newest observed frame turned by the future's own actions). Test doubles without ``reconstruct`` have none."""
    if hasattr(model, "reconstruct"):
        clip.reconstructed = model.reconstruct(clip.real, clip.actions[context_frames:context_frames + len(clip.real)])


def probe_one_shot(model: Any, clip: ClipResult, context_frames: int, seed: int) -> None:
    """The network's one-step estimate of the first horizon chunk against copying the last latent
    (``WorldModel.one_shot_error``), on a started clip. Test doubles without it have none."""
    if hasattr(model, "one_shot_error"):
        n = model.frames_per_chunk
        clip.one_shot = model.one_shot_error(clip.real[:n], clip.actions[context_frames:context_frames + n], seed=seed)


def _score_clip(clip: ClipResult, bag: ReplayBag, context_frames: int, motion_estimator: str,
                change_threshold: float = CHANGE_THRESHOLD) -> None:
    """Per-horizon scores of one predicted clip into ``clip.scores``, its error sums into ``clip.errors``."""
    n = len(clip.real)
    clip.errors = clip_errors(clip.observed[-1], clip.real, clip.predicted, clip.predicted_shuffled, clip.scenario,
                              change_threshold, ceiling=clip.reconstructed)
    nan = np.full(n, np.nan)
    copy = copy_last_baseline(clip.observed, n)
    s = clip.scores
    s["psnr_model"], s["ssim_model"] = psnr(clip.predicted, clip.real), ssim(clip.predicted, clip.real)
    s["psnr_copy_last"], s["ssim_copy_last"] = psnr(copy, clip.real), ssim(copy, clip.real)
    if clip.predicted_shuffled is not None:
        s["psnr_shuffled_actions"] = psnr(clip.predicted_shuffled, clip.real)
        s["ssim_shuffled_actions"] = ssim(clip.predicted_shuffled, clip.real)
        s["mse_shuffled_actions"] = np.array(float(mse(clip.predicted_shuffled, clip.real).mean()))
    else:
        s["psnr_shuffled_actions"] = s["ssim_shuffled_actions"] = nan
        s["mse_shuffled_actions"] = np.array(np.nan)
    s["mse_model"] = np.array(float(mse(clip.predicted, clip.real).mean()))
    if clip.reconstructed is not None:
        s["psnr_codec_ceiling"] = psnr(clip.reconstructed, clip.real)
        s["ssim_codec_ceiling"] = ssim(clip.reconstructed, clip.real)
    for key in ("rot_model", "rot_ground_truth", "rot_codec_ceiling", "rot_true",
                "dir_model", "dir_ground_truth", "dir_codec_ceiling"):
        s[key] = nan.copy()
    s["motion_known"] = np.zeros(n, dtype=bool)
    if bag.poses is None or bag.K is None:
        return
    # Motion from the last observed frame to each predicted frame, against the recorded motion.
    last = clip.start + context_frames - 1
    frame_a = clip.observed[-1]
    for h in range(n):
        pose_a, pose_b = bag.poses[last], bag.poses[last + 1 + h]
        if not (np.isfinite(pose_a).all() and np.isfinite(pose_b).all()):
            continue
        R_true, t_true = motion_from_relative_pose(np.linalg.inv(pose_a) @ pose_b)
        s["motion_known"][h] = True
        s["rot_true"][h] = rotation_angle_deg(R_true)  # the error of a camera that did not move
        # The codec ceiling's frames say how much of a turn survives the codec and the decoding at all.
        candidates = [("model", clip.predicted[h]), ("ground_truth", clip.real[h])]
        if clip.reconstructed is not None:
            candidates.append(("codec_ceiling", clip.reconstructed[h]))
        for name, frame_b in candidates:
            rot, direction, _ = motion_errors(frame_a, frame_b, bag.K, R_true, t_true, detector=motion_estimator)
            s[f"rot_{name}"][h], s[f"dir_{name}"][h] = rot, direction


def _scale_used(model: Any, options: EvalOptions, modality: str) -> float:
    """The guidance scale the clips of ``modality`` were predicted with."""
    if options.guidance_scale is not None:
        return float(options.guidance_scale)
    return float(model.config.guidance_scale_for(modality))


def evaluate_bags(model: Any, bag_paths: Sequence[str | Path], options: EvalOptions = EvalOptions()) -> EvalResult:
    """Replay ``bag_paths`` through ``model`` (a ``WorldModel``) and score its predictions.

    Raises :class:`~astra_ros.data.bags.BagError` for a missing, empty or unreadable bag or a missing
    topic, and :class:`EvalError` for a modality the model does not know, bags of different camera
    rates, or when no clip is usable. Returns the metrics (contract keys of DESIGN.md section 4 plus
    ``skipped``, ``modality_per_bag``, ``seed``, ``wall_time_s``, ``notes`` and ``clip_windows``) and
    the clips.
    """
    started = time.perf_counter()
    if not bag_paths:
        raise EvalError("no bag given")
    notes: list[str] = []
    skipped: dict[str, int] = {}
    bags = load_bags(model, [str(p) for p in bag_paths], options, notes)
    plan = make_plan(model.frames_per_chunk, bags[0].interval_s, options)
    chosen = _windows(bags, plan, options, skipped)
    if not chosen:
        raise EvalError(
            f"no usable clip of {plan.window_frames} frames ({plan.context_frames} observed + {plan.horizon_frames} "
            f"predicted) in the bags; skipped: {skipped or 'none'}"
        )
    clips = [_make_clip(bags[b], start, plan) for b, start in chosen]
    _assign_shuffled(clips, plan, options.seed, notes)
    for note in notes:
        logger.warning("%s", note)
    logger.info("evaluating %d clips: %d observed + %d predicted frames at %.2f Hz", len(clips),
                plan.context_frames, plan.horizon_frames, 1 / plan.frame_interval_s)
    for i, ((b, _), clip) in enumerate(tqdm(list(zip(chosen, clips)), desc="astra-eval", unit="clip",
                                             disable=not options.progress)):
        if hasattr(model, "set_intrinsics"):  # the bag's camera, for a model that turns its views (test doubles do not)
            model.set_intrinsics(model_intrinsics(bags[b], options, tuple(model.resolution)))
        if hasattr(model, "set_camera_in_base"):  # where an arm's camera is, for end-effector maps
            model.set_camera_in_base(bags[b].episode.camera_in_base)
        predict_pair(model, clip, plan.context_frames, options.seed + i, options.guidance_scale)
        reconstruct_real(model, clip, plan.context_frames)
        probe_one_shot(model, clip, plan.context_frames, options.seed + i)
        _score_clip(clip, bags[b], plan.context_frames, options.motion_estimator, options.change_threshold)

    def mean(key: str) -> list[float]:
        return nanmean_rows([c.scores[key] for c in clips])

    exact = sum(int(np.sum(c.scores["psnr_copy_last"] >= PSNR_CAP_DB)) for c in clips)
    if exact:
        notes.append(f"{exact} of {sum(len(c.real) for c in clips)} real frames repeat the last observed frame "
                     f"exactly (a still camera): copy-last scores the {PSNR_CAP_DB:.0f} dB cap on them, which "
                     "dominates its mean PSNR; compare per clip or by MSE")
    with_shuffled = sum(c.predicted_shuffled is not None for c in clips)
    if 0 < with_shuffled < len(clips):
        notes.append(f"shuffled actions: {with_shuffled} of {len(clips)} clips have them, so the overall shuffled "
                     "PSNR/SSIM averages other clips than the model's; compare per modality")
    series = ("model", "copy_last", "shuffled_actions")
    if all(c.reconstructed is not None for c in clips):
        series += ("codec_ceiling",)
    sensitivity_errors = (np.array([c.scores["mse_model"] for c in clips]),
                          np.array([c.scores["mse_shuffled_actions"] for c in clips]))
    metrics: dict[str, Any] = {
        "horizon_s": plan.horizon_s,
        "psnr": {k: mean(f"psnr_{k}") for k in series},
        "ssim": {k: mean(f"ssim_{k}") for k in series},
        "action_sensitivity": action_sensitivity(*sensitivity_errors),
        "action_sensitivity_ci95": list(action_sensitivity_interval(*sensitivity_errors)),
        "per_modality": per_modality(clips, series, lambda m: _scale_used(model, options, m)),
        # Pooled-MSE and changed-pixel PSNR with bootstrap intervals, per scenario and per second.
        "dynamics": dynamics_summary([c.errors for c in clips], plan.frame_interval_s, seed=options.seed,
                                     threshold=options.change_threshold),
        "scenario_per_bag": {bag.path: scenario_of(bag.path, bag.episode.modality) for bag in bags},
        "one_shot_latent_mse": one_shot_summary(clips),
        "rotation_error_deg": {k: mean(f"rot_{k}") for k in ("model", "ground_truth")},
        "rotation_paired": rotation_paired(clips),
        "translation_dir_error_deg": {k: mean(f"dir_{k}") for k in ("model", "ground_truth")},
        "motion_estimator": options.motion_estimator,
        "clips": len(clips),
        "shuffled_clips": with_shuffled,  # the clips the shuffled columns and the sensitivity average over
        "checkpoint": options.checkpoint,
        "bags": [bag.path for bag in bags],
        "skipped": skipped,
        "modality_per_bag": {bag.path: bag.episode.modality for bag in bags},
        "seed": options.seed,
        # The scale given, else the checkpoint's (per modality where it sets one: per_modality has each).
        "guidance_scale": (options.guidance_scale if options.guidance_scale is not None
                           else float(model.config.guidance_scale)),
        "context_frames": plan.context_frames,
        "frame_interval_s": plan.frame_interval_s,
        "notes": notes,
        "clip_windows": [
            {"bag": c.bag, "scenario": c.scenario, "start_frame": c.start, "start_stamp_ns": c.stamp_ns,
             "shuffled_from": c.shuffled_from}
            for c in clips
        ],
        "wall_time_s": time.perf_counter() - started,
    }
    return EvalResult(metrics, clips, plan)
