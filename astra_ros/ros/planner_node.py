"""``astra_planner``: drives a base towards a goal view by planning through the predictor's ``~/imagine``.

    astra-planner --ros-args --params-file config/planner.yaml -p goal_file:=goal.png

The goal is an image: from ``goal_file`` (read at start and when the parameter changes) or from the
``~/goal`` topic (sensor_msgs/Image; ``goal:=...`` remaps it too; the newest message wins, and replaces a file goal). At
``replan_rate_hz`` the node runs the cross-entropy method of :mod:`astra_ros.planning.cem` over
planar (v, w) plans: each iteration sends every candidate's actions in one ``~/imagine`` request to
the predictor (``predictor`` parameter) from its live history (``from_live_history``: the predictor
holds the camera's history, so the planner needs no camera subscription), with shared noise and only
each candidate's last frame returned; the frames are scored against the goal (16x16 pixel MSE, see
:mod:`astra_ros.planning.cem` for why) and the plan is executed on ``cmd_vel`` (geometry_msgs/Twist:
linear.x, angular.z) step by step, as it was imagined (with ``keys``, each step as the key the model
was shown: the dominant component of (v, w) alone, or zero for stop): each step's command, published at
``command_rate_hz``, for frames_per_step x frame_interval_s seconds from the plan's publication,
until a newer plan replaces it; a plan that runs out ends with one zero twist (nobody imagined what
follows it). The next plan warm-starts from this one without the steps executed meanwhile. The
motion during a search is not compensated: a plan starts when it is published.

Planning runs in its own thread, so the executor keeps serving the service responses, the goal
topic and the timers; a tick that arrives while a plan is still being searched is skipped and
counted. Errors are reported on ``/diagnostics`` (1 Hz) and in the log (throttled): no goal yet,
the ``~/imagine`` service missing, a failed or refused imagination (its message), a plan taking longer
than ``imagine_timeout_s``, a ``frame_interval_s`` more than 25 % off the predictor's camera (twists
would be scaled wrongly, keys held for the wrong time, so no plan is made; the message gives the value
to set). With ``stop_on_error`` the node publishes a zero twist when it cannot
plan, so the base does not keep following an old command.

Every parameter, with its range, is declared below and listed in ``config/planner.yaml``.
"""

from __future__ import annotations

import secrets
import threading
import time
from functools import partial
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from astra_ros.data.actions import KeyThresholds
from astra_ros.data.images import ImageDecodeError
from astra_ros.planning.cem import ActionEncoder, CEMConfig, CEMPlanner, GoalScorer, PlanSchedule
from astra_ros.ros.topic_names import diagnostic_prefix, input_topic
from astra_ros.ros.conversions import image_msg_to_rgb
from astra_ros.ros.parameters import ParamSpec, descriptor
from astra_ros.ros.runner import StartupError, publish_from_worker, run_node

try:  # built by scripts/setup.sh (or colcon) from srv/
    from astra_ros.srv import Imagine
except ImportError:
    Imagine = None

NODE_NAME = "astra_planner"
LOG_THROTTLE_S = 5.0  # [s] the same warning at most this often
# Twist actions are displacements per frame (velocity x frame_interval_s): a plan made for another
# camera rate moves the imagined camera too far or too little. Beyond this relative difference
# between frame_interval_s and the predictor's camera, plans are refused rather than misjudged.
FRAME_INTERVAL_TOLERANCE = 0.25


PARAMETERS: dict[str, ParamSpec] = {
    "predictor": ParamSpec("/astra_predictor", "the predictor node whose ~/imagine service the planner calls", read_only=True),
    "goal_file": ParamSpec("", "goal image file (png, jpg, ...); empty: wait for a goal on the goal topic"),
    "cmd_vel_topic": ParamSpec("/cmd_vel", "where the planned command is published (geometry_msgs/Twist)", read_only=True),
    "replan_rate_hz": ParamSpec(5.0, "plans per second [Hz]; one per plan step replans every step (a tick while a plan "
                                "is still searched is skipped, so a slow machine plans back to back)", (0.01, 30.0)),
    "command_rate_hz": ParamSpec(10.0, "how often the due step of the plan is published on cmd_vel [Hz]", (1.0, 100.0),
                                 read_only=True),
    "action_modality": ParamSpec("twist", "actions the predictor's model is driven with", choices=("twist", "keys")),
    "frame_interval_s": ParamSpec(0.1, "camera frame interval [s] the model's actions are scaled by; "
                                  "within 25 % of the predictor's camera, else no plan", (0.001, 10.0)),
    "horizon_steps": ParamSpec(3, "steps per plan; each holds one command for frames_per_step frames", (1, 16)),
    "frames_per_step": ParamSpec(2, "camera frames per plan step (the model's frames per chunk)", (1, 16)),
    "candidates": ParamSpec(12, "plans imagined per CEM iteration (one ~/imagine batch; <= the predictor's "
                        "max_imagine_batch)", (2, 64)),
    "elites": ParamSpec(3, "best plans the CEM distribution is refitted to (<= candidates)", (1, 64)),
    "iterations": ParamSpec(1, "CEM iterations per plan", (1, 10)),
    "linear_min": ParamSpec(-0.3, "slowest forward speed [m/s] (negative: reverse)", (-10.0, 10.0)),
    "linear_max": ParamSpec(0.6, "fastest forward speed [m/s]", (-10.0, 10.0)),
    "angular_min": ParamSpec(-1.0, "fastest right turn [rad/s] (negative yaw rate)", (-10.0, 10.0)),
    "angular_max": ParamSpec(1.0, "fastest left turn [rad/s]", (-10.0, 10.0)),
    "initial_std_linear": ParamSpec(0.3, "std of the forward speed at a cold start [m/s]", (0.0, 10.0)),
    "initial_std_angular": ParamSpec(0.6, "std of the yaw rate at a cold start [rad/s]", (0.0, 10.0)),
    "execute": ParamSpec("mean", "command sent: 'mean' of the last elites or the 'best' plan imagined", choices=("mean", "best")),
    "score_size": ParamSpec(16, "goal distance: MSE of frames area-downsampled to this many pixels square", (2, 256)),
    "denoise_steps": ParamSpec(0, "Euler steps per imagined chunk; 0: the model's default", (0, 64)),
    "guidance_scale": ParamSpec(1.0, "guidance scale of the imagination (1 = off, faster); 0: the model's default", (0.0, 20.0)),
    "draft": ParamSpec(True, "imagine on the predictor's fast path (latent-turned references, plain codec "
                       "decoding): coarser frames, enough for the score_size layout, several times faster"),
    "imagine_timeout_s": ParamSpec(30.0, "longest one ~/imagine call may take [s]", (0.1, 600.0)),
    "key_linear_threshold": ParamSpec(0.05, "keys modality: speed [m/s] that presses forward/back (the predictor's "
                                      "value, or plans and history mean different keys)", (1e-4, 100.0)),
    "key_angular_threshold": ParamSpec(0.15, "keys modality: yaw rate [rad/s] that presses a turn key (the "
                                       "predictor's value)", (1e-4, 100.0)),
    "seed": ParamSpec(-1, "seed of the planner's sampling and the imagination noise; -1: random", (-1, 2**31 - 1)),
    "stop_on_error": ParamSpec(True, "publish a zero twist when no plan can be made (no goal, no service, failure)"),
}


def read_goal_file(path: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) from an image file; ``ValueError`` naming the file when it cannot be read."""
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read goal image {path!r} (missing, or not an image file)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def check_parameters(params: dict[str, Any]) -> str | None:
    """The first inconsistency between parameters, or None."""
    for name, value in params.items():
        spec = PARAMETERS.get(name)
        if spec is None:
            continue
        reason = spec.violation(value)
        if reason:
            return f"{name} {reason}"
    if params["elites"] > params["candidates"]:
        return f"elites ({params['elites']}) must be <= candidates ({params['candidates']})"
    if params["linear_min"] >= params["linear_max"]:
        return f"linear_min ({params['linear_min']}) must be < linear_max ({params['linear_max']})"
    if params["angular_min"] >= params["angular_max"]:
        return f"angular_min ({params['angular_min']}) must be < angular_max ({params['angular_max']})"
    return None


def frame_interval_mismatch(planned_s: float, camera_s: float, modality: str) -> str | None:
    """Why plans made for ``planned_s`` per frame cannot drive a predictor whose camera runs at
    ``camera_s`` per frame, or None (0 = the predictor does not say). Twists are scaled by the
    interval; keys carry no time, but each plan step is still executed for frames_per_step x
    frame_interval_s, so a wrong interval drives a key longer or shorter than it was imagined."""
    if camera_s <= 0 or abs(planned_s - camera_s) <= FRAME_INTERVAL_TOLERANCE * camera_s:
        return None
    effect = (f"the imagined motion would be {planned_s / camera_s:.2g}x the real one" if modality == "twist" else
              f"each key would be held {planned_s / camera_s:.2g}x as long as the model imagined it")
    return (f"frame_interval_s={planned_s:g} s but the predictor's camera delivers a frame every {camera_s:.3g} s: "
            f"{effect}; set frame_interval_s:={camera_s:.3g}")


def _sampling_rng(seed: int) -> np.random.Generator:
    """The planner's sampling generator: seeded, or from the OS for a negative seed."""
    return np.random.default_rng(None if seed < 0 else seed)


class ImagineError(RuntimeError):
    """~/imagine could not answer (missing, timed out, refused or failed): the message says which."""


class FrameIntervalMismatch(ImagineError):
    """The predictor's camera rate is not the one the planner scales its twists by."""


class PlannerNode(Node):
    """The planner: a goal, a CEM loop in its own thread, and ``~/imagine`` calls to the predictor."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        if Imagine is None:
            raise StartupError("the astra_ros interfaces (astra_ros.srv) are not built: the planner needs the ~/imagine service type "
                               "(run scripts/setup.sh, or colcon build the workspace)")
        try:
            for name, spec in PARAMETERS.items():
                self.declare_parameter(name, spec.default, descriptor(name, spec))
        except ParameterException as error:
            raise StartupError(str(error)) from error
        self._params = {name: self.get_parameter(name).value for name in PARAMETERS}
        reason = check_parameters(self._params)
        if reason:
            raise StartupError(f"parameter {reason}")

        self._lock = threading.Lock()  # guards the goal, counters, settings and executed plan; orders cmd_vel
        self._goal: np.ndarray | None = None
        self._goal_source = ""
        self._goal_generation = 0  # bumped by every new goal: the planner starts cold
        if self._params["goal_file"]:
            try:
                self._set_goal(read_goal_file(self._params["goal_file"]), f"file {self._params['goal_file']}")
            except ValueError as error:
                raise StartupError(str(error)) from error
        self._counts = {"plans": 0, "ticks_skipped_busy": 0, "no_goal": 0, "service_missing": 0, "imagine_failed": 0,
                        "frame_interval_mismatch": 0, "plans_run_out": 0}
        self._last_error = ""
        self._state = "starting"
        self._last_plan: dict[str, Any] = {}
        self._schedule: PlanSchedule | None = None  # the plan being executed; None: nothing to publish
        self._last_schedule: PlanSchedule | None = None  # the newest plan, executed or not (warm start)
        self._rng = _sampling_rng(self._params["seed"])

        services = ReentrantCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        inputs = MutuallyExclusiveCallbackGroup()
        predictor = self._params["predictor"].rstrip("/")
        self._client = self.create_client(Imagine, f"{predictor}/imagine", callback_group=services)
        self._cmd_pub = self.create_publisher(Twist, self._params["cmd_vel_topic"], QoSProfile(depth=10))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._goal_topic = input_topic(self, "goal")  # ~/goal unless `goal:=...` is remapped: never a global /goal
        self.create_subscription(Image, self._goal_topic, self._on_goal, QoSProfile(depth=1), callback_group=inputs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._tick = threading.Event()
        self._stopping = threading.Event()
        self._timers_group = timers
        self._replan_timer = self.create_timer(1.0 / self._params["replan_rate_hz"], self._on_replan_tick, timers)
        # On the steady clock: with use_sim_time and no /clock /diagnostics still reports.
        self.create_timer(1.0, self._on_diagnostics_tick, timers, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(1.0 / self._params["command_rate_hz"], self._on_command_tick, timers)
        self._thread = threading.Thread(target=self._planning_loop, name="astra-planner", daemon=True)
        self._busy = False
        self._thread.start()
        self.get_logger().info(f"planning towards {self._goal_source or 'a goal on ' + self.resolve_topic_name(self._goal_topic)} "
                               f"through {predictor}/imagine at {self._params['replan_rate_hz']} Hz")

    # ------------------------------------------------------------------ parameters and goal
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        proposed = dict(self._params)
        for parameter in parameters:
            spec = PARAMETERS.get(parameter.name)
            if spec is None:
                continue
            if spec.read_only:
                return SetParametersResult(successful=False, reason=f"{parameter.name} is read-only: restart the node")
            proposed[parameter.name] = parameter.value
        reason = check_parameters(proposed)
        # Setting goal_file again (even to the same path) reloads it: check the file now, whatever its name.
        goal_file_set = any(parameter.name == "goal_file" for parameter in parameters)
        if reason is None and proposed["goal_file"] and goal_file_set:
            try:
                read_goal_file(proposed["goal_file"])
            except ValueError as error:
                reason = str(error)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _after_set_parameters(self, parameters: list[Parameter]) -> None:
        changed = {p.name for p in parameters if p.name in PARAMETERS}
        with self._lock:
            self._params.update({p.name: p.value for p in parameters if p.name in PARAMETERS})
        if "seed" in changed:  # the sampling restarts from the seed, as at start-up
            with self._lock:
                self._rng = _sampling_rng(self._params["seed"])
        if "goal_file" in changed and self._params["goal_file"]:
            try:
                self._set_goal(read_goal_file(self._params["goal_file"]), f"file {self._params['goal_file']}")
            except ValueError as error:  # gone or changed since the check: keep the goal there was
                self.get_logger().error(f"goal_file: {error}; keeping the previous goal")
        elif "goal_file" in changed:
            self._clear_file_goal()
        if "replan_rate_hz" in changed:
            self.destroy_timer(self._replan_timer)
            self._replan_timer = self.create_timer(1.0 / self._params["replan_rate_hz"], self._on_replan_tick,
                                                   self._timers_group)
        if changed:
            self.get_logger().info(f"parameters changed: {', '.join(sorted(changed))}")

    def _set_goal(self, rgb: np.ndarray, source: str) -> None:
        with self._lock:
            self._goal, self._goal_source = rgb, source
            self._goal_generation += 1
        self.get_logger().info(f"new goal from {source} ({rgb.shape[1]}x{rgb.shape[0]})")

    def _clear_file_goal(self) -> None:
        """goal_file set to "": forget a goal that came from a file and wait for one on the goal topic
        (a goal from the topic stays)."""
        with self._lock:
            if not self._goal_source.startswith("file "):
                return
            self._goal, self._goal_source = None, ""
            self._goal_generation += 1
        self.get_logger().info(f"goal file cleared: waiting for a goal on {self.resolve_topic_name(self._goal_topic)}")

    def _on_goal(self, msg: Image) -> None:
        try:
            rgb = image_msg_to_rgb(msg)
        except ImageDecodeError as error:
            self._report_error("goal_rejected", f"goal image rejected: {error}")
            return
        self._set_goal(rgb, f"topic {self.resolve_topic_name(self._goal_topic)}")

    # ------------------------------------------------------------------ planning
    def _on_replan_tick(self) -> None:
        if self._tick.is_set() or self._busy:
            with self._lock:
                self._counts["ticks_skipped_busy"] += 1
            return
        self._tick.set()

    def _planning_loop(self) -> None:
        planner: CEMPlanner | None = None
        planner_key = None
        while not self._stopping.is_set():
            if not self._tick.wait(timeout=0.2):
                continue
            self._busy = True
            self._tick.clear()
            try:
                with self._lock:
                    goal, generation, params = self._goal, self._goal_generation, dict(self._params)
                if goal is None:
                    self._fail("no_goal", "no goal yet: set goal_file or publish an image on "
                                          f"{self.resolve_topic_name(self._goal_topic)}")
                    continue
                if not self._client.service_is_ready():
                    self._fail("service_missing", f"service {self._client.srv_name} is not available: is the "
                                                  "predictor running (and the predictor parameter right)?")
                    continue
                key = (generation,) + tuple(params[k] for k in sorted(params) if k not in ("goal_file", "replan_rate_hz"))
                if planner is None or key != planner_key:  # a new goal or new settings: start cold
                    planner, planner_key = self._make_planner(params), key
                self._plan_once(planner, GoalScorer(goal, params["score_size"]), params)
            except FrameIntervalMismatch as error:
                self._fail("frame_interval_mismatch", str(error))
            except ImagineError as error:
                self._fail("imagine_failed", str(error))
            except Exception as error:  # never let the planning thread die: report and try again next tick
                self._fail("imagine_failed", f"planning failed: {type(error).__name__}: {error}")
            finally:
                self._busy = False

    def _now_s(self) -> float:
        """[s] on the node clock, which the command timer follows too (/clock under use_sim_time): a step
        runs for the simulated time it was imagined for, however fast the simulation runs."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_command_tick(self) -> None:
        """Publish the step of the plan that is due; one zero twist when the plan has run out."""
        with self._lock:  # publishing under the lock: a zero from _fail or a new plan cannot overtake it
            schedule = self._schedule
            if schedule is None:
                return
            command = schedule.command_at(self._now_s())
            if command is None:
                self._schedule = None
                self._counts["plans_run_out"] += 1
            self._cmd_pub.publish(_twist(command if command is not None else (0.0, 0.0)))

    def _make_planner(self, params: dict[str, Any]) -> CEMPlanner:
        config = CEMConfig(
            horizon_steps=params["horizon_steps"], frames_per_step=params["frames_per_step"],
            candidates=params["candidates"], elites=params["elites"], iterations=params["iterations"],
            linear_limits=(params["linear_min"], params["linear_max"]),
            angular_limits=(params["angular_min"], params["angular_max"]),
            initial_std=(params["initial_std_linear"], params["initial_std_angular"]), execute=params["execute"],
        )
        encoder = ActionEncoder(params["action_modality"], params["frame_interval_s"], params["frames_per_step"],
                                KeyThresholds(params["key_linear_threshold"], params["key_angular_threshold"]))
        return CEMPlanner(config, None, encoder, rng=self._rng)  # each plan brings its imagine (its seed)

    def _plan_once(self, planner: CEMPlanner, scorer: GoalScorer, params: dict[str, Any]) -> None:
        began = time.perf_counter()
        # One noise seed per plan: every candidate of every iteration sees the same noise.
        seed = int(params["seed"]) if params["seed"] >= 0 else secrets.randbelow(2**31)
        with self._lock:
            previous = self._last_schedule
        # The live history the search continues already shows the previous plan's executed steps.
        steps_done = previous.steps_done(self._now_s()) if previous is not None else 1
        result = planner.plan(scorer, imagine=partial(self._service_imagine, seed=seed, params=params),
                              steps_done=steps_done)
        # Each step as the model was shown it (keys: only the dominant key's component).
        executed = np.array([planner.encoder.command_as_imagined(step) for step in result.plan])
        v, w = (float(x) for x in executed[0])
        schedule = PlanSchedule(executed, self._now_s(), params["frames_per_step"] * params["frame_interval_s"])
        with self._lock:
            self._schedule = self._last_schedule = schedule
            if not publish_from_worker(self, partial(self._cmd_pub.publish, _twist((v, w)))):
                return
        with self._lock:
            self._counts["plans"] += 1
            self._state = "planning"
            self._last_error = ""
            self._last_plan = {"linear_x": v, "angular_z": w, "best_score": result.best_score,
                               "elite_score_first": result.elite_score_per_iteration[0],
                               "elite_score_last": result.elite_score_per_iteration[-1],
                               "plan_s": time.perf_counter() - began, "imagine_s": result.imagine_s,
                               "plan_duration_s": schedule.duration_s}

    def _service_imagine(self, actions: np.ndarray, *, seed: int, params: dict[str, Any]) -> np.ndarray:
        """The planner's ``imagine``: one ~/imagine call for the whole batch; frames (B, 1, H, W, 3)."""
        b, n, d = actions.shape
        si = ActionEncoder(params["action_modality"], params["frame_interval_s"]).to_si(actions)  # [m/s, rad/s]
        request = Imagine.Request(modality=params["action_modality"], actions=si.reshape(-1).tolist(), batch=b,
                                  horizon=n, action_dim=d, seed=seed, from_live_history=True,
                                  denoise_steps=int(params["denoise_steps"]),
                                  guidance_scale=float(params["guidance_scale"]), shared_noise=True,
                                  last_frame_only=True, draft=bool(params["draft"]))
        done = threading.Event()
        future = self._client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(params["imagine_timeout_s"]):
            self._client.remove_pending_request(future)
            raise ImagineError(f"~/imagine did not answer within imagine_timeout_s={params['imagine_timeout_s']} s")
        response = future.result()
        if response is None:
            raise ImagineError("~/imagine returned no response")
        if not response.success:
            message = response.message
            # A predictor limit: say which planner parameters make the request.
            if "max_imagine_batch" in message or "max_imagine_horizon" in message:
                message += (f" (this plan asks {b} candidates x {n} frames: candidates {params['candidates']}, "
                            f"horizon_steps {params['horizon_steps']} x frames_per_step {params['frames_per_step']})")
            elif "max_imagine_steps" in message:
                message += f" (the planner's denoise_steps is {params['denoise_steps']})"
            raise ImagineError(f"~/imagine refused or failed: {message}")
        mismatch = frame_interval_mismatch(params["frame_interval_s"], float(response.frame_interval_s),
                                           params["action_modality"])
        if mismatch:
            raise FrameIntervalMismatch(mismatch)
        per = int(response.frames_per_candidate) or 1
        if len(response.frames) != b * per:
            raise ImagineError(f"~/imagine returned {len(response.frames)} frames for {b} candidates x {per}")
        frames = np.stack([image_msg_to_rgb(m) for m in response.frames])
        return frames.reshape(b, per, *frames.shape[1:])

    def _fail(self, reason: str, message: str) -> None:
        """Count and report a tick without a plan; stop the base if asked to."""
        with self._lock:
            self._counts[reason] += 1
            self._state = reason
            self._last_error = message
            if self._params["stop_on_error"]:
                self._schedule = None  # without it, the old plan runs on to its end
                publish_from_worker(self, partial(self._cmd_pub.publish, Twist()))
        self.get_logger().warning(message, throttle_duration_sec=LOG_THROTTLE_S)

    def _report_error(self, reason: str, message: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
            self._last_error = message
        self.get_logger().warning(message, throttle_duration_sec=LOG_THROTTLE_S)

    # ------------------------------------------------------------------ diagnostics
    def _on_diagnostics_tick(self) -> None:
        with self._lock:
            counts, state, last_error = dict(self._counts), self._state, self._last_error
            plan, goal_source = dict(self._last_plan), self._goal_source
        prefix = diagnostic_prefix(self)
        status = DiagnosticStatus(name=f"{prefix}: planning", hardware_id=prefix)
        if state == "planning":
            status.level, status.message = DiagnosticStatus.OK, f"{counts['plans']} plans; goal from {goal_source}"
            if plan and plan["plan_s"] > plan["plan_duration_s"]:
                status.level = DiagnosticStatus.WARN
                status.message += (f"; a plan takes {plan['plan_s']:.2f} s to search and covers "
                                   f"{plan['plan_duration_s']:.2f} s: the base stops between plans (fewer "
                                   "candidates or iterations, or a faster machine for the predictor)")
        elif state in ("starting", "no_goal"):
            status.level = DiagnosticStatus.WARN
            status.message = last_error or "waiting for the first plan"
        else:
            status.level, status.message = DiagnosticStatus.ERROR, last_error
        if self.get_clock().now().nanoseconds == 0 and self.get_parameter("use_sim_time").value:
            # This timer runs on the steady clock; the replan and command timers wait for /clock.
            status.level = max(status.level, DiagnosticStatus.WARN)
            status.message += "; use_sim_time is true but no /clock has arrived: nothing is planned or sent"
            self.get_logger().warning("use_sim_time is true but no /clock has arrived: the replan and command timers "
                                      "wait for it (start the simulator, or play the bag with --clock)",
                                      throttle_duration_sec=LOG_THROTTLE_S)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in sorted(counts.items())]
        status.values += [KeyValue(key=f"last_{k}", value=f"{v:.4f}") for k, v in sorted(plan.items())]
        status.values.append(KeyValue(key="state", value=state))
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def destroy_node(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5.0)
        super().destroy_node()


def _twist(command) -> Twist:
    twist = Twist()
    twist.linear.x, twist.angular.z = (float(x) for x in command)
    return twist


def main(args: list[str] | None = None) -> int:
    """Run the planner until Ctrl-C or ROS shutdown; 1 when it cannot start."""
    return run_node(PlannerNode, SingleThreadedExecutor, NODE_NAME, args, usage=__doc__, parameters=PARAMETERS,
                    exit_at_once_if_not_started=True)


if __name__ == "__main__":
    raise SystemExit(main())
