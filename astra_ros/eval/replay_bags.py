"""Decoding the bags a replay evaluation reads: modality and topic checks for every bag before any is decoded,
frames thinned onto the model's grid, camera poses and intrinsics for the motion-alignment metric, and one
camera rate across the set (no ROS imports)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from astra_ros.data.bags import BagError, BagTopics, Episode, bag_topics, modality_from_topics, read_episode
from astra_ros.data.conventions import BagConventions
from astra_ros.data.geometry import PinholeIntrinsics
from astra_ros.eval.motion import R_BODY_OPTICAL
from astra_ros.eval.options import EvalError, EvalOptions

logger = logging.getLogger(__name__)

__all__ = ["ReplayBag", "load_bags", "model_intrinsics", "poses_from_camera_actions"]

# Relative difference of camera rates [-] above which bags cannot share one horizon axis.
_RATE_TOLERANCE = 0.05


@dataclass
class ReplayBag:
    """One decoded bag with what the replay needs from it."""

    path: str
    episode: Episode
    interval_s: float  # [s] median image interval
    poses: np.ndarray | None  # [T, 4, 4] optical camera poses relative to a fixed frame, or None
    K: np.ndarray | None  # 3x3 intrinsics at the model's resolution [px], or None


def _median_interval_s(path: str, stamps_ns: np.ndarray) -> float:
    if len(stamps_ns) < 2:
        raise EvalError(f"bag {path} has {len(stamps_ns)} image(s); at least two are needed to know the camera rate")
    return float(np.median(np.diff(stamps_ns))) * 1e-9


def _required_topics(modality: str, topics: BagTopics) -> tuple[str, ...]:
    """The topics ``read_episode`` cannot do without for ``modality``: the images and the actions."""
    actions = {"camera": topics.camera_pose, "robot": topics.ee_pose}.get(modality, topics.twist)
    return topics.image, actions


def _bag_modality(path: str, options: EvalOptions, known: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """The bag's modality (forced or from its topics), checked against the checkpoint's, its topics, and
    the topics it needs but lacks (the caller names those of every bag in one error)."""
    if not Path(path).exists():
        raise BagError(f"bag {path} does not exist")
    available = bag_topics(path)
    if not available:
        raise BagError(f"bag {path} is empty: it has no topics")
    modality = options.modality or modality_from_topics(available, options.topics, bag_path=path)
    if modality not in known:
        raise EvalError(f"bag {path} gives {modality!r} actions but the checkpoint knows {known}")
    missing = [topic for topic in _required_topics(modality, options.topics) if topic not in available]
    if missing:
        listed = ", ".join(f"{topic} ({kind})" for topic, kind in sorted(available.items()))
        return modality, available, [f"bag {path} has no topic {' nor '.join(repr(m) for m in missing)}, needed for "
                                     f"modality {modality!r}; topics in the bag: {listed}"]
    return modality, available, []


def _motion_poses(path: str, episode: Episode, available: dict[str, str], options: EvalOptions,
                  resolution: tuple[int, int], notes: list[str], grid_s: float | None = None) -> np.ndarray | None:
    """Optical camera poses [T, 4, 4] (relative to a fixed frame) for the motion-alignment metric.

    Camera actions already are such poses. Twist and keys bags use the camera pose topic when the bag
    has it, else the odometry pose, taking the camera to look along the robot's x axis (its offset from
    the base is ignored, so translation directions are approximate while turning). A fixed camera
    (robot modality) has no ego-motion to check.
    """
    if episode.modality == "camera":
        return poses_from_camera_actions(episode.actions)
    if episode.modality == "robot":
        notes.append(f"bag {path}: robot modality (fixed camera), motion alignment not measured")
        return None
    topics = options.topics
    if topics.camera_pose in available:
        source, body_frame = topics.camera_pose, False
    elif topics.odom in available:
        source, body_frame = topics.odom, True
        notes.append(f"bag {path}: camera motion from {topics.odom} assuming a forward-looking camera at the base")
    else:
        notes.append(f"bag {path}: no {topics.camera_pose} or {topics.odom} topic, motion alignment not measured")
        return None
    try:
        pose_episode = read_episode(path, "camera", resolution, topics=dataclasses.replace(topics, camera_pose=source),
                                    conventions=BagConventions() if body_frame else options.conventions,
                                    frame_interval_s=grid_s)  # the same frames as the actions'
    except BagError as error:  # the poses only serve the optional alignment metric
        notes.append(f"bag {path}: camera poses unusable, motion alignment not measured ({error})")
        return None
    if len(pose_episode.stamps_ns) != len(episode.stamps_ns) or np.any(pose_episode.stamps_ns != episode.stamps_ns):
        raise BagError(f"bag {path}: the images read for the camera poses differ from those of the actions")
    poses = poses_from_camera_actions(pose_episode.actions)
    if body_frame:
        # Relative body poses inv(B0) Bi become optical with the fixed body->optical rotation.
        to_optical = np.eye(4)
        to_optical[:3, :3] = R_BODY_OPTICAL
        poses = np.linalg.inv(to_optical) @ poses @ to_optical
    return poses


def poses_from_camera_actions(actions: np.ndarray) -> np.ndarray:
    """Camera action rows [T, 12] -> homogeneous poses [T, 4, 4] (NaN rows stay NaN)."""
    poses = np.zeros((len(actions), 4, 4))
    poses[:, :3, :4] = np.asarray(actions, dtype=np.float64).reshape(-1, 3, 4)
    poses[:, 3, 3] = 1.0
    return poses


def _intrinsics(path: str, episode: Episode, options: EvalOptions, resolution: tuple[int, int],
                notes: list[str]) -> np.ndarray | None:
    """3x3 intrinsics at the model's resolution [px]: the flag, else the bag's camera_info, else None."""
    if options.intrinsics is not None:
        fx, fy, cx, cy = options.intrinsics
        width, height = options.intrinsics_size or (resolution[1], resolution[0])
        return PinholeIntrinsics(width, height, fx, fy, cx, cy).scaled(resolution).matrix()
    if episode.camera_info is not None:
        return episode.camera_info.matrix()
    notes.append(f"bag {path}: no camera_info and no --fx-fy-cx-cy, motion alignment not measured")
    return None


def model_intrinsics(bag: ReplayBag, options: EvalOptions, resolution: tuple[int, int]) -> np.ndarray | None:
    """Intrinsics at the model's resolution for a model's own use (``rotation_reference``): the flag, else
    the bag's camera_info, else None (the model's default camera)."""
    if bag.K is not None:
        return bag.K
    if options.intrinsics is not None or bag.episode.camera_info is not None:
        return _intrinsics(bag.path, bag.episode, options, resolution, [])
    return None


def load_bags(model: Any, bag_paths: Sequence[str], options: EvalOptions, notes: list[str]) -> list[ReplayBag]:
    known = list(model.modalities)
    resolution = tuple(model.resolution)
    # Fail before decoding anything when a bag is missing or of a modality the model does not know.
    checked = [_bag_modality(str(p), options, known) for p in bag_paths]
    problems = [problem for _, _, missing in checked for problem in missing]
    if problems:  # every missing topic of every bag in one error, not one per attempt
        raise BagError("; ".join(problems) + " (name the topics with --image-topic, --pose-topic, ...)")
    bags = []
    grid_s = getattr(getattr(model, "config", None), "frame_interval_s", None)  # faster cameras thinned onto it
    for path, (modality, available, _) in zip(map(str, bag_paths), checked):
        episode = read_episode(path, modality, resolution, topics=options.topics, conventions=options.conventions,
                               frame_interval_s=grid_s)
        interval = _median_interval_s(path, episode.stamps_ns)
        if grid_s is not None and interval < 1.5 * grid_s:
            # A camera at or above the model's rate, thinned onto its grid (a 15 Hz one alternately 67 and
            # 133 ms apart, as in the live node): its frames are scored at the model's interval.
            interval = grid_s
        poses = _motion_poses(path, episode, available, options, resolution, notes, grid_s)
        K = _intrinsics(path, episode, options, resolution, notes) if poses is not None else None
        bags.append(ReplayBag(path, episode, interval, poses, K))
        logger.info("bag %s: %d frames of %s actions at %.2f Hz", path, len(episode.frames), modality, 1 / interval)
    reference = bags[0].interval_s
    for bag in bags[1:]:
        if abs(bag.interval_s - reference) > _RATE_TOLERANCE * reference:
            raise EvalError(
                f"bag {bag.path} has images every {bag.interval_s * 1e3:.1f} ms but {bags[0].path} every "
                f"{reference * 1e3:.1f} ms; evaluate bags of one camera rate together"
            )
    return bags
