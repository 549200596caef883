"""Forecasts anchored at *now* (ROS-free): the time base, the catch-up, the actions, the live loop.

A prediction that starts at the newest observed frame is already in the past when it is published:
the frame is some tens of milliseconds old when it arrives and the model then needs a while. So each
live forecast is planned on the model's frame grid from the newest observed frame:

* **catch-up frames**: the grid times up to the moment the forecast is expected to be published,
  rolled through the commands already in force then (twist: the command in force at each time;
  pose modalities: the poses received since, interpolated, then extrapolated at constant velocity).
  They feed the model but are not published;
* **forecast frames**: from there to at least ``horizon_s`` later, under the command that holds now
  (a planner that knows better asks ``~/imagine``).

The node publishes only the frames stamped after the moment it publishes them, so every published
frame shows a time still to come.

**Time base.** The model was trained on frames ``frame_interval_s`` apart (its config); frames are
taken from the camera stream on that grid by stamp (:class:`FrameGrid`: a faster camera is thinned,
a slower one leaves gaps that are counted), so a horizon in seconds means the same at any CPU load.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from astra_ros.data.actions import KeyThresholds, camera_actions, keys_from_twist, twist_actions
from astra_ros.data.bags import COMMAND_TIMEOUT_NS
from astra_ros.data.frame_grid import FrameGrid  # noqa: F401  (the node takes frames onto the grid)
from astra_ros.data.geometry import (
    interpolate_transform,
    invert_transform,
    quaternion_to_matrix,
    rotation_to_6d,
    scale_motion,
)
from astra_ros.ros.predictor_core import robot_actions_from_transforms

# The commands the simulator's scenes were trained with (astra_ros/data/scenes/): forward speeds up to
# 0.7 m/s, yaw rates up to 1.1 rad/s. Requests beyond ``action_range_multiple`` times these are refused.
TRAINED_LINEAR_SPEED_MPS = 0.7
TRAINED_ANGULAR_SPEED_RADPS = 1.1


# ------------------------------------------------------------------------------------------ time base
# ------------------------------------------------------------------------------------------ plans
@dataclass(frozen=True)
class ForecastPlan:
    """Which grid frames one forecast rolls and which it decodes."""

    last_observed_ns: int  # stamp of the newest observed frame: grid frame 0
    anchor_ns: int  # "now" when it was planned (node clock)
    interval_s: float
    stamps_ns: np.ndarray  # int64 [N] the times of the rolled frames: last_observed + k * interval, k = 1..N
    decode_from: int  # frames before this index are catch-up only (not decoded, never published)
    catching_up: bool  # False when the images are too far behind the clock to catch up (see plan_forecast)

    @property
    def decode_indices(self) -> list[int]:
        return list(range(self.decode_from, len(self.stamps_ns)))


def plan_forecast(last_observed_ns: int, now_ns: int, interval_s: float, horizon_s: float,
                  expected_latency_s: float, max_catch_up_s: float) -> ForecastPlan:
    """The grid frames that cover ``horizon_s`` from the expected publication (now + latency).

    When the newest frame is more than ``max_catch_up_s`` older than now (images on another clock, a
    bag replayed without ``--clock``) nothing is caught up: the forecast starts at the newest frame,
    as an honest prediction of what followed it, and the caller reports it.
    """
    if not (interval_s > 0 and horizon_s > 0):
        raise ValueError(f"interval_s and horizon_s must be > 0, got {interval_s}, {horizon_s}")
    behind_s = (now_ns - last_observed_ns) * 1e-9
    catching_up = 0.0 <= behind_s <= max_catch_up_s
    start_s = max(0.0, behind_s + max(0.0, expected_latency_s)) if catching_up else 0.0
    frames = max(1, math.ceil((start_s + horizon_s) / interval_s - 1e-9))
    stamps = last_observed_ns + np.round(np.arange(1, frames + 1) * interval_s * 1e9).astype(np.int64)
    # Decode from the frames that may still be ahead at publication: those after now plus half the
    # expected latency (the model's latency varies; the rest are dropped at publication anyway).
    decode_after_ns = now_ns + int(0.5 * max(0.0, expected_latency_s) * 1e9) if catching_up else last_observed_ns
    decode_from = int(np.searchsorted(stamps, decode_after_ns, side="right"))
    decode_from = min(decode_from, frames - 1)
    return ForecastPlan(int(last_observed_ns), int(now_ns), float(interval_s), stamps, decode_from, catching_up)


class LatencyEstimate:
    """What the next forecast will take [s], from the recent cost per rolled frame (their median, with
    a margin: one slow forecast must not lengthen the next plan, which would make it slower still)."""

    def __init__(self, initial_s: float = 1.0, keep: int = 7, margin: float = 1.2, most_s: float = 3.0) -> None:
        self._recent: deque[float] = deque(maxlen=keep)
        self._initial_s = initial_s
        self._margin = margin
        self.most_s = most_s

    def add(self, seconds: float, frames: int) -> None:
        self._recent.append(seconds / max(1, frames))  # per rolled frame: plans differ in length

    def expected_s(self, horizon_s: float, interval_s: float, behind_s: float) -> float:
        """Expected latency for a plan whose length depends on the latency itself: the fixed point of
        latency = cost per frame x (behind + latency + horizon) / interval, at most ``most_s`` (a model
        slower than real time cannot catch up; its forecasts then start late rather than never)."""
        if not self._recent:
            return min(self._initial_s, self.most_s)
        rate = float(np.median(self._recent)) * self._margin / interval_s  # compute seconds per forecast second
        if rate >= 0.95:
            return self.most_s
        return min(self.most_s, rate * (max(0.0, behind_s) + horizon_s) / (1.0 - rate))

    @property
    def seconds_per_frame(self) -> float | None:
        return float(np.median(self._recent)) if self._recent else None


# ------------------------------------------------------------------------------------------ actions
def states_at(times_ns: np.ndarray, track_ns: Sequence[int], track: Sequence[np.ndarray], kind: str,
              now_ns: int, command_now: np.ndarray | None) -> np.ndarray:
    """The state (pose 4x4 or twist 6) at each of ``times_ns``.

    ``track`` holds the states received with their stamps (oldest first; at least one). Twist: up to
    ``now_ns`` the command in force (the newest at or before the time, zero once 0.5 s old, as in
    training); after it ``command_now``. Pose: interpolated between the received poses, extrapolated
    at the last step's constant velocity after the newest.
    """
    stamps = np.asarray(track_ns, dtype=np.int64)
    out = []
    for t in np.asarray(times_ns, dtype=np.int64):
        if kind == "twist":
            if t > now_ns and command_now is not None:
                out.append(np.asarray(command_now, dtype=np.float64))
                continue
            i = int(np.searchsorted(stamps, t, side="right")) - 1
            held = i >= 0 and t - stamps[i] <= COMMAND_TIMEOUT_NS  # as the bag reader pairs them
            out.append(np.asarray(track[i], dtype=np.float64) if held else np.zeros(6))
            continue
        i = int(np.searchsorted(stamps, t, side="right"))
        if 0 < i < len(stamps):
            span = stamps[i] - stamps[i - 1]
            out.append(interpolate_transform(track[i - 1], track[i], float(t - stamps[i - 1]) / span))
        elif i == 0:
            out.append(np.asarray(track[0], dtype=np.float64))
        elif len(stamps) < 2 or stamps[-1] == stamps[-2]:
            out.append(np.asarray(track[-1], dtype=np.float64))
        else:
            step = invert_transform(track[-2]) @ track[-1]
            factor = float(t - stamps[-1]) / float(stamps[-1] - stamps[-2])
            out.append(track[-1] @ scale_motion(step, factor))
    return np.stack(out) if out else np.zeros((0, 6) if kind == "twist" else (0, 4, 4))


def actions_from_states(modality: str, states: np.ndarray, interval_s: float, first_pose: np.ndarray | None,
                        thresholds: KeyThresholds = KeyThresholds()) -> np.ndarray:
    """Model action rows ``float32 [N, D]`` from states at grid times (twists [m/s, rad/s], poses 4x4).

    Camera actions are relative to ``first_pose`` (the window's first frame), as the window's own are.
    """
    states = np.asarray(states, dtype=np.float64)
    if modality == "twist":
        return twist_actions(states[:, :3], states[:, 3:], np.full(len(states), interval_s))
    if modality == "keys":
        return keys_from_twist(states[:, :3], states[:, 3:], thresholds)
    if modality == "camera":
        return camera_actions(np.concatenate([np.asarray(first_pose)[None], states]))[1:]
    return robot_actions_from_transforms(states)


# ------------------------------------------------------------------------------------------ ~/imagine in SI
SI_ACTION_DIMS = {"twist": 6, "keys": 7, "camera": 7, "robot": 8}
SI_ACTION_UNITS = {
    "twist": "body-frame velocity [vx vy vz m/s, wx wy wz rad/s]",
    "keys": "one-hot key [forward back left right turn_left turn_right stop]",
    "camera": "camera optical-frame pose in the pose topic's frame [x y z m, qx qy qz qw unit quaternion]",
    "robot": "end-effector pose in the robot base frame [x y z m, qx qy qz qw unit quaternion] and gripper opening [m]",
}


def check_action_range(modality: str, si_actions: np.ndarray, interval_s: float, multiple: float,
                       previous_pose: np.ndarray | None = None) -> None:
    """Refuse actions beyond ``multiple`` times the trained speeds (ValueError with the reason).

    Twist: the speeds themselves; pose modalities: the speed between consecutive poses (the first
    from ``previous_pose``, the newest observed one).
    """
    max_v, max_w = multiple * TRAINED_LINEAR_SPEED_MPS, multiple * TRAINED_ANGULAR_SPEED_RADPS
    a = np.asarray(si_actions, dtype=np.float64)
    if modality == "twist":
        v = float(np.abs(a[..., :3]).max())
        w = float(np.abs(a[..., 3:6]).max())
    elif modality == "keys":
        if not np.all((a == 0) | (a == 1)) or not np.all(a.sum(-1) == 1):
            raise ValueError("keys actions must be one-hot rows of 0 and 1")
        return
    else:
        poses = si_poses_to_transforms(a[..., :7])  # (B, N, 4, 4)
        if previous_pose is not None:
            first = np.broadcast_to(np.asarray(previous_pose, dtype=np.float64), poses.shape[:1] + (4, 4))
            poses = np.concatenate([first[:, None], poses], axis=1)
        if poses.shape[1] < 2:
            return
        steps = np.einsum("bnji,bnjk->bnik", poses[:, :-1, :3, :3], poses[:, 1:, :3, :3])
        angles = np.arccos(np.clip((np.trace(steps, axis1=-2, axis2=-1) - 1) / 2, -1, 1))
        v = float(np.linalg.norm(poses[:, 1:, :3, 3] - poses[:, :-1, :3, 3], axis=-1).max()) / interval_s
        w = float(angles.max()) / interval_s
    if v > max_v or w > max_w:
        raise ValueError(f"{modality} actions reach {v:.3g} m/s and {w:.3g} rad/s; the model was trained up to "
                         f"{TRAINED_LINEAR_SPEED_MPS} m/s and {TRAINED_ANGULAR_SPEED_RADPS} rad/s and takes at most "
                         f"action_range_multiple={multiple:g} times that")


def si_poses_to_transforms(poses: np.ndarray) -> np.ndarray:
    """``[..., 7]`` (x y z [m], qx qy qz qw) -> ``[..., 4, 4]``; quaternions must be unit (within 1e-3)."""
    poses = np.asarray(poses, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e200 squared is inf: refused below
        norms = np.linalg.norm(poses[..., 3:7], axis=-1)
    if not np.all(np.abs(norms - 1.0) <= 1e-3):
        worst = float(norms.flat[int(np.argmax(np.abs(norms - 1.0)))])
        raise ValueError(f"pose quaternions must be unit quaternions (x, y, z, w); one has norm {worst:.6g}")
    out = np.zeros(poses.shape[:-1] + (4, 4))
    out[..., :3, :3] = quaternion_to_matrix(poses[..., 3:7])
    out[..., :3, 3] = poses[..., :3]
    out[..., 3, 3] = 1.0
    return out


def si_to_model_actions(modality: str, si_actions: np.ndarray, interval_s: float, first_pose: np.ndarray | None,
                        ) -> np.ndarray:
    """``~/imagine`` actions in SI units ``[B, N, SI_ACTION_DIMS]`` -> model rows ``float32 [B, N, D]``."""
    a = np.asarray(si_actions, dtype=np.float64)
    if modality == "twist":
        return (a * interval_s).astype(np.float32)
    if modality == "keys":
        return a.astype(np.float32)
    transforms = si_poses_to_transforms(a[..., :7])
    if modality == "camera":
        base = invert_transform(np.asarray(first_pose, dtype=np.float64))
        relative = base @ transforms  # relative to the window's first frame, as the window's actions
        return relative[..., :3, :4].reshape(a.shape[:-1] + (12,)).astype(np.float32)
    rows = np.concatenate([transforms[..., :3, 3], rotation_to_6d(transforms[..., :3, :3]), a[..., 7:8]], axis=-1)
    return rows.astype(np.float32)


# ------------------------------------------------------------------------------------------ live loop
class LiveLoop:
    """The live forecasts in a thread of their own: the next one starts as soon as the previous one is
    out and a newer frame exists, no earlier than ``min_period_s()`` after the previous start (the
    ``publish_rate`` cap).

    ``next_job()`` (the node's, under its lock) returns a callable ``job(model)`` or None when there is
    no new frame; ``on_result`` / ``on_error`` get what the job returned or raised. :meth:`notify`
    wakes the loop (a new frame arrived).
    """

    IDLE_CHECK_S = 0.5  # [s] an idle loop looks again this often (and counts a tick with no new frame)

    def __init__(self, model: Any, next_job: Callable[[], Callable[[Any], Any] | None],
                 on_result: Callable[[Any], None], on_error: Callable[[BaseException], None],
                 min_period_s: Callable[[], float], num_threads: int = 1,
                 warm_up: Callable[[Any], None] | None = None) -> None:
        self.model = model
        self._warm_up = warm_up
        self._next_job, self._on_result, self._on_error = next_job, on_result, on_error
        self._min_period_s = min_period_s
        self._num_threads = num_threads
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self.running = False
        self._thread = threading.Thread(target=self._run, name="astra-live-loop", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        import torch

        if self._num_threads > 0:
            torch.set_num_threads(self._num_threads)
        if self._warm_up is not None:  # the first run of a model is slow: it must not set the first plan's length
            try:
                self._warm_up(self.model)
            except Exception as error:  # reported; the forecasts will show whether the model works
                self._on_error(error)
        last_start = -math.inf
        ran = False
        while not self.stopping.is_set():
            if not ran:
                self._wake.wait(self.IDLE_CHECK_S)
                self._wake.clear()
            if self.stopping.is_set():
                return
            wait_s = last_start + self._min_period_s() - time.monotonic()
            if wait_s > 0 and self.stopping.wait(wait_s):
                return
            try:
                job = self._next_job()
            except Exception as error:  # a job that cannot be planned is reported, the loop goes on
                self._on_error(error)
                job = None
            ran = job is not None
            if job is None:
                continue
            last_start = time.monotonic()
            self.running = True
            try:
                result = job(self.model)
            except BaseException as error:  # reported; the loop goes on with the next frame
                self.running = False
                if self.stopping.is_set():
                    return
                self._on_error(error)
                continue
            self.running = False
            if self.stopping.is_set():
                return
            try:
                self._on_result(result)
            except Exception as error:  # e.g. publishing failed: reported, and the loop must not die of it
                self._on_error(error)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the loop (a running forecast stops at its next chunk when it polls ``stopping``)."""
        self.stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
