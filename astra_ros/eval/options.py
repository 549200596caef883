"""What ``astra-eval`` is asked to do (options, checked on construction) and the window sizes shared by every bag."""

from __future__ import annotations

import math
from dataclasses import dataclass

from astra_ros.data.bags import BagTopics
from astra_ros.data.conventions import BagConventions
from astra_ros.eval.dynamics import CHANGE_THRESHOLD

__all__ = ["EvalError", "EvalOptions", "ReplayPlan", "MOTION_ESTIMATORS"]

MOTION_ESTIMATORS = ("flow", "sift")


class EvalError(ValueError):
    """The evaluation cannot run as asked (bad options, incompatible bags, no usable clip)."""


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how; the defaults are those of ``astra-eval``."""

    horizon_s: float = 1.0  # [s] prediction horizon, rounded up to whole chunks of frames
    context_frames: int = 4  # observed frames before each prediction, rounded up to whole chunks
    stride_s: float = 1.0  # [s] spacing of evaluation points within a bag
    clips_per_bag: int = 8  # most evaluation points per bag (spread evenly over the usable ones)
    max_clips: int = 64  # most evaluation points in total (taken round-robin over the bags)
    seed: int = 0  # seeds the sampler (clip i uses seed + i) and the shuffled-actions derangement
    modality: str | None = None  # action modality of every bag; None picks each bag's from its topics
    topics: BagTopics = BagTopics()  # topic names to read
    conventions: BagConventions = BagConventions()  # the robot's axis signs, pose frame, intrinsics (its profile's)
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy [px]; overrides camera_info
    intrinsics_size: tuple[int, int] | None = None  # (width, height) [px] ``intrinsics`` refer to; None = model's
    # a window with an image interval above this x the bag's median (plus a thinned camera's own period) is skipped
    max_gap_factor: float = 1.5
    progress: bool = True  # tqdm bar over clips
    checkpoint: str = ""  # recorded in the metrics as given by the user
    guidance_scale: float | None = None  # action-free guidance s; None = the checkpoint's default
    # Correspondences of the camera-motion estimator (astra_ros.eval.motion): dense optical "flow" (the
    # default: it found a motion for 73-89 % of the real frame pairs of the 64-clip sets, where "sift"
    # keypoints found one for 9-16 %, too few small rendered frames have enough corners), or "sift".
    motion_estimator: str = "flow"
    change_threshold: float = CHANGE_THRESHOLD  # [grey levels] of the changed-pixel PSNR (astra_ros.eval.dynamics)

    def __post_init__(self) -> None:
        if not 0 < self.horizon_s < math.inf:
            raise EvalError(f"horizon must be positive and finite, got {self.horizon_s} s")
        if self.context_frames < 1:
            raise EvalError(f"context must be at least 1 frame, got {self.context_frames}")
        if not 0 < self.stride_s < math.inf:
            raise EvalError(f"stride must be positive and finite, got {self.stride_s} s")
        if self.clips_per_bag < 1 or self.max_clips < 1:
            raise EvalError(f"clips per bag ({self.clips_per_bag}) and max clips ({self.max_clips}) must be >= 1")
        if self.intrinsics is not None and (len(self.intrinsics) != 4 or not all(map(math.isfinite, self.intrinsics))
                                            or min(self.intrinsics[:2]) <= 0):
            raise EvalError(f"intrinsics must be finite fx fy cx cy with positive focal lengths, got {self.intrinsics}")
        if self.intrinsics_size is not None and self.intrinsics is None:
            raise EvalError("an intrinsics size without intrinsics (fx fy cx cy) has nothing to scale")
        if self.motion_estimator not in MOTION_ESTIMATORS:
            raise EvalError(f"motion estimator must be one of {MOTION_ESTIMATORS}, got {self.motion_estimator!r}")
        if self.guidance_scale is not None and not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise EvalError(f"guidance scale must be a finite number >= 0, got {self.guidance_scale}")
        if not (math.isfinite(self.change_threshold) and 0 <= self.change_threshold < 255):
            raise EvalError(f"change threshold must be in [0, 255) grey levels, got {self.change_threshold}")
        if not self.max_gap_factor > 1:
            raise EvalError(f"max_gap_factor must be > 1, got {self.max_gap_factor}")


@dataclass(frozen=True)
class ReplayPlan:
    """Window sizes shared by every bag."""

    context_frames: int  # observed frames, a multiple of frames_per_chunk
    horizon_frames: int  # predicted frames, a multiple of frames_per_chunk
    frame_interval_s: float  # [s] median image interval of the bags
    stride_frames: int  # frames between evaluation points

    @property
    def window_frames(self) -> int:
        return self.context_frames + self.horizon_frames

    @property
    def horizon_s(self) -> list[float]:
        """Seconds ahead of each predicted frame: (h + 1) x frame interval."""
        return [(h + 1) * self.frame_interval_s for h in range(self.horizon_frames)]
