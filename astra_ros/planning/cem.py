"""Cross-entropy-method planning through a world model's imagination (no ROS here).

The decision variable is a planar base command per *step*: ``(v, w)`` = forward speed [m/s] and yaw
rate [rad/s] (REP-103: positive w turns left), held for ``frames_per_step`` camera frames; a plan is
``horizon_steps`` such steps. :class:`ActionEncoder` turns plans into the model's per-frame action
rows (``twist``: body velocity times the frame interval, as recorded; ``keys``: the thresholded
one-hot keys), so the same planner drives a twist or a keys model.

:class:`CEMPlanner` keeps a Gaussian over plans (a mean and a per-entry std), and per iteration
samples ``candidates`` plans (the current mean among them), clips them to the command limits, asks
``imagine(actions (B, N, D)) -> frames (B, K, H, W, 3)`` for their futures, scores the frames
against the goal image, and refits the Gaussian to the ``elites`` best. The next call warm-starts
from this plan shifted by the steps executed since (``steps_done``; one by default, as when every
step is replanned). :class:`PlanSchedule` says which step of a plan is due at a given time, so that
a plan is executed step by step and not its first command for as long as the next plan takes. The ``imagine`` callable is all the planner knows of the model:
in-process it wraps ``WorldModel.imagine`` (:func:`model_imagine`), in the planner node it calls the
predictor's ``~/imagine`` service. It should use common random numbers (the same noise for every
candidate and every iteration of one planning call), so scores differ through the actions only.

**Which distance, and why** (:class:`GoalScorer`): the mean squared difference of the imagined frame
and the goal image, both area-downsampled to ``score_size`` (16x16) pixels, RGB in [0, 1]. The models
here predict blurry frames: at full resolution the distance would be dominated by missing texture,
the same for every candidate; at 16x16 what is left is the layout of large coloured regions, which
is exactly what turning and driving change. It needs nothing but the frames (so it works on frames
that came through a ROS service), costs microseconds, and has no features to train or to be fooled
by the model's blur. The score is that distance for the final imagined frame plus
``intermediate_weight`` times the mean over the earlier returned frames (0 by default: only where
the plan ends matters; a positive weight favours plans that get close early).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from astra_ros.data.actions import KEY_NAMES, KeyThresholds, keys_from_twist, twist_actions

ImagineFn = Callable[[np.ndarray], np.ndarray]  # actions (B, N, D) -> uint8 frames (B, K, H, W, 3)
CONTROL_NAMES = ("linear_x", "angular_z")  # [m/s], [rad/s]


@dataclass(frozen=True)
class CEMConfig:
    """Settings of the cross-entropy method (defaults: a plan in under half a second on 2 CPU cores with
    the default model and ``imagine(draft=True)``)."""

    horizon_steps: int = 3  # steps per plan; each step holds one command for frames_per_step frames
    frames_per_step: int = 2  # camera frames per step (the model's frames per chunk is the natural choice)
    candidates: int = 12  # plans imagined per iteration (one imagine batch)
    elites: int = 3  # best plans the Gaussian is refitted to
    # CEM iterations per planning call: one, because each call warm-starts from the last plan, so
    # replanning every step refines it over time (bench/plan_eval.py on 12 choosing goals: 10 reached
    # with one iteration of 12 candidates at 0.39 s per step, 11 with 16 at 0.63 s; docs/SPEED.md)
    iterations: int = 1
    linear_limits: tuple[float, float] = (-0.3, 0.6)  # [m/s] forward speed range
    angular_limits: tuple[float, float] = (-1.0, 1.0)  # [rad/s] yaw-rate range
    initial_std: tuple[float, float] = (0.3, 0.6)  # std of (v, w) at a cold start
    min_std: tuple[float, float] = (0.05, 0.1)  # the std never shrinks below this (keeps exploring)
    warm_start_std: tuple[float, float] = (0.2, 0.4)  # std after a warm start from the previous plan
    smoothing: float = 0.0  # new mean = smoothing * old + (1 - smoothing) * elite mean
    execute: str = "mean"  # what is returned as the plan: "mean" (of the last elites) or "best" (lowest score seen)

    def __post_init__(self) -> None:
        if self.horizon_steps < 1 or self.frames_per_step < 1:
            raise ValueError("horizon_steps and frames_per_step must be >= 1")
        if not 1 <= self.elites <= self.candidates:
            raise ValueError(f"elites must be in [1, candidates={self.candidates}], got {self.elites}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        for name in ("linear_limits", "angular_limits"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} must be (low, high) with low < high, got {(low, high)}")
        if self.execute not in ("mean", "best"):
            raise ValueError(f"execute must be 'mean' or 'best', got {self.execute!r}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")

    @property
    def low(self) -> np.ndarray:
        return np.array([self.linear_limits[0], self.angular_limits[0]])

    @property
    def high(self) -> np.ndarray:
        return np.array([self.linear_limits[1], self.angular_limits[1]])

    @property
    def horizon_frames(self) -> int:
        return self.horizon_steps * self.frames_per_step


class ActionEncoder:
    """Plans ``(B, steps, 2)`` of (v [m/s], w [rad/s]) -> the model's action rows ``(B, steps*frames_per_step, D)``."""

    def __init__(self, modality: str = "twist", frame_interval_s: float = 0.1, frames_per_step: int = 2,
                 thresholds: KeyThresholds = KeyThresholds()) -> None:
        if modality not in ("twist", "keys"):
            raise ValueError(f"the planner drives a planar base: modality 'twist' or 'keys', got {modality!r}")
        if frame_interval_s <= 0:
            raise ValueError(f"frame_interval_s must be > 0, got {frame_interval_s}")
        self.modality = modality
        self.frame_interval_s = float(frame_interval_s)
        self.frames_per_step = int(frames_per_step)
        self.thresholds = thresholds

    @property
    def action_dim(self) -> int:
        return 6 if self.modality == "twist" else 7

    def __call__(self, plans: np.ndarray) -> np.ndarray:
        plans = np.asarray(plans, dtype=np.float64)
        b, steps = plans.shape[:2]
        per_frame = np.repeat(plans, self.frames_per_step, axis=1).reshape(-1, 2)  # (B*N, 2)
        linear = np.zeros((len(per_frame), 3))
        angular = np.zeros((len(per_frame), 3))
        linear[:, 0], angular[:, 2] = per_frame[:, 0], per_frame[:, 1]
        if self.modality == "twist":
            rows = twist_actions(linear, angular, np.full(len(per_frame), self.frame_interval_s))
        else:
            rows = keys_from_twist(linear, angular, self.thresholds)
        return rows.reshape(b, steps * self.frames_per_step, -1).astype(np.float32)

    def to_si(self, rows: np.ndarray) -> np.ndarray:
        """Model action rows ``(..., D)`` as ``~/imagine`` takes them, in SI units: twist rows are
        velocities x frame_interval_s, so they become [m/s, rad/s] again; keys are one-hot as they are."""
        rows = np.asarray(rows, dtype=np.float64)
        return (rows / self.frame_interval_s if self.modality == "twist" else rows).astype(np.float32)

    def command_as_imagined(self, command: np.ndarray) -> tuple[float, float]:
        """The (v, w) to send for a planned step, so the robot does what the model was shown.

        For twists the step itself. For keys the model saw only the dominant key of (v, w): the other
        component is zeroed (both below their thresholds: stop), or the robot would turn while the
        imagined future drove straight.
        """
        v, w = (float(x) for x in command)
        if self.modality == "twist":
            return v, w
        key = keys_from_twist(np.array([[v, 0.0, 0.0]]), np.array([[0.0, 0.0, w]]), self.thresholds)[0]
        name = KEY_NAMES[int(np.argmax(key))]
        if name in ("forward", "back"):
            return v, 0.0
        if name in ("turn_left", "turn_right"):
            return 0.0, w
        return 0.0, 0.0


def downsample(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., size, size, 3)`` in [0, 1], area-averaged."""
    frames = np.asarray(frames)
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in flat])
    return (out.astype(np.float32) / 255.0).reshape(*frames.shape[:-3], size, size, 3)


class GoalScorer:
    """Distance of frames to a goal image: MSE of 16x16 area-downsampled RGB in [0, 1] (see the module docstring)."""

    def __init__(self, goal: np.ndarray, score_size: int = 16, intermediate_weight: float = 0.0) -> None:
        goal = np.asarray(goal)
        if goal.dtype != np.uint8 or goal.ndim != 3 or goal.shape[-1] != 3:
            raise ValueError(f"goal must be a uint8 (H, W, 3) image, got {goal.dtype} {goal.shape}")
        self.score_size = int(score_size)
        self.intermediate_weight = float(intermediate_weight)
        self.goal = downsample(goal, self.score_size)

    def distance(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame distance: uint8 ``(..., H, W, 3)`` -> ``(...)``."""
        small = downsample(frames, self.score_size)
        return ((small - self.goal) ** 2).mean(axis=(-3, -2, -1))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Scores ``(B,)`` (lower is better) of candidate futures uint8 ``(B, K, H, W, 3)``."""
        d = self.distance(frames)  # (B, K)
        score = d[:, -1]
        if self.intermediate_weight and d.shape[1] > 1:
            score = score + self.intermediate_weight * d[:, :-1].mean(axis=1)
        return score


@dataclass
class PlanResult:
    """One planning call: the plan to follow and what the search saw."""

    plan: np.ndarray  # (horizon_steps, 2) (v, w) per step; plan[0] is the command to send now
    best_score: float  # lowest score of any imagined candidate
    mean_score_per_iteration: list[float]  # mean score of the candidates per iteration
    elite_score_per_iteration: list[float]  # mean score of the elites per iteration
    imagine_calls: int
    imagine_s: float  # [s] spent in imagine
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> np.ndarray:
        return self.plan[0]


@dataclass(frozen=True)
class PlanSchedule:
    """A plan being executed: step k's command is due over [start_s + k step_s, start_s + (k+1) step_s).

    ``step_s`` is the time the plan's imagination gave each step (frames_per_step x frame interval).
    Past the last step nothing is due: the plan was never imagined further, so a caller stops
    rather than hold the last command into a future nobody looked at.
    """

    plan: np.ndarray  # (horizon_steps, 2) (v, w)
    start_s: float  # [s] on the caller's clock
    step_s: float  # [s] per step

    def __post_init__(self) -> None:
        if not (np.isfinite(self.step_s) and self.step_s > 0):
            raise ValueError(f"step_s must be a finite number > 0, got {self.step_s}")

    @property
    def duration_s(self) -> float:
        return len(self.plan) * self.step_s

    def steps_done(self, now_s: float) -> int:
        """Steps begun before ``now_s`` and finished by it (0 before the plan starts)."""
        return max(0, int(np.floor((now_s - self.start_s) / self.step_s + 1e-9)))

    def command_at(self, now_s: float) -> np.ndarray | None:
        """(v, w) due at ``now_s``, or None once the plan has run out."""
        k = self.steps_done(now_s)
        return self.plan[k] if k < len(self.plan) else None


class CEMPlanner:
    """The cross-entropy method over (v, w) plans scored by imagined frames (see the module docstring)."""

    def __init__(self, config: CEMConfig, imagine: ImagineFn | None, encoder: ActionEncoder,
                 rng: np.random.Generator | None = None) -> None:
        """``imagine``: the model for every plan, or None when each :meth:`plan` call brings its own."""
        if encoder.frames_per_step != config.frames_per_step:
            raise ValueError(f"encoder.frames_per_step={encoder.frames_per_step} != config.frames_per_step="
                             f"{config.frames_per_step}")
        self.config = config
        self.imagine = imagine
        self.encoder = encoder
        self.rng = np.random.default_rng() if rng is None else rng
        self._previous: np.ndarray | None = None  # the last returned plan, for the warm start

    def reset(self) -> None:
        """Forget the previous plan (the next call starts cold)."""
        self._previous = None

    def initial_distribution(self, steps_done: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of shape (horizon_steps, 2): the previous plan without its first ``steps_done``
        steps (executed since), its last step repeated in their place; zeros at a cold start."""
        cfg = self.config
        shape = (cfg.horizon_steps, 2)
        if self._previous is None:
            return np.zeros(shape), np.broadcast_to(np.asarray(cfg.initial_std, float), shape).copy()
        if steps_done < 0:
            raise ValueError(f"steps_done must be >= 0, got {steps_done}")
        k = min(int(steps_done), cfg.horizon_steps - 1)  # beyond the plan: its last step is all that is left
        shifted = np.concatenate([self._previous[k:], np.repeat(self._previous[-1:], k, axis=0)], axis=0)
        return shifted, np.broadcast_to(np.asarray(cfg.warm_start_std, float), shape).copy()

    def plan(self, score: Callable[[np.ndarray], np.ndarray], imagine: ImagineFn | None = None,
             steps_done: int = 1) -> PlanResult:
        """Search a plan whose imagined future ``score`` ranks lowest; ``score(frames (B, K, ...)) -> (B,)``.

        ``imagine`` overrides the planner's for this plan (e.g. a service call with this plan's noise seed).
        ``steps_done``: steps of the previous plan executed since it was made (the warm start's shift).
        """
        imagine = self.imagine if imagine is None else imagine
        if imagine is None:
            raise ValueError("CEMPlanner.plan needs an imagine callable: none given here or to the constructor")
        cfg = self.config
        mean, std = self.initial_distribution(steps_done)
        min_std = np.asarray(cfg.min_std, float)
        best_plan, best_score = mean.copy(), np.inf
        mean_scores, elite_scores = [], []
        imagine_s = 0.0
        for _ in range(cfg.iterations):
            noise = self.rng.standard_normal((cfg.candidates, cfg.horizon_steps, 2))
            plans = mean[None] + std[None] * noise
            plans[0] = mean  # the current mean is always among the candidates
            plans = np.clip(plans, cfg.low, cfg.high)
            began = time.perf_counter()
            frames = imagine(self.encoder(plans))
            imagine_s += time.perf_counter() - began
            scores = np.asarray(score(frames), dtype=np.float64)
            if scores.shape != (cfg.candidates,):
                raise ValueError(f"score must give {cfg.candidates} values, got shape {scores.shape}")
            if not np.isfinite(scores).all():
                raise ValueError(f"score gave {int((~np.isfinite(scores)).sum())} non-finite values of {cfg.candidates}")
            order = np.argsort(scores, kind="stable")
            elites = plans[order[: cfg.elites]]
            if scores[order[0]] < best_score:
                best_score, best_plan = float(scores[order[0]]), plans[order[0]].copy()
            mean_scores.append(float(scores.mean()))
            elite_scores.append(float(scores[order[: cfg.elites]].mean()))
            mean = cfg.smoothing * mean + (1.0 - cfg.smoothing) * elites.mean(axis=0)
            std = np.maximum(elites.std(axis=0), min_std)
        chosen = np.clip(mean if cfg.execute == "mean" else best_plan, cfg.low, cfg.high)
        self._previous = chosen.copy()
        return PlanResult(plan=chosen, best_score=best_score, mean_score_per_iteration=mean_scores,
                          elite_score_per_iteration=elite_scores, imagine_calls=cfg.iterations, imagine_s=imagine_s)


def model_imagine(model: Any, *, seed: int, steps: int | None = None, guidance_scale: float | None = None,
                  decode: str = "last", max_batch: int | None = None, draft: bool = False,
                  transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                  rng: np.random.Generator | None = None) -> ImagineFn:
    """An :data:`ImagineFn` over an in-process ``WorldModel`` whose live stream is started.

    Every call uses ``seed`` with shared noise (common random numbers across candidates and
    iterations). ``transform(actions, rng)`` alters the actions the model sees (the ablations of
    the planning evaluation: shuffled or zeroed actions), while the planner still scores and
    executes its own plans. ``draft``: ``WorldModel.imagine``'s fast path (coarser frames).
    """
    rng = np.random.default_rng(0) if rng is None else rng

    def imagine(actions: np.ndarray) -> np.ndarray:
        seen = actions if transform is None else transform(actions, rng)
        return model.imagine(seen, seed=seed, shared_noise=True, steps=steps, guidance_scale=guidance_scale,
                             decode=decode, max_batch=max_batch, draft=draft)

    return imagine


def shuffle_candidates(actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The candidates' action sequences permuted among them: imagination no longer matches the plans."""
    return actions[rng.permutation(len(actions))]


def zero_actions(actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # noqa: ARG001
    """Every candidate imagined with all-zero actions: imagination carries no action information."""
    return np.zeros_like(actions)


