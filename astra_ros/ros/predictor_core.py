"""The predictor's ROS-free core: observation window, action vectors, model jobs, request checks.

The node (:mod:`astra_ros.ros.predictor_node`) only converts messages to numpy and calls into here,
so everything below is tested with plain arrays.

States paired with each image, per action modality:

* ``camera``: the camera optical-frame pose in the world, a 4x4 transform (from ``pose``);
* ``robot``: the end-effector pose in the robot's base frame, a 4x4 transform (from ``pose``); the
  gripper opening is not subscribed and is 0;
* ``twist`` and ``keys``: the body-frame velocity ``[vx, vy, vz, wx, wy, wz]`` [m/s, rad/s] (from
  ``twist`` or from ``odom``'s twist).

Future actions (what the model is asked to imagine for the next ``horizon`` frames):

* ``twist`` / ``keys``: the latest command received, held for the whole horizon;
* ``camera`` / ``robot``: constant-velocity extrapolation of the last observed motion: the relative
  transform between the last two window frames, rescaled from their time apart to the frame interval
  (a screw motion, :func:`~astra_ros.data.geometry.scale_motion`), is applied for every future frame
  (the gripper stays at 0).

Actions follow :mod:`astra_ros.data.actions`, as in training and ``astra-eval``: camera actions of the
window and of its future are relative to the window's first frame; twist actions are velocities
times the frame interval, estimated as the median interval between the window's image stamps.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from astra_ros.data.actions import (
    MODALITY_DIMS,
    KeyThresholds,
    camera_actions,
    check_modality,
    frame_intervals,
    keys_from_twist,
    rebase_camera_actions,
    twist_actions,
)
from astra_ros.data.geometry import PinholeIntrinsics, invert_transform, rotation_to_6d, scale_motion
from astra_ros.data.images import resize_rgb

# The state each modality pairs with an image: a pose (4x4) or a twist (6).
POSE_MODALITIES = ("camera", "robot")
TWIST_MODALITIES = ("twist", "keys")


def state_kind(modality: str) -> str:
    """``"pose"`` or ``"twist"``: which input stream feeds ``modality``."""
    check_modality(modality)
    return "pose" if modality in POSE_MODALITIES else "twist"


# ------------------------------------------------------------------------------------------ actions
def robot_actions_from_transforms(transforms: np.ndarray) -> np.ndarray:
    """Robot actions ``float32 [T, 10]`` from end-effector transforms ``[T, 4, 4]``, gripper 0."""
    transforms = np.asarray(transforms, dtype=np.float64)
    return np.concatenate(
        [transforms[:, :3, 3], rotation_to_6d(transforms[:, :3, :3]), np.zeros((len(transforms), 1))], axis=-1
    ).astype(np.float32)


def median_frame_interval_s(stamps_ns: np.ndarray) -> float:
    """Median interval [s] between consecutive stamps ``[T]`` [ns]; needs at least two stamps."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    if len(stamps) < 2:
        raise ValueError(f"a frame interval needs at least 2 stamps, got {len(stamps)}")
    return float(np.median(np.diff(stamps))) * 1e-9


def window_actions(
    modality: str, stamps_ns: np.ndarray, states: np.ndarray, thresholds: KeyThresholds = KeyThresholds(),
    interval_s: float | None = None,
) -> np.ndarray:
    """Action vectors ``float32 [T, D]`` of the window's frames from their paired states.

    ``states`` is ``[T, 4, 4]`` for camera/robot and ``[T, 6]`` for twist/keys (see the module docstring).
    Twists are taken over ``interval_s`` (the model's frame interval), else over the stamps' intervals.
    """
    check_modality(modality)
    states = np.asarray(states, dtype=np.float64)
    if modality == "camera":
        return camera_actions(states)
    if modality == "robot":
        return robot_actions_from_transforms(states)
    if modality == "twist":
        intervals = frame_intervals(stamps_ns) if interval_s is None else np.full(len(states), interval_s)
        return twist_actions(states[:, :3], states[:, 3:], intervals)
    return keys_from_twist(states[:, :3], states[:, 3:], thresholds)


def future_actions(
    modality: str,
    stamps_ns: np.ndarray,
    states: np.ndarray,
    horizon: int,
    *,
    latest_command: np.ndarray | None = None,
    thresholds: KeyThresholds = KeyThresholds(),
) -> np.ndarray:
    """Actions ``float32 [horizon, D]`` for the frames after the window (see the module docstring).

    ``latest_command`` ``[6]`` is the newest twist received (twist/keys); when None the last paired
    state is held instead.
    """
    check_modality(modality)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    states = np.asarray(states, dtype=np.float64)
    interval_s = median_frame_interval_s(stamps_ns)
    if modality in TWIST_MODALITIES:
        command = states[-1] if latest_command is None else np.asarray(latest_command, dtype=np.float64)
        commands = np.repeat(command[None], horizon, axis=0)  # (horizon, 6)
        if modality == "twist":
            return twist_actions(commands[:, :3], commands[:, 3:], np.full(horizon, interval_s))
        return keys_from_twist(commands[:, :3], commands[:, 3:], thresholds)
    # Constant velocity: the last step's relative motion, rescaled from the time between the last two
    # frames (longer where an image was dropped) to the frame interval, applied for every future frame.
    last_gap_s = float(np.int64(stamps_ns[-1]) - np.int64(stamps_ns[-2])) * 1e-9
    step = invert_transform(states[-2]) @ states[-1]  # (4, 4) last frame in the previous one
    if last_gap_s > 0:
        step = scale_motion(step, interval_s / last_gap_s)
    future = [states[-1]]
    for _ in range(horizon):
        future.append(future[-1] @ step)
    future_poses = np.stack(future[1:])  # (horizon, 4, 4)
    if modality == "robot":
        return robot_actions_from_transforms(future_poses)
    # Camera actions are relative to the window's first frame, like the window's own.
    return camera_actions(np.concatenate([states[:1], future_poses]))[1:]


# ------------------------------------------------------------------------------------------ window
@dataclass(frozen=True)
class Observation:
    """One observed image (already at the model's resolution) and the state paired with it."""

    stamp_ns: int
    frame: np.ndarray  # uint8 [h, w, 3] at the model resolution
    state: np.ndarray  # [4, 4] pose or [6] twist
    frame_id: str = ""


@dataclass(frozen=True)
class WindowSnapshot:
    """A copy of the window at one moment, handed to the model worker."""

    modality: str
    stamps_ns: np.ndarray  # int64 [T]
    frames: np.ndarray  # uint8 [T, h, w, 3]
    actions: np.ndarray  # float32 [T, D]
    future_actions: np.ndarray  # float32 [horizon, D]
    frame_interval_s: float  # [s]
    frame_id: str
    states: np.ndarray | None = None  # the window's paired states ([T, 4, 4] poses or [T, 6] twists)

    @property
    def last_stamp_ns(self) -> int:
        return int(self.stamps_ns[-1])

    def future_stamps_ns(self, horizon: int) -> np.ndarray:
        """Stamps [ns] of the ``horizon`` frames after the last observed one."""
        return self.last_stamp_ns + np.round(np.arange(1, horizon + 1) * self.frame_interval_s * 1e9).astype(np.int64)


class ObservationWindow:
    """The last ``context_frames`` observations of one modality, in stamp order."""

    def __init__(self, context_frames: int, resolution: tuple[int, int], resize_mode: str = "squash") -> None:
        if context_frames < 2:
            raise ValueError(f"context_frames must be >= 2 (a frame interval needs two frames), got {context_frames}")
        check_resize_mode(resize_mode)
        self.context_frames = context_frames
        self.resolution = resolution
        self.resize_mode = resize_mode
        self._observations: deque[Observation] = deque(maxlen=context_frames)

    def __len__(self) -> int:
        return len(self._observations)

    @property
    def full(self) -> bool:
        return len(self._observations) == self.context_frames

    @property
    def last(self) -> Observation | None:
        return self._observations[-1] if self._observations else None

    def add(self, stamp_ns: int, rgb: np.ndarray, state: np.ndarray, frame_id: str = "") -> Observation | None:
        """Append an RGB frame ``uint8 [H, W, 3]`` (any size: resized) with its state.

        Returns the oldest observation when the window was full and it was pushed out, else None.
        """
        frame = fit_to_model(np.ascontiguousarray(rgb, dtype=np.uint8), self.resolution, self.resize_mode)
        evicted = self._observations[0] if self.full else None
        self._observations.append(Observation(int(stamp_ns), frame, np.array(state, dtype=np.float64), frame_id))
        return evicted

    @property
    def stamps_ns(self) -> list[int]:
        """Stamps [ns] of the observations in the window, oldest first."""
        return [o.stamp_ns for o in self._observations]

    def resize(self, context_frames: int) -> None:
        """Change the window length, keeping the newest observations."""
        if context_frames < 2:
            raise ValueError(f"context_frames must be >= 2, got {context_frames}")
        self.context_frames = context_frames
        self._observations = deque(self._observations, maxlen=context_frames)

    def clear(self) -> None:
        self._observations.clear()

    def discard_after(self, stamp_ns: int) -> list[int]:
        """Remove the observations stamped after ``stamp_ns`` (an outlier stamp taken back); their stamps."""
        removed = [o.stamp_ns for o in self._observations if o.stamp_ns > stamp_ns]
        self._observations = deque((o for o in self._observations if o.stamp_ns <= stamp_ns), maxlen=self.context_frames)
        return removed

    def snapshot(
        self,
        modality: str,
        horizon: int,
        *,
        latest_command: np.ndarray | None = None,
        thresholds: KeyThresholds = KeyThresholds(),
        interval_s: float | None = None,
    ) -> WindowSnapshot:
        """Copy the window with its actions and future actions; the window must be full.

        ``interval_s``: the model's frame interval, which the window's frames were taken on (see
        :class:`~astra_ros.ros.live_forecast.FrameGrid`); None: the median interval of their stamps.
        """
        if not self.full:
            raise ValueError(f"the window has {len(self)} of {self.context_frames} frames")
        observations = list(self._observations)
        stamps = np.array([o.stamp_ns for o in observations], dtype=np.int64)
        states = np.stack([o.state for o in observations])
        return WindowSnapshot(
            modality=modality,
            stamps_ns=stamps,
            frames=np.stack([o.frame for o in observations]),
            actions=window_actions(modality, stamps, states, thresholds, interval_s),
            future_actions=future_actions(
                modality, stamps, states, horizon, latest_command=latest_command, thresholds=thresholds
            ),
            frame_interval_s=median_frame_interval_s(stamps) if interval_s is None else float(interval_s),
            frame_id=observations[-1].frame_id,
            states=states,
        )


# ------------------------------------------------------------------------------------------ model
RESIZE_MODES = ("crop", "squash")
# Focal lengths a camera_info may give, in multiples of the image width: below 0.05 is a field of view
# beyond 170 degrees, above 1000 a telescope; either is a unit or calibration error, not a camera.
FOCAL_RANGE_WIDTHS = (0.05, 1000.0)


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    return mode


def crop_box(width: int, height: int, resolution: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)``: the centred part of a ``width`` x ``height`` image with the model's aspect ratio."""
    target = resolution[1] / resolution[0]  # width / height
    if width / height > target:
        w = max(1, int(round(height * target)))
        return (width - w) // 2, 0, w, height
    h = max(1, int(round(width / target)))
    return 0, (height - h) // 2, width, h


def fit_to_model(rgb: np.ndarray, resolution: tuple[int, int], mode: str = "crop") -> np.ndarray:
    """An RGB image at the model's ``resolution = (height, width)``: centre-cropped to its aspect ratio
    first (``crop``: the geometry stays true) or resized as it is (``squash``: nothing is cut off)."""
    if mode == "crop":
        x0, y0, w, h = crop_box(rgb.shape[1], rgb.shape[0], resolution)
        rgb = rgb[y0:y0 + h, x0:x0 + w]
    return resize_rgb(np.ascontiguousarray(rgb), resolution)


def model_intrinsics(k: Sequence[float], width: int, height: int, resolution: tuple[int, int],
                     resize_mode: str = "squash") -> np.ndarray:
    """Intrinsics (3, 3) [px] at the model's ``resolution = (height, width)`` from a camera_info's ``k``
    (row-major 3x3) for images of ``width`` x ``height``, cropped (``crop``: the principal point moves)
    or squashed (the focal lengths scale per axis) as :func:`fit_to_model` does. Raises ValueError
    naming what makes them unusable (an uncalibrated driver's zeros, non-finite values, no image size,
    focal lengths no camera has)."""
    matrix = np.asarray(k, dtype=np.float64)
    if matrix.size != 9 or not np.isfinite(matrix).all():
        raise ValueError(f"K must be 9 finite numbers, got {np.asarray(k).tolist()}")
    matrix = matrix.reshape(3, 3)
    if width <= 0 or height <= 0 or matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise ValueError(f"an uncalibrated camera_info: {width}x{height} px, fx={matrix[0, 0]}, fy={matrix[1, 1]}")
    low, high = FOCAL_RANGE_WIDTHS[0] * width, FOCAL_RANGE_WIDTHS[1] * width
    if not (low <= matrix[0, 0] <= high and low <= matrix[1, 1] <= high):
        raise ValueError(f"focal lengths fx={matrix[0, 0]:.6g}, fy={matrix[1, 1]:.6g} px are outside "
                         f"[{low:.4g}, {high:.4g}] px for a {width} px wide image (a unit or calibration error)")
    cx, cy = matrix[0, 2], matrix[1, 2]
    if check_resize_mode(resize_mode) == "crop":
        x0, y0, w, h = crop_box(int(width), int(height), resolution)
        width, height, cx, cy = w, h, cx - x0, cy - y0
    camera = PinholeIntrinsics(int(width), int(height), matrix[0, 0], matrix[1, 1], cx, cy)
    return camera.scaled(tuple(resolution)).matrix()


def load_world_model(checkpoint: str) -> Any:
    """A ``WorldModel`` for the node's ``checkpoint`` parameter: ``"default"``, a directory, or
    ``"random:<preset>"`` (random weights; ``random:tiny`` is 32x32, fast enough for tests on one
    CPU core). One reading for every tool: :func:`astra_ros.model.load_world_model`."""
    from astra_ros.model import load_world_model as load

    return load(checkpoint)


@dataclass(frozen=True)
class Prediction:
    """The live prediction from one window."""

    snapshot: WindowSnapshot
    frames: np.ndarray  # uint8 [horizon, h, w, 3]
    stamps_ns: np.ndarray  # int64 [horizon] the future times the frames show
    latency_s: float  # [s] start + imagine
    actions: np.ndarray | None = None  # float32 [horizon, D] the actions of these frames (None: the snapshot's future)
    anchor_ns: int | None = None  # the node-clock "now" the forecast was planned at
    rolled_frames: int = 0  # frames the model rolled, catch-up included
    caught_up: bool = True  # False: the images are on another clock; the forecast starts at the newest frame


def whole_chunks(snapshot: WindowSnapshot, frames_per_chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The window's newest whole chunks (frames, actions) and its future actions, as the model takes them.

    ``WorldModel.start`` keeps whole chunks only. Camera actions are relative to the window's first
    frame, so when that frame is left out they are re-expressed relative to the first frame kept, as
    every training clip's are (to its own first frame).
    """
    drop = len(snapshot.frames) % frames_per_chunk
    frames, actions, future = snapshot.frames[drop:], snapshot.actions[drop:], snapshot.future_actions
    if drop and snapshot.modality == "camera":
        both = rebase_camera_actions(np.concatenate([actions, future]))
        actions, future = both[:len(actions)], both[len(actions):]
    return frames, actions, future


def predict_window(model: Any, snapshot: WindowSnapshot, *, seed: int | None = None,
                   guidance_scale: float | None = None, should_stop: Callable[[], bool] | None = None) -> Prediction:
    """Observe the window (``model.start``) and imagine its future actions; runs in the model worker.

    ``guidance_scale`` None: the model's default for the snapshot's modality; ``should_stop``: see
    ``WorldModel.imagine``.
    """
    began = time.perf_counter()
    observed, actions, future = whole_chunks(snapshot, model.frames_per_chunk)
    model.start(observed, actions, modality=snapshot.modality, seed=seed)
    frames = model.imagine(future[None], seed=seed, guidance_scale=guidance_scale,
                           should_stop=should_stop)[0]  # (horizon, h, w, 3)
    horizon = len(snapshot.future_actions)
    return Prediction(snapshot, frames, snapshot.future_stamps_ns(horizon), time.perf_counter() - began)


def forecast_window(model: Any, snapshot: WindowSnapshot, plan: Any, *, seed: int | None = None,
                    guidance_scale: float | None = None, should_stop: Callable[[], bool] | None = None) -> Prediction:
    """Observe the window and roll its future (``snapshot.future_actions``: one row per frame of ``plan``,
    catch-up first), decoding only ``plan.decode_indices``; runs in the live loop's thread."""
    began = time.perf_counter()
    observed, actions, future = whole_chunks(snapshot, model.frames_per_chunk)
    model.start(observed, actions, modality=snapshot.modality, seed=seed)
    indices = plan.decode_indices
    frames = model.imagine(future[None], seed=seed, guidance_scale=guidance_scale, decode=indices,
                           should_stop=should_stop)[0]
    return Prediction(snapshot, frames, plan.stamps_ns[indices], time.perf_counter() - began,
                      actions=future[indices], anchor_ns=plan.anchor_ns, rolled_frames=len(future),
                      caught_up=plan.catching_up)


def montage(observed: np.ndarray, predicted: np.ndarray, gap_px: int = 2) -> np.ndarray:
    """One RGB image ``uint8``: the last observed frame, then each predicted frame, left to right.

    ``observed`` ``[h, w, 3]`` is resized to the predicted frames' size; columns are separated by
    ``gap_px`` white pixels.
    """
    height, width = predicted.shape[1:3]
    tiles = [resize_rgb(observed, (height, width))] + list(predicted)
    gap = np.full((height, gap_px, 3), 255, dtype=np.uint8)
    columns: list[np.ndarray] = []
    for index, tile in enumerate(tiles):
        if index:
            columns.append(gap)
        columns.append(tile)
    return np.ascontiguousarray(np.concatenate(columns, axis=1))


@dataclass(frozen=True)
class ImagineLimits:
    max_batch: int
    max_horizon: int
    max_steps: int = 64  # Euler steps per chunk a request may ask for: the worker cannot be interrupted


def check_imagine_request(
    actions: np.ndarray, *, batch: int, horizon: int, action_dim: int, expected_dim: int, limits: ImagineLimits,
    denoise_steps: int = 0, guidance_scale: float = 0.0,
) -> np.ndarray:
    """Validate an ``~/imagine`` request; return the actions as ``float32 [batch, horizon, action_dim]``.

    Raises ``ValueError`` saying what was expected when a size, a limit or a value is wrong.
    """
    if not 1 <= batch <= limits.max_batch:
        raise ValueError(f"batch must be in [1, max_imagine_batch={limits.max_batch}], got {batch}")
    if not 1 <= horizon <= limits.max_horizon:
        raise ValueError(f"horizon must be in [1, max_imagine_horizon={limits.max_horizon}], got {horizon}")
    if action_dim != expected_dim:
        raise ValueError(f"action_dim must be {expected_dim} for this modality, got {action_dim}")
    if not 0 <= denoise_steps <= limits.max_steps:
        raise ValueError(f"denoise_steps must be in [0, max_imagine_steps={limits.max_steps}] (0: the model's), "
                         f"got {denoise_steps}")
    if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be finite and >= 0 (0: the model's), got {guidance_scale}")
    flat = np.asarray(actions, dtype=np.float32).reshape(-1)
    if flat.size != batch * horizon * action_dim:
        raise ValueError(
            f"actions must hold batch*horizon*action_dim = {batch}*{horizon}*{action_dim} = "
            f"{batch * horizon * action_dim} values, got {flat.size}"
        )
    if not np.isfinite(flat).all():
        raise ValueError("actions contain NaN or inf values")
    return flat.reshape(batch, horizon, action_dim)


def action_dim_of(modality: str) -> int:
    return MODALITY_DIMS[check_modality(modality)]


# ------------------------------------------------------------------------------------------ worker
class ModelWorker:
    """Runs jobs on the model in one thread, fed by a bounded queue, so ROS callbacks never run torch.

    :meth:`try_submit` never blocks (a full queue returns None: the caller counts a skipped job);
    :meth:`submit` waits up to ``timeout_s`` for room. Each job gets the model and its result or
    exception lands in the returned ``Future``. Jobs that can take long poll :attr:`stopping` (pass
    ``stopping.is_set`` as the model's ``should_stop``), so :meth:`stop` ends them at their next
    chunk instead of leaving torch running in a thread while the interpreter shuts down.
    """

    def __init__(self, model: Any, *, queue_size: int = 1, num_threads: int = 1) -> None:
        self.model = model
        self._num_threads = num_threads
        self.stopping = threading.Event()
        self._jobs: queue.Queue[tuple[Callable[[Any], Any], Future] | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="astra-model-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import torch

        torch.set_num_threads(self._num_threads)
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(self.model))
            except BaseException as error:  # handed to the caller through the future
                future.set_exception(error)

    def try_submit(self, job: Callable[[Any], Any]) -> Future | None:
        future: Future = Future()
        try:
            self._jobs.put_nowait((job, future))
        except queue.Full:
            return None
        return future

    def submit(self, job: Callable[[Any], Any], timeout_s: float) -> Future:
        future: Future = Future()
        self._jobs.put((job, future), timeout=timeout_s)  # raises queue.Full on timeout
        return future

    @property
    def busy(self) -> bool:
        return not self._jobs.empty()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the thread: queued jobs are cancelled, the running one is asked to stop (``stopping``)
        and waited for; False if it did not end within ``timeout_s``."""
        self.stopping.set()
        while True:
            try:
                _, future = self._jobs.get_nowait()  # type: ignore[misc]
                future.cancel()
            except (queue.Empty, TypeError):
                break
        self._jobs.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


# ------------------------------------------------------------------------------------------ model jobs
class LiveStream:
    """Where the model's live stream comes from: the last started window's last stamp, frame interval, frame id.

    Jobs run in the worker thread; ``clear`` (~/reset, a modality switch, a clock restart) runs in the
    executor, possibly while a job that started from the old history is still running. Each clear
    opens a new generation: a job records the generation it was submitted in, and its ``started``
    only counts if no clear came in between, so a reset is never undone by a job that was in flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: tuple[int, float, str] | None = None
        self.generation = 0

    @property
    def info(self) -> tuple[int, float, str] | None:
        return self._info

    def started(self, snapshot: Any, generation: int) -> bool:
        """Record that the model now holds ``snapshot``'s history; False if a clear came after the job's submission."""
        with self._lock:
            if generation != self.generation:
                return False
            self._info = (snapshot.last_stamp_ns, snapshot.frame_interval_s, snapshot.frame_id)
            return True

    def clear(self) -> None:
        with self._lock:
            self._info = None
            self.generation += 1


def live_job(model: Any, *, live: LiveStream, generation: int, snapshot: Any, seed: int | None,
             guidance_scale: float | None = None, should_stop: Callable[[], bool] | None = None,
             plan: Any = None) -> tuple[Prediction, dict[str, list[float]]] | None:
    """Worker job: the live prediction (the forecast of ``plan``, else the snapshot's future) and the
    expert usage after it; None when the history it came from was cleared while it ran (its frames
    would show the past the caller asked to forget)."""
    if plan is not None:
        prediction = forecast_window(model, snapshot, plan, seed=seed, guidance_scale=guidance_scale,
                                     should_stop=should_stop)
    else:
        prediction = predict_window(model, snapshot, seed=seed, guidance_scale=guidance_scale, should_stop=should_stop)
    if not live.started(snapshot, generation):
        return None
    return prediction, model.expert_usage()


@dataclass(frozen=True)
class ImagineSampling:
    """How an ``~/imagine`` request samples: overrides (None = the model's default) and what it returns."""

    steps: int | None = None  # Euler steps per chunk
    guidance_scale: float | None = None
    shared_noise: bool = False  # one noise for every candidate (common random numbers)
    last_frame_only: bool = False  # decode and return each candidate's last frame only
    max_batch: int | None = None  # sub-batch size (None: the model's memory estimate)
    draft: bool = False  # WorldModel.imagine's fast path (coarser frames)


def imagine_job(model: Any, *, snapshot: WindowSnapshot, catch_up: np.ndarray, actions: np.ndarray, modality: str,
                seed: int, sampling: ImagineSampling = ImagineSampling(), started: dict | None = None,
                should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Worker job (the ``~/imagine`` model, a twin of the live one): batched futures ``(B, N, h, w, 3)``
    (N = 1 with ``last_frame_only``).

    The model observes ``snapshot``'s window (skipped when ``started`` records that it already holds
    it), rolls the ``catch_up`` rows ``[C, D]`` (the commands in force from the newest observed frame
    up to now, the same for every candidate, not returned), then each candidate's ``actions``
    ``[B, N, D]`` from now.
    """
    key = (snapshot.last_stamp_ns, snapshot.modality, snapshot.frames.shape)
    if started is None or started.get("key") != key:
        observed, window_actions_, _ = whole_chunks(snapshot, model.frames_per_chunk)
        model.start(observed, window_actions_, modality=snapshot.modality)
        if started is not None:
            started["key"] = key
    b, n = actions.shape[:2]
    c = len(catch_up)
    rows = np.concatenate([np.broadcast_to(catch_up[None], (b, c, actions.shape[2])), actions], axis=1) if c else actions
    decode = [c + n - 1] if sampling.last_frame_only else list(range(c, c + n))
    return model.imagine(rows, modality=modality, seed=seed, steps=sampling.steps,
                         guidance_scale=sampling.guidance_scale, shared_noise=sampling.shared_noise,
                         max_batch=sampling.max_batch, decode=decode, should_stop=should_stop, draft=sampling.draft)

