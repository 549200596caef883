"""``astra_predictor``: predicts the camera's next frames from the robot's actions (DESIGN §5).

    astra-predictor --ros-args -p checkpoint:=default -p action_modality:=twist -r image:=/camera/image_raw

Subscribes (sensor-data QoS) ``~/image``, ``~/pose``, ``~/twist`` (Twist, or TwistStamped with
``twist_stamped:=true``), ``~/odom`` and ``~/camera_info`` (private names, so an input left unremapped
never lands on a global topic; remap either ``image:=...`` or ``~/image:=...``; a ``profile`` names them
instead) (sensor_msgs/CameraInfo, optional: the intrinsics
with which a ``rotation_reference`` model turns the newest frame by the commanded rotation; without it
the model assumes its config's ``reference_fovy_deg``, and ``/diagnostics`` says which it uses); ``action_modality`` picks which feed the model (camera and
robot: ``pose``; twist and keys: ``twist``, or ``odom`` with ``twist_source:=odom``). Each image is
paired with that stream by header stamp (:mod:`astra_ros.ros.sync`; a plain Twist has no header and is
stamped on arrival with the node clock). The last ``context_frames`` pairs form the window.

Frames enter the window on the model's frame grid (its config's ``frame_interval_s``, chosen by stamp:
a faster camera is thinned, a slower one's gaps are counted; non-square images are centre-cropped with
``resize_mode:=crop``, the default). **Forecasts are anchored at now**
(:mod:`astra_ros.ros.live_forecast`): a live loop in its own thread starts the next forecast as soon as
the previous one is out and a newer frame exists (``publish_rate`` caps it); each rolls the model from
the newest observed frame through the commands in force up to its expected publication (catch-up
frames, not published), then ``horizon_s`` on under the command that holds now (twist, keys; zero once
the newest command is over 0.5 s old, as in training) or the last pose step at constant velocity
(camera, robot).

Publishes ``~/predicted/image`` (rgb8, one message per frame, stamped with the time it shows, always
after the moment it is published) with ``~/predicted/camera_info`` (the intrinsics at the model's
resolution), ``~/predicted/frames`` (PredictedFrames: the whole forecast), ``~/predicted/montage``
(last observed frame beside the forecast) and ``/diagnostics`` (1 Hz). Serves ``~/reset``
(std_srvs/Trigger: forget the history) and ``~/imagine`` (Imagine: batched candidate futures for
planners, actions in SI units, from now; served beside the live loop, see
:mod:`astra_ros.ros.imagine_server`).

Faults and how the node answers them (each is counted in ``/diagnostics``):

* **Every input is accounted for.** Each message a callback sees is *used* (an image: part of a window
  handed to the model; a pose/twist: accepted into the pairing) or *skipped* with a reason
  (``image_decode_error``, ``<input>_not_finite``, ``<input>_stamp_backwards``, ``image_stamp_duplicate``,
  ``image_stamp_jump``, ``image_queue_full``,
  ``image_no_state_within_slop``, ``image_superseded`` (left the window before a prediction used it: the
  camera outruns ``publish_rate``), ``image_history_cleared``, ``<input>_not_used_by_<modality>_actions``),
  or still *pending* (queued). The ``input accounting`` status publishes ``received = used + skipped +
  pending`` and ``lost_in_transport_<input>`` (messages the middleware dropped before a callback, e.g. in a
  burst beyond the sensor-data queue).
* **The pose/twist feeding the model stops** (nothing usable for ``input_timeout_s``): predictions go on
  with *no motion assumed*: images are paired with a zero twist (twist/keys: a base whose command
  stream stopped stands still, as velocity controllers with a command timeout do) or with the last pose
  held (camera/robot: identity before any pose), and the held future command is zero. ``/diagnostics``
  warns (``fallback_active``, ``fallback_frames``) until the stream returns. A returning pose stream
  restarts the history: the held pose next to the real one would read as a jump of the camera.
* **The camera stops**: no new frame, no prediction (ticks counted ``skipped_no_new_frame``); the
  inputs status warns ``silent: image``; predictions resume with the next frames.
* **Stamps jump back** (a bag loop, a simulator reset): a few backwards stamps are skipped, then the
  stream counts as restarted (``restarts_<input>``), the history is cleared and predictions resume.
* **The images' frame_id changes** (another camera): the history restarts (``restarts_image_frame_id``).
* **One stamp jumps ahead** (a glitch: more than 1 s forward, then the next stamp continues from
  before it): that message alone is taken back out of the queues (``stamp_jumps_undone_<input>``;
  an image counts as ``image_stamp_jump``), instead of refusing every good stamp after it.
* Images may change size and encoding at any message (resized to the model); a failed prediction is
  reported and the next tick tries again; ``~/imagine`` requests are bounded by ``max_imagine_batch``
  and ``max_imagine_horizon`` and refused with a reason when malformed.

``checkpoint:=random:tiny`` runs a randomly initialised tiny model (32x32, noise frames) for tests.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, deque
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from astra_ros.data.actions import KeyThresholds
from astra_ros.data.bags import COMMAND_TIMEOUT_NS
from astra_ros.data.geometry import interpolate_transform
from astra_ros.model.compiled import compile_or_explain
from astra_ros.model.precision import UnreliablePrecision
from astra_ros.model.world_model import ImagineCancelled
from astra_ros.ros.arm_camera_input import ArmCameraFromTf
from astra_ros.ros.parameters import descriptor
from astra_ros.ros.runner import StartupError, publish_from_worker, run_node
from astra_ros.ros.conversions import ns_to_stamp, rgb_to_image_msg
from astra_ros.ros.imagine_server import ImagineServer
from astra_ros.ros.input_accounting import InputLedger, InputMonitor, RefusalWatch
from astra_ros.ros.live_forecast import (
    FrameGrid,
    LatencyEstimate,
    LiveLoop,
    actions_from_states,
    plan_forecast,
    states_at,
)
from astra_ros.ros.predictor_core import (
    LiveStream,
    ObservationWindow,
    Prediction,
    live_job,
    model_intrinsics,
    load_world_model,
    montage,
    state_kind,
)
from astra_ros.ros.sync import (
    ApproximateTimePairer,
    MonotonicStamps,
)

try:  # built by scripts/setup.sh (or colcon) from msg/ and srv/
    from astra_ros.msg import PredictedFrames
    from astra_ros.srv import Imagine
except ImportError:  # the node still predicts; ~/predicted/frames and ~/imagine are left out
    PredictedFrames = None
    Imagine = None

from astra_ros.ros.topic_names import input_topic
from astra_ros.ros.predictor_params import NODE_NAME, INPUTS, LOG_THROTTLE_S, STAMP_JUMP_NS, PUBLISH_MARGIN_S, STATE_HISTORY_S, PARAMETERS
from astra_ros.ros.predictor_inputs import PredictorInputs
from astra_ros.ros.predictor_diagnostics import PredictorDiagnostics
from astra_ros.ros.predictor_imagine import PredictorImagineRequests



class PredictorNode(PredictorInputs, PredictorDiagnostics, PredictorImagineRequests, Node):
    """The predictor: thin callbacks over :mod:`astra_ros.ros.predictor_core`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            profile_spec = PARAMETERS["profile"]
            self.declare_parameter("profile", profile_spec.default, descriptor("profile", profile_spec))
            self._profile = self._load_profile(self.get_parameter("profile").value)
            from_profile = self._profile.node_parameters() if self._profile is not None else {}
            for name, spec in PARAMETERS.items():
                if name in from_profile:  # declared with the profile's value, so that `ros2 param get` says it
                    self._warn_replaced(name, from_profile[name])
                    self.declare_parameter(name, from_profile[name], descriptor(name, spec), ignore_override=True)
                elif name != "profile":
                    self.declare_parameter(name, spec.default, descriptor(name, spec))
        except ParameterException as error:  # a -p or params-file value of the wrong type or out of range
            raise StartupError(str(error)) from error
        self._params = {name: self.get_parameter(name).value for name in PARAMETERS}
        self._model = self._load_model(self._params["checkpoint"], self._params["device"])
        try:
            self._model.set_precision(self._params["precision"])
        except (ValueError, UnreliablePrecision) as error:  # unknown name, or bf16 kernels that compute wrongly
            raise StartupError(f"parameter precision={self._params['precision']!r}: {error}") from error
        for name, value in self._params.items():
            reason = self._check_value(name, value)
            if reason:
                raise StartupError(f"parameter {name}={value!r}: {reason}")
        self._fail_if_unknown_modality(self._params["action_modality"])
        self._interval_s = float(getattr(getattr(self._model, "config", None), "frame_interval_s", 0.1))
        self._grid = FrameGrid(self._interval_s)
        self._track: list[tuple[int, np.ndarray]] = []  # (stamp [ns], state) of the feeding stream, newest last
        self._latency = LatencyEstimate()
        self._forecast_stats: dict[str, float] = {}
        self._recent_coverage_s: deque[float] = deque(maxlen=5)  # [s] of the last forecasts, for /diagnostics
        self._not_caught_up = 0  # forecasts from images too far behind the node clock to catch up
        self._live_snapshot = None  # the window the last published forecast started from (~/imagine's live history)
        self._camera_info: CameraInfo | None = None  # at the model's resolution, published with each forecast

        self._lock = threading.Lock()  # guards everything the callbacks and the worker share below
        self._dropped: Counter[str] = Counter()  # input events by reason: silences (``<input>_timeout``)
        self._ledger = InputLedger(INPUTS)  # every received input: used, or skipped by reason
        self._refusals = RefusalWatch()  # inputs whose every message is refused
        self._unsent: set[int] = set()  # stamps of window frames that no prediction has used yet
        self._lost: Counter[str] = Counter()  # messages the middleware reports lost before a callback saw them
        self._restarts: Counter[str] = Counter()  # stamp restarts (clock jumped back) by input
        self._last_accepted_s = {name: time.monotonic() for name in INPUTS}  # [s] monotonic, last accepted message
        self._last_pose: np.ndarray | None = None  # the newest accepted pose (the fallback when poses stop)
        self._fallback_frames = 0  # images paired with the fallback state
        self._fallback_active = False
        self._image_frame_id: str | None = None  # of the images in the history: another one restarts it
        self._fallback_in_window = False  # the window holds frames paired with the fallback state
        self._skipped: Counter[str] = Counter()  # prediction ticks without a prediction, by reason
        self._window = ObservationWindow(self._params["context_frames"], self._model.resolution,
                                         self._params["resize_mode"])
        self._pairer = self._new_pairer()
        self._stamps = {name: MonotonicStamps(strict=(name == "image"), max_jump_ns=STAMP_JUMP_NS) for name in INPUTS}
        self._latest_command: np.ndarray | None = None
        self._latest_command_ns = 0  # its stamp [ns]: it holds for the future only while fresh
        self._last_predicted_stamp_ns: int | None = None
        self._live = LiveStream()  # what the model's stream holds (set by worker jobs, cleared with the history)
        self._predictions = 0
        self._imagine_calls = Counter()
        self._latencies: list[float] = []
        self._new_latencies: list[float] = []  # [s] of the predictions since the last /diagnostics message
        self._last_error = ""
        self._expert_usage: dict[str, list[float]] = {}
        self._inputs = InputMonitor(INPUTS, time.monotonic())
        # Where the intrinsics that turn predicted views come from (rotation_reference models).
        self._intrinsics_source = "default (config reference_fovy_deg)"
        self._intrinsics_key: tuple | None = None  # the camera_info (size, K) last applied or refused
        self._camera_info_size: tuple[int, int] | None = None  # (width, height) of the camera_info in use, if any

        fallback = self._profile.conventions.intrinsics if self._profile is not None else None
        if fallback is not None and hasattr(self._model, "set_intrinsics"):  # the profile's camera until a camera_info
            self._model.set_intrinsics(model_intrinsics(
                [fallback.fx, 0, fallback.cx, 0, fallback.fy, fallback.cy, 0, 0, 1], fallback.width, fallback.height,
                self._model.resolution, self._params["resize_mode"]))
            self._intrinsics_source = f"profile {self._profile.name}"
        intrinsics = getattr(self._model, "intrinsics", None)  # the model's assumed camera until a camera_info comes
        if intrinsics is not None:
            self._camera_info = self._predicted_camera_info(np.asarray(intrinsics, dtype=np.float64))
        threads = self._params["num_threads"] or max(1, (os.cpu_count() or 2) // 2)
        self._threads = threads
        if self._params["compile"]:  # after the checks, before any thread runs the model, on the threads it will use
            self.get_logger().info("compile:=true: compiling the codec and anchor decoder (minutes the first time)")
            compiled, message = compile_or_explain(self._model, self._params["context_frames"], threads)
            (self.get_logger().info if compiled else self.get_logger().error)(f"compile:=true: {message}")
        self._topics: dict[str, str] = {}  # input -> resolved topic name

        # The node spins on a single-threaded executor (see main): its callbacks never wait for the model.
        # The live forecasts run in a thread of their own, ~/imagine in another with its own executor.
        inputs = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        services = ReentrantCallbackGroup()
        twist_type = TwistStamped if self._params["twist_stamped"] else Twist
        # Unremapped inputs are private (~/image, ...), never a global /pose; a plain `-r image:=...` still counts.
        names = {name: input_topic(self, name) for name in ("image", "pose", "twist", "odom", "camera_info")}
        if self._profile is not None:  # the profile's topics in place of the remappings
            names.update(self._profile.node_remappings())
        if self._params["image_transport"] == "compressed":
            image_sub = (CompressedImage, self.resolve_topic_name(names["image"]) + "/compressed", self._on_image)
        else:
            image_sub = (Image, names["image"], self._on_image)
        for name, (msg_type, topic, callback) in (("image", image_sub),
                                                  ("pose", (PoseStamped, names["pose"], self._on_pose)),
                                                  ("twist", (twist_type, names["twist"], self._on_twist)),
                                                  ("odom", (Odometry, names["odom"], self._on_odom))):
            subscription = self.create_subscription(
                msg_type, topic, callback, qos_profile_sensor_data, callback_group=inputs,
                event_callbacks=SubscriptionEventCallbacks(message_lost=partial(self._on_lost, name)))
            self._topics[name] = subscription.topic_name  # logs and diagnostics name what the user remapped to
        self.create_subscription(CameraInfo, names["camera_info"], self._on_camera_info, qos_profile_sensor_data,
                                 callback_group=inputs)

        reliable = QoSProfile(depth=10)
        # Each forecast's frames go out in one burst: keep two forecasts' worth (a subscriber needs a queue
        # of at least one forecast's frames too, or ~/predicted/frames, one message per forecast).
        self._burst_depth = max(10, 2 * self._frames_per_forecast())
        burst = QoSProfile(depth=self._burst_depth)
        self._image_pub = self.create_publisher(Image, "~/predicted/image", burst)
        self._info_pub = self.create_publisher(CameraInfo, "~/predicted/camera_info", burst)
        self._montage_pub = self.create_publisher(Image, "~/predicted/montage", reliable)
        self._frames_pub = (
            self.create_publisher(PredictedFrames, "~/predicted/frames", reliable) if PredictedFrames is not None else None
        )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services)
        self._imagine: ImagineServer | None = None
        self._imagine_model = self._model.twin() if hasattr(self._model, "twin") else self._model
        self._arm_camera = self._subscribe_arm_camera(inputs)
        if Imagine is not None:
            self._imagine = ImagineServer(self, Imagine, self._imagine_model, self._prepare_imagine,
                                          self._count_imagine, threads)
        else:
            self.get_logger().warning("the package's interfaces are not built: no ~/imagine and no ~/predicted/frames "
                                      "(run scripts/setup.sh or build the workspace with colcon)")

        # On the steady clock: with use_sim_time and no /clock (or a paused bag) /diagnostics still reports.
        self.create_timer(1.0, self._on_diagnostics_tick, timers, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._latency.most_s = self._params["max_catch_up_s"]
        self._loop = LiveLoop(self._model, self._next_live_job, self._on_forecast, self._on_forecast_error,
                              lambda: 1.0 / self._params["publish_rate"], threads, warm_up=self._warm_up)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.get_logger().info(
            f"forecasting {self._params['horizon_s']:g} s ahead of now from {self._params['action_modality']} actions "
            f"and {self._params['context_frames']} frames {self._interval_s:g} s apart, up to "
            f"{self._params['publish_rate']:g} Hz (model {self._params['checkpoint']}, "
            f"{self._model.resolution[1]}x{self._model.resolution[0]} px, {threads} thread(s) per model thread)"
        )

    # ------------------------------------------------------------------ set-up and parameters
    def _frames_per_forecast(self) -> int:
        """Most frames one forecast publishes at the start-up horizon: catching up by up to
        max_catch_up_s, then horizon_s ahead."""
        return math.ceil((self._params["max_catch_up_s"] + self._params["horizon_s"]) / self._interval_s) + 1

    def _subscribe_arm_camera(self, group: Any) -> ArmCameraFromTf | None:
        """A model with end-effector maps learns where the camera is from /tf_static (latched)."""
        if not getattr(getattr(self._model, "config", None), "arm_map_cells", 0):
            return None
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().warning("tf2_msgs is not installed: no /tf_static, so robot actions enter without "
                                      "end-effector maps (scripts/setup.sh builds it)")
            return None
        tracker = ArmCameraFromTf([self._model, self._imagine_model], self.get_logger().info)
        self.create_subscription(TFMessage, "/tf_static", tracker.on_tf_static,
                                 QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL), callback_group=group)
        return tracker

    def _load_profile(self, path: str) -> Any:
        """The robot profile (None without one): it sets the modality, twist source and type."""
        if not path:
            return None
        from astra_ros.data.profile import load_profile

        try:
            return load_profile(path)
        except ValueError as error:  # ProfileError: names the file and the key
            raise StartupError(f"parameter profile={path!r}: {error}") from error

    def _warn_replaced(self, name: str, value: Any) -> None:
        """A -p / params-file value the profile replaces is said (rclpy keeps the overrides it was given)."""
        given = getattr(self, "_parameter_overrides", {}).get(name)
        if given is not None and given.value != value:
            self.get_logger().warning(f"{name}={given.value!r} is replaced by the profile's {value!r}")

    def _load_model(self, checkpoint: str, device: str) -> Any:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise StartupError("parameter device='cuda' but torch sees no CUDA device (use auto or cpu)")
        try:
            model = load_world_model(checkpoint)
        except Exception as error:  # any load failure stops the node with its reason
            raise StartupError(f"cannot load checkpoint {checkpoint!r}: {error}") from error
        return model.to(device) if device != "cpu" and hasattr(model, "to") else model

    def _fail_if_unknown_modality(self, modality: str) -> None:
        if modality not in self._model.modalities:
            raise StartupError(f"the model knows modalities {self._model.modalities}, not {modality!r}")

    def _new_pairer(self) -> ApproximateTimePairer:
        slop_ns = int(round(self._params["sync_slop_s"] * 1e9))
        # States are kept by time: enough for a camera whose images arrive up to STATE_HISTORY_S late.
        history_ns = max(int(STATE_HISTORY_S * 1e9), 2 * slop_ns)
        if state_kind(self._params["action_modality"]) == "twist":
            # Commands pair as the bag reader pairs them for training: the one in force at the image.
            return ApproximateTimePairer(slop_ns=slop_ns, image_queue_size=int(self._params["sync_queue_size"]),
                                         state_history_ns=history_ns, hold_ns=COMMAND_TIMEOUT_NS,
                                         stale_state=np.zeros(6))
        # Poses: interpolated to the image stamp between the two around it, as for training.
        return ApproximateTimePairer(slop_ns=slop_ns, image_queue_size=int(self._params["sync_queue_size"]),
                                     state_history_ns=history_ns, interpolate=interpolate_transform)

    def _check_value(self, name: str, value: Any) -> str | None:
        """Why ``value`` is not acceptable for ``name`` (None when it is); ranges are checked by rclpy too."""
        spec = PARAMETERS.get(name)
        if spec is None:
            return None
        reason = spec.violation(value)
        if reason:
            return reason
        if name == "action_modality" and value not in self._model.modalities:
            return f"the model knows {', '.join(self._model.modalities)}, not {value!r}"
        if name == "context_frames" and (value < self._model.frames_per_chunk or value % self._model.frames_per_chunk):
            return f"must be a multiple of the model's frames per chunk ({self._model.frames_per_chunk}), got {value}"
        return None

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name in PARAMETERS and PARAMETERS[parameter.name].read_only:
                return SetParametersResult(successful=False, reason=f"{parameter.name} is read-only: restart the node")
            reason = self._check_value(parameter.name, parameter.value)
            if reason:
                return SetParametersResult(successful=False, reason=f"{parameter.name}: {reason}")
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters: list[Parameter]) -> None:
        with self._lock:
            # Only what really changed: re-applying the same values (rqt, `ros2 param load` of the running
            # file) must not clear the history or restart the pairing.
            changed = {p.name for p in parameters if p.name in PARAMETERS and self._params.get(p.name) != p.value}
            self._params.update({p.name: p.value for p in parameters if p.name in changed})
            twist_fed = state_kind(self._params["action_modality"]) == "twist"
            if "action_modality" in changed or ("twist_source" in changed and twist_fed):
                self._clear_history()
            if changed & {"sync_slop_s", "sync_queue_size"}:
                self._ledger.skip("image_sync_changed", len(self._pairer.take_pending_images()))
                self._pairer = self._new_pairer()
            if "max_catch_up_s" in changed:
                self._latency.most_s = self._params["max_catch_up_s"]
            if changed & {"max_catch_up_s", "horizon_s"} and self._frames_per_forecast() > self._burst_depth:
                self.get_logger().warning(
                    f"a forecast may now publish up to {self._frames_per_forecast()} frames, more than the "
                    f"~/predicted/image queue sized at start-up ({self._burst_depth}): a burst can lose its "
                    "first frames; restart the node with these values to size it")
            if "context_frames" in changed:
                before = set(self._window.stamps_ns)
                self._window.resize(self._params["context_frames"])
                self._supersede(before - set(self._window.stamps_ns))
        if changed:
            self.get_logger().info(f"parameters changed: {', '.join(sorted(changed))}")

    # ------------------------------------------------------------------ prediction
    def _thresholds(self) -> KeyThresholds:
        return KeyThresholds(self._params["key_linear_threshold"], self._params["key_angular_threshold"])

    def _future_command(self) -> np.ndarray | None:
        """The command held over the horizon: zero while the twist stream is silent (the fallback) and
        once the newest command is older than a command holds (as in training: a stream that stopped
        after a nonzero command is taken to have stopped the base, not to drive on)."""
        if state_kind(self._params["action_modality"]) == "twist":
            stale = (self._latest_command is not None
                     and self.get_clock().now().nanoseconds - self._latest_command_ns > COMMAND_TIMEOUT_NS)
            if stale or self._state_silent(time.monotonic()):
                return np.zeros(6)
        return self._latest_command

    def _warm_up(self, model: Any) -> None:
        """One short forecast on blank frames before the first real one (in the live loop's thread)."""
        if not hasattr(model, "start"):
            return
        # Twists of zero are a valid "stand still" in any model that knows them; a camera pose of zeros is not.
        modality = "twist" if "twist" in model.modalities else self._params["action_modality"]
        n = model.frames_per_chunk
        frames = np.zeros((n, *model.resolution, 3), np.uint8)
        actions = np.zeros((n, model.action_dim(modality)), np.float32)
        model.start(frames, actions, modality=modality)
        model.imagine(np.zeros((1, 2 * n, actions.shape[1]), np.float32), decode="all")
        model.reset()

    def _next_live_job(self) -> Any:
        """The next forecast as a job for the live loop (its thread), or None when there is no newer frame."""
        with self._lock:
            if not self._window.full:
                self._skipped["window_not_full"] += 1
                return None
            if self._window.last.stamp_ns == self._last_predicted_stamp_ns:
                self._skipped["no_new_frame"] += 1
                return None
            modality = self._params["action_modality"]
            snapshot = self._window.snapshot(modality, 1, latest_command=self._future_command(),
                                             thresholds=self._thresholds(), interval_s=self._interval_s)
            now_ns = self.get_clock().now().nanoseconds
            behind_s = (now_ns - snapshot.last_stamp_ns) * 1e-9
            expected_s = self._latency.expected_s(self._params["horizon_s"], self._interval_s, behind_s)
            plan = plan_forecast(snapshot.last_stamp_ns, now_ns, self._interval_s, self._params["horizon_s"],
                                 expected_s, self._params["max_catch_up_s"])
            if not plan.catching_up:
                self._not_caught_up += 1
            rows = self._actions_at(snapshot, plan.stamps_ns, now_ns)
            snapshot = replace(snapshot, future_actions=rows)
            seed, guidance = self._params["seed"], self._params["guidance_scale"]
            generation = self._live.generation
            self._last_predicted_stamp_ns = snapshot.last_stamp_ns
            used = self._unsent & set(snapshot.stamps_ns.tolist())
            self._ledger.use("image", len(used))
            self._unsent -= used
        return partial(live_job, live=self._live, generation=generation, snapshot=snapshot, plan=plan,
                       seed=None if seed < 0 else seed, guidance_scale=guidance or None,
                       should_stop=self._loop.stopping.is_set)

    def _actions_at(self, snapshot: Any, stamps_ns: np.ndarray, now_ns: int) -> np.ndarray:
        """Model action rows for frames at ``stamps_ns`` after the window: the states received up to now
        (the catch-up), then what holds now (the lock is held)."""
        modality = snapshot.modality
        kind = state_kind(modality)
        track = [(int(t), s) for t, s in self._track if t > snapshot.last_stamp_ns]
        times = [int(t) for t in snapshot.stamps_ns] + [t for t, _ in track]
        states = list(snapshot.states) + [s for _, s in track]
        command = self._future_command() if kind == "twist" else None
        future = states_at(stamps_ns, times, states, kind, now_ns, command)
        if kind == "twist" and command is None:
            future[np.asarray(stamps_ns) > now_ns] = snapshot.states[-1]
        return actions_from_states(modality, future, self._interval_s, snapshot.states[0], self._thresholds())

    def _on_forecast(self, result: Any) -> None:
        """A forecast is out of the model (the live loop's thread): keep what is still ahead, publish it."""
        if result is None:  # its history was cleared (~/reset) while it ran: not published
            with self._lock:
                self._skipped["history_cleared_while_predicting"] += 1
            return
        prediction, usage = result
        now_ns = self.get_clock().now().nanoseconds
        # Frames still ahead when published (a margin for the way to the subscriber). Images on another
        # clock (not caught up) give a forecast of what followed the newest frame: published whole.
        ahead = (prediction.stamps_ns > now_ns + int(PUBLISH_MARGIN_S * 1e9) if prediction.caught_up
                 else np.ones(len(prediction.stamps_ns), bool))
        with self._lock:
            self._latency.add(prediction.latency_s, prediction.rolled_frames)
            self._predictions += 1
            self._latencies = (self._latencies + [prediction.latency_s])[-50:]
            self._new_latencies.append(prediction.latency_s)
            self._expert_usage = usage
            if not ahead.any():
                self._skipped["forecast_already_past"] += 1
                return
            self._live_snapshot = prediction.snapshot
            coverage_s = (int(prediction.stamps_ns[-1]) - now_ns) * 1e-9
            self._recent_coverage_s.append(coverage_s)
            self._forecast_stats = {"lead_s": (int(prediction.stamps_ns[ahead][0]) - now_ns) * 1e-9,
                                    "latency_s": prediction.latency_s,
                                    "coverage_s": coverage_s,
                                    "catch_up_frames": float(prediction.rolled_frames - int(ahead.sum()))}
        kept = replace(prediction, frames=prediction.frames[ahead], stamps_ns=prediction.stamps_ns[ahead],
                       actions=prediction.actions[ahead])
        publish_from_worker(self, partial(self._publish, kept))

    def _on_forecast_error(self, error: BaseException) -> None:
        if isinstance(error, ImagineCancelled) or not self.context.ok():  # the node is shutting down
            return
        detail = str(error) or type(error).__name__
        with self._lock:
            self._skipped["model_error"] += 1
            self._last_error = detail
        self.get_logger().error(f"prediction failed: {detail}", throttle_duration_sec=LOG_THROTTLE_S)

    def _publish(self, prediction: Prediction) -> None:
        snapshot = prediction.snapshot
        frame_id = snapshot.frame_id
        images = [rgb_to_image_msg(frame, int(stamp), frame_id) for frame, stamp in zip(prediction.frames, prediction.stamps_ns)]
        info = self._camera_info
        for image in images:
            self._image_pub.publish(image)
            if info is not None:  # same stamp and frame_id as its image, as image_transport pairs them
                info.header.stamp, info.header.frame_id = image.header.stamp, image.header.frame_id
                self._info_pub.publish(info)
        self._montage_pub.publish(rgb_to_image_msg(montage(snapshot.frames[-1], prediction.frames),
                                                   int(prediction.stamps_ns[0]), frame_id))
        if self._frames_pub is not None:
            msg = PredictedFrames()
            msg.header.stamp = ns_to_stamp(int(prediction.anchor_ns))
            msg.header.frame_id = frame_id
            msg.observed_stamp = ns_to_stamp(snapshot.last_stamp_ns)
            msg.frames = images
            msg.stamps = [ns_to_stamp(int(s)) for s in prediction.stamps_ns]
            msg.frame_interval_s = float(snapshot.frame_interval_s)
            msg.catch_up_frames = int(round((int(prediction.stamps_ns[0]) - snapshot.last_stamp_ns)
                                            / (snapshot.frame_interval_s * 1e9))) - 1
            msg.modality = snapshot.modality
            msg.actions = prediction.actions.astype(np.float32).reshape(-1).tolist()
            msg.action_dim = int(prediction.actions.shape[1])
            self._frames_pub.publish(msg)

    # ------------------------------------------------------------------ services
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._clear_history()
        response.success = True
        response.message = "history cleared: predictions resume when the window is full again"
        self.get_logger().info("reset: history cleared")
        return response

    def destroy_node(self) -> None:
        # The running job stops at its next chunk; one still running at interpreter exit would abort it.
        stopped = self._loop.stop()
        if self._imagine is not None:
            stopped = self._imagine.stop() and stopped
        if not stopped:
            self.get_logger().warning("a model thread did not stop in time; exiting with it still running")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the predictor until Ctrl-C or ROS shutdown; 1 when it cannot start."""
    import torch

    torch.set_num_threads(1)  # the model threads set their own (num_threads); this one only converts messages
    # A single-threaded executor: measured on an idle 2-core machine, rclpy's MultiThreadedExecutor
    # kept the main thread busy (~90 % of a core) re-polling inputs whose exclusive group was already
    # running, and the node then received 12 % of a 30 Hz camera's images with a p99 latency of 7.8 s;
    # single-threaded it received 86 % (the rest arrive before it subscribes) with a p99 of 36 ms.
    return run_node(PredictorNode, SingleThreadedExecutor, NODE_NAME, args, usage=__doc__, parameters=PARAMETERS,
                    exit_at_once_if_not_started=True)
