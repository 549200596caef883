"""``astra_predictor``: predicts the camera's next frames from the robot's actions (DESIGN §5).

    astra-predictor --ros-args -p checkpoint:=default -p action_modality:=twist -r image:=/camera/image_raw

Subscribes (sensor-data QoS) ``image``, ``pose``, ``twist`` (Twist, or TwistStamped with
``twist_stamped:=true``), ``odom`` and ``camera_info`` (sensor_msgs/CameraInfo, optional: the intrinsics
with which a ``rotation_reference`` model turns the newest frame by the commanded rotation; without it
the model assumes its config's ``reference_fovy_deg``, and ``/diagnostics`` says which it uses); ``action_modality`` picks which feed the model (camera and
robot: ``pose``; twist and keys: ``twist``, or ``odom`` with ``twist_source:=odom``). Each image is
paired with that stream by header stamp (:mod:`astra_ros.ros.sync`; a plain Twist has no header and is
stamped on arrival with the node clock). The last ``context_frames`` pairs form the window.

At ``publish_rate`` Hz, when a new frame has arrived, the window goes to the model worker thread
(a bounded queue: a busy model skips the tick, it never blocks the executor), which calls
``wm.start(window)`` and ``wm.imagine(future)`` for ``horizon`` frames. Future actions hold the latest
command (twist, keys) or extrapolate the last pose step at constant velocity (camera, robot); see
:mod:`astra_ros.ros.predictor_core`.

Publishes ``~/predicted/image`` (rgb8, one message per frame, stamped with the time it shows: last
observed stamp + (i+1) x frame interval), ``~/predicted/frames`` (astra_ros_interfaces/PredictedFrames,
the whole horizon), ``~/predicted/montage`` (last observed frame beside the predictions) and
``/diagnostics`` (1 Hz). Serves ``~/reset`` (std_srvs/Trigger: forget the history) and ``~/imagine``
(astra_ros_interfaces/Imagine: batched candidate futures for planners).

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

import queue
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.event_handler import QoSMessageLostInfo, SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from astra_ros.data.actions import MODALITIES, KeyThresholds
from astra_ros.data.bags import COMMAND_TIMEOUT_NS
from astra_ros.data.geometry import interpolate_transform
from astra_ros.data.images import ImageDecodeError
from astra_ros.model.precision import UnreliablePrecision
from astra_ros.model.world_model import ImagineCancelled
from astra_ros.ros.parameters import ParamSpec, descriptor  # noqa: E402
from astra_ros.ros.runner import StartupError, publish_from_worker, run_node  # noqa: E402
from astra_ros.ros.conversions import image_msg_to_rgb, ns_to_stamp, pose_msg_to_matrix, rgb_to_image_msg, stamp_to_ns, twist_msg_to_vector
from astra_ros.ros.predictor_core import (
    ImagineLimits,
    ImagineSampling,
    InputLedger,
    InputMonitor,
    LiveStream,
    ModelWorker,
    ObservationWindow,
    Prediction,
    check_imagine_request,
    imagine_job,
    live_job,
    load_world_model,
    model_intrinsics,
    montage,
    state_kind,
)
from astra_ros.ros.sync import (
    DROP_IMAGE_BACKWARDS,
    DROP_IMAGE_QUEUE_FULL,
    DROP_NO_STATE_IN_SLOP,
    DROP_STATE_BACKWARDS,
    ApproximateTimePairer,
    MonotonicStamps,
)

try:  # built by scripts/setup.sh (or colcon) from msg/ and srv/
    from astra_ros.msg import PredictedFrames
    from astra_ros.srv import Imagine
except ImportError:  # the node still predicts; ~/predicted/frames and ~/imagine are left out
    PredictedFrames = None
    Imagine = None

NODE_NAME = "astra_predictor"
AWAIT_SLICE_S = 0.2  # [s] how often a service waiting for the model checks that the node still runs
TWIST_SOURCES = ("twist", "odom")
INPUTS = ("image", "pose", "twist", "odom")
LOG_THROTTLE_S = 5.0  # [s] the same warning at most this often
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model's inputs are float32
STAMP_JUMP_NS = 1_000_000_000  # [ns] a forward step this large is checked against the next stamp (a glitch?)
CLOCK_MISMATCH_NS = 1_000_000_000  # [ns] images this far from every state: the streams use different clocks
STATE_HISTORY_S = 2.0  # [s] states kept for pairing: covers images that arrive this late (camera latency)


PARAMETERS: dict[str, ParamSpec] = {
    "checkpoint": ParamSpec("default", "model checkpoint: 'default', a directory, or 'random:<preset>' "
                        "(random weights; random:tiny is 32x32 for tests)", read_only=True),
    "precision": ParamSpec("float32", "compute precision of the transformer: bfloat16 is ~1.2x faster on CPUs "
                       "with AVX512-BF16 (bench/profile_inference.py) at a mean change of under one grey level",
                       read_only=True, choices=("float32", "bfloat16")),
    "action_modality": ParamSpec("twist", "actions fed to the model: camera (pose = camera optical frame in the world), "
                             "robot (pose = end-effector in the base frame), twist or keys (twist or odom)",
                             choices=MODALITIES),
    "twist_source": ParamSpec("twist", "where twist/keys actions come from: 'twist' (the twist topic) or 'odom' "
                          "(the odometry's twist)", choices=TWIST_SOURCES),
    "twist_stamped": ParamSpec(False, "the twist topic is geometry_msgs/TwistStamped (else Twist, stamped on arrival)",
                           read_only=True),
    "context_frames": ParamSpec(4, "observed frames the model is started from (>= the model's frames per chunk)", (2, 64)),
    "horizon": ParamSpec(4, "frames predicted at each tick", (1, 64)),
    "publish_rate": ParamSpec(2.0, "predictions per second [Hz] (a tick without a new frame is skipped)", (0.05, 30.0)),
    "sync_slop_s": ParamSpec(0.05, "largest stamp difference [s] between an image and its nearest pose (the pose is "
                             "then interpolated to the image; twists are held as in training: the latest at or "
                             "before the image, zero once 0.5 s old)", (0.0, 2.0)),
    "sync_queue_size": ParamSpec(10, "images waiting for their pose/twist (older ones are dropped)", (1, 200)),
    "input_timeout_s": ParamSpec(2.0, "an input silent for longer than this [s] is reported", (0.1, 600.0)),
    "max_imagine_batch": ParamSpec(64, "largest batch an ~/imagine request may ask for (planners send 16-64 candidates)",
                               (1, 64)),
    "imagine_sub_batch": ParamSpec(0, "candidates the model runs at once; larger ~/imagine requests are split into "
                               "sub-batches run one after the other (same futures); 0: the model's memory estimate",
                               (0, 64)),
    "max_imagine_horizon": ParamSpec(16, "largest horizon an ~/imagine request may ask for", (1, 256)),
    "max_imagine_steps": ParamSpec(64, "most Euler steps per chunk an ~/imagine request may ask for (denoise_steps)",
                                   (1, 1024)),
    "imagine_timeout_s": ParamSpec(30.0, "longest an ~/imagine call waits for the model, queue and answer together; then it is cancelled [s]", (0.1, 600.0)),
    "seed": ParamSpec(-1, "seed of the live predictions' noise; -1: the model's default stream seed", (-1, 2**31 - 1)),
    "guidance_scale": ParamSpec(0.0, "action-free guidance of the live predictions: 0 = the model's default (per action "
                                "kind where its config sets one), 1 = off (one model pass, about 2x faster)", (0.0, 20.0)),
    "key_linear_threshold": ParamSpec(0.05, "keys modality: speed [m/s] that presses forward/back/left/right", (1e-4, 100.0)),
    "key_angular_threshold": ParamSpec(0.15, "keys modality: yaw rate [rad/s] that presses a turn key", (1e-4, 100.0)),
}


class PredictorNode(Node):
    """The predictor: thin callbacks over :mod:`astra_ros.ros.predictor_core`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            for name, spec in PARAMETERS.items():
                self.declare_parameter(name, spec.default, descriptor(name, spec))
        except ParameterException as error:  # a -p or params-file value of the wrong type or out of range
            raise StartupError(str(error)) from error
        self._params = {name: self.get_parameter(name).value for name in PARAMETERS}
        self._model = self._load_model(self._params["checkpoint"])
        try:
            self._model.set_precision(self._params["precision"])
        except (ValueError, UnreliablePrecision) as error:  # unknown name, or bf16 kernels that compute wrongly
            raise StartupError(f"parameter precision={self._params['precision']!r}: {error}") from error
        for name, value in self._params.items():
            reason = self._check_value(name, value)
            if reason:
                raise StartupError(f"parameter {name}={value!r}: {reason}")
        self._fail_if_unknown_modality(self._params["action_modality"])

        self._lock = threading.Lock()  # guards everything the callbacks and the worker share below
        self._dropped: Counter[str] = Counter()  # input events by reason: silences (``<input>_timeout``)
        self._ledger = InputLedger(INPUTS)  # every received input: used, or skipped by reason
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
        self._window = ObservationWindow(self._params["context_frames"], self._model.resolution)
        self._pairer = self._new_pairer()
        self._stamps = {name: MonotonicStamps(strict=(name == "image"), max_jump_ns=STAMP_JUMP_NS) for name in INPUTS}
        self._latest_command: np.ndarray | None = None
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

        self._worker = ModelWorker(self._model, queue_size=1)

        # The node spins on a single-threaded executor (see main); the groups only matter to a caller
        # that adds the node to a multi-threaded one. The live model runs in its own worker thread;
        # an ~/imagine call runs the model while the executor waits, so inputs queue meanwhile.
        inputs = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        services = ReentrantCallbackGroup()  # reentrant: ~/reset is served while ~/imagine waits
        twist_type = TwistStamped if self._params["twist_stamped"] else Twist
        for name, msg_type, callback in (("image", Image, self._on_image), ("pose", PoseStamped, self._on_pose),
                                         ("twist", twist_type, self._on_twist), ("odom", Odometry, self._on_odom)):
            self.create_subscription(msg_type, name, callback, qos_profile_sensor_data, callback_group=inputs,
                                     event_callbacks=SubscriptionEventCallbacks(message_lost=partial(self._on_lost, name)))
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data,
                                 callback_group=inputs)

        reliable = QoSProfile(depth=10)
        self._image_pub = self.create_publisher(Image, "~/predicted/image", reliable)
        self._montage_pub = self.create_publisher(Image, "~/predicted/montage", reliable)
        self._frames_pub = (
            self.create_publisher(PredictedFrames, "~/predicted/frames", reliable) if PredictedFrames is not None else None
        )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services)
        if Imagine is not None:
            self.create_service(Imagine, "~/imagine", self._on_imagine, callback_group=services)
        else:
            self.get_logger().warning("astra_ros_interfaces is not built: no ~/imagine and no ~/predicted/frames "
                                      "(run scripts/setup.sh or build it with colcon)")

        self._timers_group = timers
        self._predict_timer = self.create_timer(1.0 / self._params["publish_rate"], self._on_predict_tick, timers)
        self.create_timer(1.0, self._on_diagnostics_tick, timers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.get_logger().info(
            f"predicting {self._params['horizon']} frames of {self._params['action_modality']} actions from "
            f"{self._params['context_frames']} frames at {self._params['publish_rate']} Hz "
            f"(model {self._params['checkpoint']}, {self._model.resolution[1]}x{self._model.resolution[0]} px)"
        )

    # ------------------------------------------------------------------ set-up and parameters
    def _load_model(self, checkpoint: str) -> Any:
        try:
            return load_world_model(checkpoint)
        except Exception as error:  # any load failure stops the node with its reason
            raise StartupError(f"cannot load checkpoint {checkpoint!r}: {error}") from error

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
        if name == "context_frames" and value < self._model.frames_per_chunk:
            return f"must be >= the model's frames per chunk ({self._model.frames_per_chunk}), got {value}"
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
            if "context_frames" in changed:
                before = set(self._window.stamps_ns)
                self._window.resize(self._params["context_frames"])
                self._supersede(before - set(self._window.stamps_ns))
        if "publish_rate" in changed:
            self.destroy_timer(self._predict_timer)
            self._predict_timer = self.create_timer(1.0 / self._params["publish_rate"], self._on_predict_tick,
                                                    self._timers_group)
        if changed:
            self.get_logger().info(f"parameters changed: {', '.join(sorted(changed))}")

    # ------------------------------------------------------------------ inputs
    def _drop(self, reason: str, detail: str) -> None:
        """Count a refused input (its reason starts with its stream) and warn (throttled); the lock is held."""
        self._ledger.skip(reason)
        self.get_logger().warning(f"dropped input ({reason}): {detail}", throttle_duration_sec=LOG_THROTTLE_S)

    def _arrived(self, stream: str) -> None:
        with self._lock:
            self._inputs.arrived(stream, time.monotonic())

    def _on_lost(self, stream: str, info: QoSMessageLostInfo) -> None:
        """The middleware lost messages of ``stream`` before a callback saw them (a burst beyond the queue)."""
        with self._lock:
            self._lost[stream] += int(info.total_count_change)

    def _feeding_stream(self) -> str:
        """The input whose states are paired with the images: ``pose``, or the twist source."""
        return "pose" if state_kind(self._params["action_modality"]) == "pose" else self._params["twist_source"]

    def _feeds_model(self, stream: str) -> bool:
        return stream == self._feeding_stream()

    def _state_silent(self, now_s: float) -> bool:
        """The stream feeding the model has delivered no usable state for ``input_timeout_s``."""
        return now_s - self._last_accepted_s[self._feeding_stream()] > self._params["input_timeout_s"]

    def _fallback_state(self) -> np.ndarray:
        """What images are paired with while the feeding stream is silent: no motion.

        Twist/keys: a zero twist (a base whose command stream stopped is taken to stand still, as
        velocity controllers with a command timeout do). Camera/robot: the last pose received held
        (identity before any), so the window and its constant-velocity future show no motion.
        """
        if state_kind(self._params["action_modality"]) == "twist":
            return np.zeros(6)
        return np.eye(4) if self._last_pose is None else self._last_pose

    def _accept_stamp(self, stream: str, stamp_ns: int) -> bool:
        verdict = self._stamps[stream].accept(stamp_ns)
        if verdict in ("backwards", "duplicate"):
            how = "is before" if verdict == "backwards" else "repeats"
            self._drop(f"{stream}_stamp_{verdict}", f"{stream} stamp {stamp_ns} ns {how} the previous one")
            return False
        if verdict == "jump_undone":
            self._take_back_outlier(stream, stamp_ns)
        if verdict == "restart":
            self._restarts[stream] += 1
            if stream == "image" or self._feeds_model(stream):
                self.get_logger().warning(f"{stream} stamps restarted (clock jumped back, e.g. a bag loop): "
                                          "history cleared")
                self._restart_history(stream, stamp_ns)
        return True

    def _take_back_outlier(self, stream: str, stamp_ns: int) -> None:
        """The previous ``stream`` stamp jumped far ahead and ``stamp_ns`` continues from before it: that
        message was an outlier (a glitched stamp). Take it out of the queues and the window, so that it
        neither blocks the good stamps after it nor pairs with them (the lock is held)."""
        outlier_ns = self._stamps[stream].undone_ns
        self.get_logger().warning(f"{stream} stamp {outlier_ns} ns was {(outlier_ns - stamp_ns) / 1e9:.1f} s ahead of "
                                  f"the stream around it: taken back as a glitch", throttle_duration_sec=LOG_THROTTLE_S)
        if stream == "image":
            queued = len(self._pairer.discard_images_after(stamp_ns))
            windowed = set(self._window.discard_after(stamp_ns))
            self._ledger.skip("image_stamp_jump", queued + len(self._unsent & windowed))
            self._unsent -= windowed
        elif self._feeds_model(stream):
            self._pairer.discard_states_after(stamp_ns)  # it was used (counted); it only leaves the queue

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """The camera's intrinsics, for a model that turns the newest frame by the commanded rotation
        (``rotation_reference``); without them it assumes its config's field of view."""
        key = (msg.width, msg.height, tuple(float(v) for v in msg.k))
        if key == self._intrinsics_key:
            return
        self._intrinsics_key = key
        try:
            K = model_intrinsics(msg.k, msg.width, msg.height, self._model.resolution)
        except ValueError as error:
            self.get_logger().warning(f"camera_info ignored, the model keeps its {self._intrinsics_source} intrinsics: "
                                      f"{error}")
            return
        set_intrinsics = getattr(self._model, "set_intrinsics", None)
        if set_intrinsics is not None:
            set_intrinsics(K)  # one attribute: the worker reads it whole at its next prediction
            self._intrinsics_source = (f"camera_info (at the model's size: fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} "
                                       f"cx={K[0, 2]:.2f} cy={K[1, 2]:.2f} px)")

    def _on_image(self, msg: Image) -> None:
        self._arrived("image")
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            rgb = image_msg_to_rgb(msg)
        except ImageDecodeError as error:
            with self._lock:
                self._ledger.receive("image")
                self._drop("image_decode_error", str(error))
            return
        with self._lock:
            self._ledger.receive("image")
            if not self._accept_stamp("image", stamp_ns):
                return
            if msg.header.frame_id != self._image_frame_id:
                if self._image_frame_id is not None and (len(self._window) or self._pairer.pending_images):
                    # Another camera (a driver switched, a remap changed): its frames are not the history's future.
                    self.get_logger().warning(f"image frame_id changed from '{self._image_frame_id}' to "
                                              f"'{msg.header.frame_id}': history restarted")
                    self._restarts["image_frame_id"] += 1
                    self._restart_history("image", stamp_ns)
                self._image_frame_id = msg.header.frame_id
            image = (rgb, msg.header.frame_id)
            if not self._state_silent(time.monotonic()):
                self._pair(lambda: self._pairer.add_image(stamp_ns, image))
                return
            # Fallback: the feeding stream is silent; pair this image (and any still waiting) with no motion.
            if not self._fallback_active:
                self._fallback_active = True
                self.get_logger().warning(
                    f"no {self._feeding_stream()} for {self._params['input_timeout_s']} s: predicting with "
                    + ("a zero twist" if state_kind(self._params["action_modality"]) == "twist" else "the last pose held")
                    + " until it returns")
            state = self._fallback_state()
            for pending_ns, pending in self._pairer.take_pending_images() + [(stamp_ns, image)]:
                self._add_to_window(pending_ns, pending, state)
                self._fallback_frames += 1
                self._fallback_in_window = True

    def _on_state(self, stream: str, stamp_ns: int, state: np.ndarray) -> None:
        """A pose (4x4) or twist (6) of ``stream``: checked, remembered, paired when it feeds the model."""
        with self._lock:
            self._ledger.receive(stream)
            # The model runs in float32: a finite value beyond its range would become inf there.
            if not (np.isfinite(state).all() and np.abs(state).max() <= FLOAT32_MAX):
                self._drop(f"{stream}_not_finite", f"{stream} at {stamp_ns} ns has NaN, inf or out-of-range values")
                return
            if not self._accept_stamp(stream, stamp_ns):
                return
            if not self._feeds_model(stream):
                self._ledger.skip(f"{stream}_not_used_by_{self._params['action_modality']}_actions")
                return
            if self._fallback_active and state.shape == (4, 4) and self._fallback_in_window:
                # The frames of the silence hold a pose the camera has since left (identity if no pose came
                # yet): next to this one they would read as one large motion. Start again from real poses.
                self._restart_history(stream, stamp_ns)
                self.get_logger().info(f"{stream} is back after a silence: history restarted from real poses")
            if self._pair(lambda: self._pairer.add_state(stamp_ns, state), state_stream=stream)[DROP_STATE_BACKWARDS]:
                return  # refused by the pairer (counted)
            self._ledger.use(stream)
            self._last_accepted_s[stream] = time.monotonic()
            if self._fallback_active:
                self._fallback_active = False
                self.get_logger().info(f"{stream} is back: predictions use it again")
            if state.shape == (6,):
                self._latest_command = state
            else:
                self._last_pose = state

    def _on_pose(self, msg: PoseStamped) -> None:
        self._arrived("pose")
        self._on_state("pose", stamp_to_ns(msg.header.stamp), pose_msg_to_matrix(msg.pose))

    def _on_twist(self, msg: Twist | TwistStamped) -> None:
        self._arrived("twist")
        if isinstance(msg, TwistStamped):
            stamp_ns, twist = stamp_to_ns(msg.header.stamp), msg.twist
        else:  # no header: stamped on arrival
            stamp_ns, twist = self.get_clock().now().nanoseconds, msg
        self._on_state("twist", stamp_ns, twist_msg_to_vector(twist))

    def _on_odom(self, msg: Odometry) -> None:
        self._arrived("odom")
        self._on_state("odom", stamp_to_ns(msg.header.stamp), twist_msg_to_vector(msg.twist.twist))

    def _pair(self, call: Any, state_stream: str = "") -> Counter[str]:
        """Run a pairer call, count what it dropped in the ledger, add its pairs to the window; the drops by reason.

        A state call can drop images (decided without a state in the slop) and still accept its state.
        """
        before, stale_before = Counter(self._pairer.dropped), self._pairer.stale_pairs
        pairs = call()
        drops = self._pairer.dropped - before
        for reason, count in drops.items():
            self._ledger.skip({DROP_IMAGE_QUEUE_FULL: "image_queue_full",
                               DROP_NO_STATE_IN_SLOP: "image_no_state_within_slop",
                               DROP_IMAGE_BACKWARDS: "image_stamp_backwards",
                               DROP_STATE_BACKWARDS: f"{state_stream}_stamp_backwards"}.get(reason, reason), count)
        for pair in pairs:
            self._add_to_window(pair.image_stamp_ns, pair.image, pair.state)
        gap_ns = self._pairer.last_unpaired_gap_ns
        if drops[DROP_NO_STATE_IN_SLOP] and gap_ns is not None and abs(gap_ns) > CLOCK_MISMATCH_NS:
            self.get_logger().warning(self._clock_mismatch_hint(gap_ns), throttle_duration_sec=LOG_THROTTLE_S)
        # Held commands: an image far from every command while commands do arrive means another clock.
        if self._pairer.stale_pairs > stale_before and gap_ns is not None and abs(gap_ns) > CLOCK_MISMATCH_NS:
            self.get_logger().warning(self._clock_mismatch_hint(gap_ns, held=True), throttle_duration_sec=LOG_THROTTLE_S)
        return drops

    def _clock_mismatch_hint(self, gap_ns: int, held: bool = False) -> str:
        """Why images and states seconds apart cannot pair, and the usual fix."""
        stream = self._feeding_stream()
        if held:
            text = (f"images are stamped {gap_ns / 1e9:+.1f} s from the nearest {stream}: the two streams carry "
                    "different clocks, so the images are paired with a zero command")
        else:
            text = (f"images are stamped {gap_ns / 1e9:+.1f} s from the nearest {stream} (sync_slop_s "
                    f"{self._params['sync_slop_s']}): the two streams carry different clocks, so no image pairs")
        if stream == "twist" and not self._params["twist_stamped"]:
            return text + (". A plain geometry_msgs/Twist has no stamp and is stamped on arrival with this "
                           "node's clock: publish TwistStamped (twist_stamped:=true) or, replaying a bag, "
                           "play it with --clock and run this node with use_sim_time:=true")
        return text + ". Stamp both with one clock (replaying a bag: --clock and use_sim_time:=true)"

    def _add_to_window(self, stamp_ns: int, image: tuple[np.ndarray, str], state: np.ndarray) -> None:
        rgb, frame_id = image
        evicted = self._window.add(stamp_ns, rgb, state, frame_id)
        if evicted is not None:
            self._supersede({evicted.stamp_ns})
        self._unsent.add(int(stamp_ns))

    def _supersede(self, stamps_ns: set[int]) -> None:
        """Frames that left the window before any prediction used them: skipped (the camera outran the model)."""
        superseded = self._unsent & stamps_ns
        self._ledger.skip("image_superseded", len(superseded))
        self._unsent -= superseded

    def _clear_history(self) -> None:
        """Forget the window, the queued inputs and the stamps (the lock is held); unused images are counted."""
        self._ledger.skip("image_history_cleared", len(self._unsent) + len(self._pairer.take_pending_images()))
        self._unsent.clear()
        self._window.clear()
        self._pairer = self._new_pairer()
        for guard in self._stamps.values():
            guard.reset()
        self._latest_command = None
        self._last_predicted_stamp_ns = None
        self._live.clear()  # the model's stream holds the old history too: ~/imagine must not continue it
        self._fallback_in_window = False

    def _restart_history(self, stream: str, stamp_ns: int) -> None:
        """Clear the history at a ``stream`` message that stays: its stamp opens the new stream (lock held)."""
        self._clear_history()
        self._stamps[stream].accept(stamp_ns)

    # ------------------------------------------------------------------ prediction
    def _thresholds(self) -> KeyThresholds:
        return KeyThresholds(self._params["key_linear_threshold"], self._params["key_angular_threshold"])

    def _future_command(self) -> np.ndarray | None:
        """The command held over the horizon: zero while the twist stream is silent (the fallback)."""
        if state_kind(self._params["action_modality"]) == "twist" and self._state_silent(time.monotonic()):
            return np.zeros(6)
        return self._latest_command

    def _on_predict_tick(self) -> None:
        with self._lock:
            if not self._window.full:
                self._skipped["window_not_full"] += 1
                return
            if self._window.last.stamp_ns == self._last_predicted_stamp_ns:
                self._skipped["no_new_frame"] += 1
                return
            snapshot = self._window.snapshot(
                self._params["action_modality"], self._params["horizon"],
                latest_command=self._future_command(), thresholds=self._thresholds(),
            )
            seed = self._params["seed"]
            guidance = self._params["guidance_scale"]
            generation = self._live.generation
        future = self._worker.try_submit(partial(live_job, live=self._live, generation=generation, snapshot=snapshot,
                                                 seed=None if seed < 0 else seed, guidance_scale=guidance or None,
                                                 should_stop=self._worker.stopping.is_set))
        if future is None:
            with self._lock:
                self._skipped["model_busy"] += 1
            return
        with self._lock:
            self._last_predicted_stamp_ns = snapshot.last_stamp_ns
            used = self._unsent & set(snapshot.stamps_ns.tolist())
            self._ledger.use("image", len(used))
            self._unsent -= used
        future.add_done_callback(self._on_prediction_done)

    def _on_prediction_done(self, future: Any) -> None:
        """Runs in the model worker thread: publish (rclpy publishers are thread-safe)."""
        try:
            result = future.result()
        except ImagineCancelled:  # the node is shutting down
            return
        except Exception as error:  # a model failure is reported and the next tick tries again
            with self._lock:
                self._skipped["model_error"] += 1
                self._last_error = str(error)
            self.get_logger().error(f"prediction failed: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        if result is None:  # its history was cleared (~/reset) while it ran: not published
            with self._lock:
                self._skipped["history_cleared_while_predicting"] += 1
            return
        prediction, usage = result
        with self._lock:
            self._predictions += 1
            self._latencies = (self._latencies + [prediction.latency_s])[-50:]
            self._new_latencies.append(prediction.latency_s)
            self._expert_usage = usage
        publish_from_worker(self, partial(self._publish, prediction))

    def _publish(self, prediction: Prediction) -> None:
        snapshot = prediction.snapshot
        frame_id = snapshot.frame_id
        images = [rgb_to_image_msg(frame, int(stamp), frame_id) for frame, stamp in zip(prediction.frames, prediction.stamps_ns)]
        for image in images:
            self._image_pub.publish(image)
        self._montage_pub.publish(rgb_to_image_msg(montage(snapshot.frames[-1], prediction.frames), snapshot.last_stamp_ns, frame_id))
        if self._frames_pub is not None:
            msg = PredictedFrames()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = frame_id
            msg.observed_stamp = ns_to_stamp(snapshot.last_stamp_ns)
            msg.frames = images
            msg.stamps = [ns_to_stamp(int(s)) for s in prediction.stamps_ns]
            msg.modality = snapshot.modality
            msg.actions = snapshot.future_actions.astype(np.float32).reshape(-1).tolist()
            msg.action_dim = int(snapshot.future_actions.shape[1])
            self._frames_pub.publish(msg)

    # ------------------------------------------------------------------ services
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._clear_history()
        response.success = True
        response.message = "history cleared: predictions resume when the window is full again"
        self.get_logger().info("reset: history cleared")
        return response

    def _on_imagine(self, request: Any, response: Any) -> Any:
        response.success = False
        response.batch, response.horizon = int(request.batch), int(request.horizon)
        with self._lock:
            modality = request.modality or self._params["action_modality"]
            limits = ImagineLimits(self._params["max_imagine_batch"], self._params["max_imagine_horizon"],
                                   self._params["max_imagine_steps"])
            sub_batch = self._params["imagine_sub_batch"] or None
            timeout_s = self._params["imagine_timeout_s"]
            snapshot = None
            if self._window.full:
                snapshot = self._window.snapshot(self._params["action_modality"], 1, latest_command=self._future_command(),
                                                 thresholds=self._thresholds())
            elif not (request.from_live_history and self._live.info is not None):
                self._imagine_calls["refused"] += 1
                response.message = (f"no history yet: the window has {len(self._window)} of "
                                    f"{self._window.context_frames} observed frames")
                return response
        try:
            if modality not in self._model.modalities:
                raise ValueError(f"unknown modality {modality!r}; the model knows {', '.join(self._model.modalities)}")
            actions = check_imagine_request(
                np.asarray(request.actions, dtype=np.float32), batch=request.batch, horizon=request.horizon,
                action_dim=request.action_dim, expected_dim=self._model.action_dim(modality), limits=limits,
                denoise_steps=int(request.denoise_steps), guidance_scale=float(request.guidance_scale),
            )
        except ValueError as error:
            with self._lock:
                self._imagine_calls["refused"] += 1
            response.message = str(error)
            return response
        seed = secrets.randbelow(2**31) if request.seed < 0 else int(request.seed)
        began = time.perf_counter()
        # One deadline for waiting for the worker and for the answer; past it the job is cancelled
        # (it stops at its next chunk), so an abandoned request does not hold the model for the next.
        deadline = time.monotonic() + timeout_s
        cancel = threading.Event()
        future = None
        try:
            sampling = ImagineSampling(steps=int(request.denoise_steps) or None,
                                       guidance_scale=float(request.guidance_scale) or None,
                                       shared_noise=bool(request.shared_noise), last_frame_only=bool(request.last_frame_only),
                                       max_batch=sub_batch)
            with self._lock:
                generation = self._live.generation
            stopping = self._worker.stopping
            future = self._worker.submit(partial(imagine_job, live=self._live, generation=generation, snapshot=snapshot,
                                                 actions=actions, modality=modality, seed=seed,
                                                 from_live_history=bool(request.from_live_history), sampling=sampling,
                                                 should_stop=lambda: cancel.is_set() or stopping.is_set()), timeout_s)
            frames, stamps_ns, frame_id, interval_s = self._await(future, deadline)
        except Exception as error:  # model busy past the timeout, or the model failed: tell the caller
            cancel.set()
            if future is not None:
                future.cancel()
            with self._lock:
                self._imagine_calls["failed"] += 1
            if isinstance(error, (TimeoutError, queue.Full)):
                response.message = (f"imagination failed: no answer within imagine_timeout_s={timeout_s:g} s "
                                    "(the request was cancelled)")
            else:
                response.message = f"imagination failed: {str(error) or type(error).__name__}"
            return response
        response.frames = [rgb_to_image_msg(frame, int(stamps_ns[t]), frame_id)
                           for candidate in frames for t, frame in enumerate(candidate)]
        response.frames_per_candidate = int(frames.shape[1])
        response.frame_interval_s = interval_s
        response.latency_s = float(time.perf_counter() - began)
        response.success = True
        response.message = f"{len(frames)} futures of {frames.shape[1]} frames from {modality} actions"
        with self._lock:
            self._imagine_calls["served"] += 1
        return response

    # ------------------------------------------------------------------ diagnostics
    def _on_diagnostics_tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            kind = state_kind(self._params["action_modality"])
            required = ("image", "pose") if kind == "pose" else ("image", self._params["twist_source"])
            went_silent, silent = self._inputs.newly_silent(required, now, self._params["input_timeout_s"])
            for name in went_silent:
                self._dropped[f"{name}_timeout"] += 1
            rates = self._inputs.rates_hz(now)
            input_skipped = Counter(self._ledger.skipped)
            dropped = self._dropped + input_skipped
            received, used, skipped_total = self._ledger.totals()
            per_stream = {name: (self._ledger.received[name], self._ledger.used[name]) for name in INPUTS}
            pending = self._pairer.pending_images + len(self._unsent)
            lost = Counter(self._lost)
            restarts = Counter(self._restarts)
            jumps_undone = {name: guard.jumps_undone for name, guard in self._stamps.items() if guard.jumps_undone}
            fallback_silent = self._state_silent(now)
            fallback_frames, feeding = self._fallback_frames, self._feeding_stream()
            skipped = Counter(self._skipped)
            latencies = list(self._latencies)
            new_latencies, self._new_latencies = self._new_latencies, []
            usage = dict(self._expert_usage)
            predictions, window_len = self._predictions, len(self._window)
            imagine_calls = Counter(self._imagine_calls)
            last_error = self._last_error
        if went_silent:
            consequence = ("predictions pause until images return" if "image" in went_silent
                           else "predictions continue assuming no motion until it returns")
            self.get_logger().warning(f"no messages on {', '.join(went_silent)} for {self._params['input_timeout_s']} s; "
                                      f"{consequence}")
        stamp = self.get_clock().now().to_msg()
        inputs = DiagnosticStatus(name=f"{NODE_NAME}: inputs", hardware_id=NODE_NAME)
        inputs.level = DiagnosticStatus.WARN if silent else DiagnosticStatus.OK
        inputs.message = f"silent: {', '.join(silent)}" if silent else "inputs arriving"
        if fallback_silent:
            inputs.message += (f"; fallback: {feeding} silent, images paired with "
                               + ("a zero twist" if kind == "twist" else "the last pose held"))
        inputs.values = [KeyValue(key=f"rate_{name}_hz", value=f"{rate:.2f}") for name, rate in rates.items()]
        inputs.values += [KeyValue(key=f"dropped_{reason}", value=str(count)) for reason, count in sorted(dropped.items())]
        inputs.values.append(KeyValue(key="window_frames", value=str(window_len)))
        inputs.values += [KeyValue(key="fallback_active", value=str(fallback_silent).lower()),
                          KeyValue(key="fallback_frames", value=str(fallback_frames))]
        inputs.values += [KeyValue(key=f"restarts_{name}", value=str(count)) for name, count in sorted(restarts.items())]
        inputs.values += [KeyValue(key=f"stamp_jumps_undone_{name}", value=str(count))
                          for name, count in sorted(jumps_undone.items())]
        # Every message a callback saw is used or skipped by reason, or still pending (queued images).
        accounting = DiagnosticStatus(name=f"{NODE_NAME}: input accounting", hardware_id=NODE_NAME)
        accounted = received == used + skipped_total + pending
        accounting.level = DiagnosticStatus.OK if accounted else DiagnosticStatus.ERROR
        accounting.message = (f"{received} received = {used} used + {skipped_total} skipped + {pending} pending"
                              if accounted else f"{received} received != {used} used + {skipped_total} skipped + "
                              f"{pending} pending")
        accounting.values = [KeyValue(key="inputs_received", value=str(received)),
                             KeyValue(key="inputs_used", value=str(used)),
                             KeyValue(key="inputs_skipped", value=str(skipped_total)),
                             KeyValue(key="inputs_pending", value=str(pending)),
                             KeyValue(key="inputs_accounted", value=str(accounted).lower())]
        for name, (got, took) in per_stream.items():
            accounting.values += [KeyValue(key=f"received_{name}", value=str(got)), KeyValue(key=f"used_{name}", value=str(took))]
        accounting.values += [KeyValue(key=f"input_skipped_{reason}", value=str(count))
                              for reason, count in sorted(input_skipped.items())]
        accounting.values += [KeyValue(key=f"lost_in_transport_{name}", value=str(count)) for name, count in sorted(lost.items())]
        prediction = DiagnosticStatus(name=f"{NODE_NAME}: prediction", hardware_id=NODE_NAME)
        prediction.level = DiagnosticStatus.ERROR if skipped["model_error"] and not predictions else (
            DiagnosticStatus.OK if predictions else DiagnosticStatus.WARN)
        prediction.message = f"{predictions} predictions" + (f"; last error: {last_error}" if last_error else "")
        prediction.values = [KeyValue(key="predictions", value=str(predictions))]
        if latencies:
            prediction.values += [KeyValue(key="latency_last_s", value=f"{latencies[-1]:.4f}"),
                                  KeyValue(key="latency_mean_s", value=f"{np.mean(latencies):.4f}")]
        # Every prediction's model latency once: a monitor that reads each message loses none.
        prediction.values.append(KeyValue(key="latency_new_ms", value=",".join(f"{1e3 * t:.1f}" for t in new_latencies)))
        prediction.values += [KeyValue(key=f"skipped_{reason}", value=str(count)) for reason, count in sorted(skipped.items())]
        prediction.values += [KeyValue(key=f"imagine_{kind_}", value=str(count)) for kind_, count in sorted(imagine_calls.items())]
        if getattr(getattr(self._model, "config", None), "rotation_reference", False):
            prediction.values.append(KeyValue(key="intrinsics", value=self._intrinsics_source))
        experts = DiagnosticStatus(name=f"{NODE_NAME}: experts", hardware_id=NODE_NAME, level=DiagnosticStatus.OK,
                                   message="fraction of action tokens routed to each expert, per modality")
        experts.values = [KeyValue(key=f"{modality}_expert_{index}", value=f"{share:.3f}")
                          for modality, shares in sorted(usage.items()) for index, share in enumerate(shares)]
        if fallback_silent and prediction.level == DiagnosticStatus.OK:
            prediction.level = DiagnosticStatus.WARN
            prediction.message += f"; fallback: no {feeding}, assuming no motion"
        array = DiagnosticArray(status=[inputs, accounting, prediction, experts])
        array.header.stamp = stamp
        self._diagnostics_pub.publish(array)

    def _await(self, future: Future, deadline: float) -> Any:
        """``future.result()`` by ``deadline`` (monotonic [s]; TimeoutError past it), waited for in short
        slices: Ctrl-C shuts the context down from rclpy's signal handler, which need not interrupt a
        blocked wait, and a service callback waiting out its whole deadline would hold the executor, and
        with it the node's exit, for that long."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                return future.result(timeout=max(0.0, min(AWAIT_SLICE_S, remaining)))
            except FutureTimeout:
                if remaining <= AWAIT_SLICE_S:
                    raise TimeoutError("deadline passed") from None
                if not self.context.ok():
                    raise ImagineCancelled("the node is shutting down") from None

    def destroy_node(self) -> None:
        # The running job stops at its next chunk; one still running at interpreter exit would abort it.
        if not self._worker.stop():
            self.get_logger().warning("the model worker did not stop in time; exiting with it still running")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the predictor until Ctrl-C or ROS shutdown; 1 when it cannot start."""
    import torch

    torch.set_num_threads(1)  # one core for the model, the other for the callbacks
    # A single-threaded executor: measured on an idle 2-core machine, rclpy's MultiThreadedExecutor
    # kept the main thread busy (~90 % of a core) re-polling inputs whose exclusive group was already
    # running, and the node then received 12 % of a 30 Hz camera's images with a p99 latency of 7.8 s;
    # single-threaded it received 86 % (the rest arrive before it subscribes) with a p99 of 36 ms.
    return run_node(PredictorNode, SingleThreadedExecutor, NODE_NAME, args, usage=__doc__, parameters=PARAMETERS,
                    exit_at_once_if_not_started=True)
