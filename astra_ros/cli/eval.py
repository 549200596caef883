"""``astra-eval``: rosbag replay evaluation of a world model checkpoint.

    astra-eval data/sim/explore_s0 data/sim/rover_s0 --checkpoint default --out out/eval

writes ``out/eval/metrics.json`` (DESIGN.md section 4; ``dynamics``: pooled-MSE and changed-pixel PSNR
with bootstrap intervals, per scenario and per second, docs/EVALUATION.md), ``metrics.png``,
``grid.png`` (observed | predicted | real for clips of every scenario), ``rollout.mp4`` (real next to
predicted for one clip), ``report.md``, and with ``--save-frames DIR`` one ``.npz`` of frames per clip
(:mod:`astra_ros.eval.frames`). The evaluation itself is :func:`astra_ros.eval.replay.evaluate_bags`.
Exit status: 0 on success, 2 when the checkpoint, a bag or the options cannot be used.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from astra_ros.cli.arguments import positive_int
from astra_ros.cli.log_level import package_log_level
from astra_ros.data.actions import MODALITIES
from astra_ros.data.bags import BagError, BagTopics, find_bags
from astra_ros.data.conventions import BagConventions
from astra_ros.data.profile import RobotProfile, load_profile
from astra_ros.eval.dynamics import CHANGE_THRESHOLD
from astra_ros.eval.frames import save_clip_frames
from astra_ros.eval.replay import (MOTION_ESTIMATORS, ClipResult, EvalError, EvalOptions, EvalResult,
                                   evaluate_bags)
from astra_ros.eval.report import (dynamics_lines, image_grid, sensitivity_interval, write_metrics_json, write_report,
                                   write_video)

GRID_CLIPS = 4  # clips shown in grid.png, more where the set has more scenarios (one of each at least)


def _parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height) [px]."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from error
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def _profile_and_topics(args: argparse.Namespace) -> tuple[RobotProfile | None, BagTopics]:
    """The ``--profile`` (with the topic flags given applied to it) and the topics to read."""
    flags = {"image": args.image_topic, "camera_info": args.camera_info_topic, "pose": args.pose_topic,
             "ee_pose": args.ee_pose_topic, "gripper": args.gripper_topic, "twist": args.twist_topic,
             "odom": args.odom_topic}
    given = {key: topic for key, topic in flags.items() if topic is not None}
    if args.profile is None:
        names = {"pose": "camera_pose"}  # BagTopics' name of the camera pose
        return None, dataclasses.replace(BagTopics(), **{names.get(k, k): v for k, v in given.items()})
    profile = load_profile(args.profile)
    profile = dataclasses.replace(profile, topics=dataclasses.replace(profile.topics, **given))
    if args.modality:
        profile = dataclasses.replace(profile, modality=args.modality)
    return profile, profile.bag_topics()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``astra-eval``."""
    defaults = BagTopics()
    p = argparse.ArgumentParser(
        prog="astra-eval",
        description="Replay ROS 2 bags through a world model: the model observes a few frames and their actions, "
        "predicts the frames that followed, and is scored against them, against copying the last frame and "
        "against its own prediction with another clip's actions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("bags", nargs="+", metavar="BAG", help="bag directories, .mcap/.db3 files, or folders holding bags")
    p.add_argument("--checkpoint", default="default", help="checkpoint directory or 'default' (embedded)")
    p.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    p.add_argument("--horizon-s", type=float, default=1.0, help="prediction horizon [s], rounded up to whole chunks")
    p.add_argument("--context-frames", type=int, default=4, help="observed frames, rounded up to whole chunks")
    p.add_argument("--stride-s", type=float, default=1.0, help="spacing of evaluation points in a bag [s]")
    p.add_argument("--clips-per-bag", type=int, default=8, help="most evaluation points per bag")
    p.add_argument("--max-clips", type=int, default=64, help="most evaluation points in total")
    p.add_argument("--seed", type=int, default=0, help="sampler and shuffling seed")
    p.add_argument("--profile", type=Path,
                   help="robot profile (YAML, config/robots/): modality, topics, axis signs, pose frame and "
                        "intrinsics of the bags; the flags below override its topics and modality")
    p.add_argument("--modality", choices=MODALITIES,
                   help="action modality of every bag (unset: the profile's, else from its topics)")
    # Topic flags default to None: unset, a topic is the profile's, else this project's (shown in each help).
    unset = "the profile's, else"
    p.add_argument("--image-topic", help=f"sensor_msgs/Image or CompressedImage (unset: {unset} {defaults.image})")
    p.add_argument("--camera-info-topic", help=f"sensor_msgs/CameraInfo, optional (unset: {unset} {defaults.camera_info})")
    p.add_argument("--pose-topic", help=f"camera optical-frame pose, camera modality (unset: {unset} {defaults.camera_pose})")
    p.add_argument("--ee-pose-topic", help=f"end-effector pose, robot modality (unset: {unset} {defaults.ee_pose})")
    p.add_argument("--gripper-topic", help=f"gripper opening [m], robot modality, optional (unset: {unset} {defaults.gripper})")
    p.add_argument("--twist-topic", help=f"Twist, TwistStamped or Odometry, twist/keys (unset: {unset} {defaults.twist})")
    p.add_argument("--odom-topic", help=f"nav_msgs/Odometry of a mobile robot (unset: {unset} {defaults.odom})")
    p.add_argument("--fx-fy-cx-cy", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                   help="camera intrinsics [px] for the motion metrics and for a model that turns its views "
                        "(rotation_reference); overrides the bag's camera_info")
    p.add_argument("--intrinsics-size", type=_parse_size, metavar="WxH",
                   help="image size [px] that --fx-fy-cx-cy refer to (default: the model's resolution)")
    p.add_argument("--motion-estimator", choices=MOTION_ESTIMATORS, default=EvalOptions.motion_estimator,
                   help="correspondences of the camera-motion estimator behind the rotation errors: dense optical "
                        "'flow' (finds a motion in most small rendered frames) or 'sift' keypoints (in few)")
    p.add_argument("--change-threshold", type=float, default=CHANGE_THRESHOLD,
                   help="a pixel counts as changed for the changed-pixel PSNR where some channel of the real "
                        "future differs from the last observed frame by more than this [grey levels of 255]")
    p.add_argument("--save-frames", type=Path, metavar="DIR",
                   help="write one .npz per clip into DIR: uint8 observed_last, real, model, shuffled and the "
                        "scenario, at the model's resolution, from which every metric can be recomputed")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="action-free guidance s (default: the checkpoint's; 1 = guidance off; 0 = the "
                        "action-free prediction alone, which the ~/imagine service's 0 = default does not mean)")
    p.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda, cuda:N)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing but errors: no progress bar, no log lines, no summary (the files hold it all)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: the process arguments)."""
    return build_parser().parse_args(argv)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(metrics: dict) -> str:
    """`` (95 % 0.68-0.88)``: the sensitivity's uncertainty from its clip count, or nothing."""
    bounds = sensitivity_interval(metrics)
    return f" (95 % {bounds[0]:.2f}-{bounds[1]:.2f})" if bounds else ""


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summary_table(metrics: dict) -> str:
    """A few lines for the terminal: means over the horizon."""
    psnr, ssim = metrics["psnr"], metrics["ssim"]
    columns = (("model", "model", 10), ("copy_last", "copy_last", 12), ("shuffled_actions", "shuffled", 10),
               ("codec_ceiling", "ceiling", 10))
    shuffled_clips = metrics.get("shuffled_clips", metrics["clips"])
    partial = shuffled_clips < metrics["clips"]
    if partial:  # the shuffled column averages fewer clips than the others
        columns = tuple((k, title + "*" if k == "shuffled_actions" else title, w) for k, title, w in columns)
    rows = [
        f"{metrics['clips']} clips, horizon {metrics['horizon_s'][-1]:.2f} s, "
        f"action sensitivity {_fmt(metrics['action_sensitivity'])}{_interval(metrics)} (1 = always follows actions)",
        f"{'':18}" + "".join(f"{title:>{w}}" for _, title, w in columns),
        f"{'PSNR [dB]':18}" + "".join(f"{_fmt(_mean(psnr[k])) if k in psnr else 'n/a':>{w}}" for k, _, w in columns),
        f"{'SSIM':18}" + "".join(f"{_fmt(_mean(ssim[k]), 3) if k in ssim else 'n/a':>{w}}" for k, _, w in columns),
        f"{'rot. err. [deg]':18}{_fmt(_mean(metrics['rotation_error_deg']['model'])):>10}"
        f"   (real frames {_fmt(_mean(metrics['rotation_error_deg']['ground_truth']))})",
        f"{'dir. err. [deg]':18}{_fmt(_mean(metrics['translation_dir_error_deg']['model'])):>10}"
        f"   (real frames {_fmt(_mean(metrics['translation_dir_error_deg']['ground_truth']))})",
    ]
    probe = metrics.get("one_shot_latent_mse")
    if probe:
        rows.append(f"{'one-shot MSE':18}{_fmt(probe['model'], 4):>10}{_fmt(probe['copy_last'], 4):>12}"
                    f"   (latents of the next chunk; ratio {_fmt(probe['ratio'], 2)}: "
                    f"{'the network beats copying' if probe['ratio'] < 1 else 'copying beats the network'}; "
                    f"{_fmt(probe['model_on_still_cells'], 4)} on the {100 * probe['still_cells']:.0f} % still cells)")
        if "model_psnr" in probe:
            rows.append(f"{'one-shot PSNR':18}{_fmt(probe['model_psnr']):>10}{_fmt(probe['copy_last_psnr']):>12}"
                        "   (the same estimate decoded, against the real frames)")
    for modality, row in sorted((metrics.get("per_modality") or {}).items()):
        rows.append(f"{modality + ' PSNR':18}" + "".join(
            f"{_fmt(row.get('psnr_' + k, math.nan)):>{w}}" for k, _, w in columns)
            + f"   ({row['clips']} clips, sensitivity {_fmt(row['action_sensitivity'])}{_interval(row)})")
    if partial:
        rows.append(f"* shuffled actions on {shuffled_clips} of {metrics['clips']} clips only (a modality with one "
                    "clip has none to borrow): compare per modality")
    if metrics.get("skipped"):
        rows.append("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(metrics["skipped"].items())))
    if metrics.get("dynamics"):
        rows += dynamics_lines(metrics["dynamics"])
    return "\n".join(rows)


def grid_clips(clips: Sequence[ClipResult], count: int = GRID_CLIPS) -> list[ClipResult]:
    """Clips for grid.png: round-robin over the scenarios (sorted), so that every scenario of the set shows,
    ``count`` in all or one per scenario where there are more scenarios than that."""
    by_scenario: dict[str, list[ClipResult]] = {}
    for clip in clips:
        by_scenario.setdefault(clip.scenario or clip.modality, []).append(clip)
    queues = [by_scenario[name] for name in sorted(by_scenario)]
    chosen: list[ClipResult] = []
    for rank in range(max(len(q) for q in queues)):
        chosen += [q[rank] for q in queues if rank < len(q)]
    return chosen[:max(count, len(queues))]


def save_frames(result: EvalResult, directory: Path) -> tuple[list[Path], list[Path]]:
    """``--save-frames``: ``clip_0000.npz`` ... in ``directory``, one per clip (:mod:`astra_ros.eval.frames`).
    Clip files of an earlier run there that this one did not rewrite are removed: the scripts that read the
    folder (dynamics_from_frames.py, compare_frames.py) take every clip file in it. Returns (written, removed)."""
    written = [save_clip_frames(directory / f"clip_{i:04d}.npz", observed_last=clip.observed[-1], real=clip.real,
                                model=clip.predicted, shuffled=clip.predicted_shuffled, scenario=clip.scenario,
                                bag=clip.bag, start_frame=clip.start, modality=clip.modality,
                                frame_interval_s=result.plan.frame_interval_s, ceiling=clip.reconstructed)
               for i, clip in enumerate(result.clips)]
    stale = sorted(set(directory.glob("clip_*.npz")) - set(written))
    for path in stale:
        path.unlink()
    return written, stale


def write_outputs(result: EvalResult, out: Path) -> dict[str, Path]:
    """metrics.json, grid.png, rollout.mp4, report.md and metrics.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    clips = result.clips
    paths = {"metrics": write_metrics_json(result.metrics, out / "metrics.json")}
    paths["grid"] = image_grid(
        [{"observed": c.observed, "predicted": c.predicted, "real": c.real} for c in grid_clips(clips)],
        out / "grid.png",
    )
    first = clips[0]
    paths["video"] = write_video(
        np.concatenate([first.observed, first.real]),
        np.concatenate([first.observed, first.predicted]),
        out / "rollout.mp4",
        fps=1.0 / result.plan.frame_interval_s,
        labels=("real", "observed + predicted"),
    )
    paths["report"] = write_report(result.metrics, out)
    paths["plot"] = out / "metrics.png"
    return paths


def _usable_device(torch: Any, name: str) -> str:
    """``name`` if torch can run a model there, else EvalError (not a traceback from the first tensor)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise EvalError(f"--device {name!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"--device {name}: this torch has no usable CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise EvalError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise EvalError(f"--device {name}: astra-eval runs on cpu or cuda")
    return name


def _writable_directory(path: Path, flag: str = "--out") -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvalError(f"{flag} {path} cannot be used as the output directory: {error}") from error


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``astra-eval`` console script; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # --quiet: errors only (printed below); the notes a run logs as warnings are in metrics.json and report.md.
    with package_log_level(logging.ERROR if args.quiet else logging.INFO):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    # torch is imported after argument parsing, so --help stays fast.
    import torch

    from astra_ros.model import CheckpointError, WorldModel

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        profile, topics = _profile_and_topics(args)
        options = EvalOptions(
            horizon_s=args.horizon_s,
            context_frames=args.context_frames,
            stride_s=args.stride_s,
            clips_per_bag=args.clips_per_bag,
            max_clips=args.max_clips,
            seed=args.seed,
            modality=args.modality or (profile.modality if profile else None),
            topics=topics,
            conventions=profile.conventions if profile else BagConventions(),
            intrinsics=tuple(args.fx_fy_cx_cy) if args.fx_fy_cx_cy else None,
            intrinsics_size=args.intrinsics_size,
            progress=not args.quiet,
            checkpoint=str(args.checkpoint),
            guidance_scale=args.guidance_scale,
            motion_estimator=args.motion_estimator,
            change_threshold=args.change_threshold,
        )
        device = _usable_device(torch, args.device)
        _writable_directory(args.out)  # before the evaluation, not after it
        if args.save_frames is not None:
            _writable_directory(args.save_frames, "--save-frames")
        model = WorldModel.from_pretrained(args.checkpoint, device=device)
        bags = [str(bag) for bag in find_bags(args.bags)]  # folders of bags too; .partial leftovers skipped
        if profile is not None:  # every topic it names that a bag lacks, in one error
            profile.check_bags(bags)
        result = evaluate_bags(model, bags, options)
    except CheckpointError as error:
        print(f"astra-eval: error: cannot load checkpoint: {error}", file=sys.stderr)
        return 2
    except (BagError, EvalError) as error:
        print(f"astra-eval: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"astra-eval: interrupted; nothing written to {args.out}", file=sys.stderr)
        return 130
    result.metrics["wall_time_s"] = time.perf_counter() - started
    if args.save_frames is not None:
        result.metrics["frames_dir"] = str(args.save_frames)
        written, stale = save_frames(result, args.save_frames)
        result.metrics["frames_files"] = [path.name for path in written]
        if stale:
            result.metrics.setdefault("notes", []).append(
                f"removed {len(stale)} clip file(s) of an earlier run from {args.save_frames}")
    paths = write_outputs(result, args.out)
    if args.save_frames is not None:
        paths["frames"] = args.save_frames
    if not args.quiet:
        print(summary_table(result.metrics))
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
