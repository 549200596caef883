"""``astra_predictor``: predicts the camera's next frames from the robot's actions (DESIGN §5).

    astra-predictor --ros-args -p checkpoint:=default -p action_modality:=twist -r image:=/camera/image_raw

Subscribes (sensor-data QoS) ``image``, ``pose``, ``twist`` (Twist, or TwistStamped with
``twist_stamped:=true``), ``odom`` and ``camera_info`` (sensor_msgs/CameraInfo, optional: the intrinsics
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
frames, not published), then ``horizon_s`` on under the command that holds now (twist, keys) or the
last pose step at constant velocity (camera, robot).

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

import os
import threading
import time
from collections import Counter
from dataclasses import replace
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
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from astra_ros.data.actions import MODALITIES, KeyThresholds
from astra_ros.data.bags import COMMAND_TIMEOUT_NS
from astra_ros.data.geometry import interpolate_transform
from astra_ros.data.images import ImageDecodeError
from astra_ros.model.precision import UnreliablePrecision
from astra_ros.model.world_model import ImagineCancelled
from astra_ros.ros.parameters import ParamSpec, descriptor  # noqa: E402
from astra_ros.ros.runner import StartupError, publish_from_worker, run_node  # noqa: E402
from astra_ros.ros.conversions import compressed_msg_to_rgb, image_msg_to_rgb, ns_to_stamp, pose_msg_to_matrix, rgb_to_image_msg, stamp_to_ns, twist_msg_to_vector
from astra_ros.ros.imagine_server import ImagineServer
from astra_ros.ros.live_forecast import (
    SI_ACTION_DIMS,
    SI_ACTION_UNITS,
    FrameGrid,
    LatencyEstimate,
    LiveLoop,
    actions_from_states,
    check_action_range,
    plan_forecast,
    si_to_model_actions,
    states_at,
)
from astra_ros.ros.predictor_core import (
    RESIZE_MODES,
    ImagineLimits,
    check_imagine_request,
    InputLedger,
    InputMonitor,
    LiveStream,
    ObservationWindow,
    Prediction,
    forecast_window,
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
TWIST_SOURCES = ("twist", "odom")
INPUTS = ("image", "pose", "twist", "odom")
LOG_THROTTLE_S = 5.0  # [s] the same warning at most this often
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model's inputs are float32
STAMP_JUMP_NS = 1_000_000_000  # [ns] a forward step this large is checked against the next stamp (a glitch?)
CLOCK_MISMATCH_NS = 1_000_000_000  # [ns] images this far from every state: the streams use different clocks
PUBLISH_MARGIN_S = 0.01  # [s] a published frame shows a time at least this far ahead (the way to a subscriber)
LOST_CHANGE_MAX = 100_000  # messages one lost-message event may report; more is a middleware's garbage
QUATERNION_NORM_TOLERANCE = 0.1  # a pose quaternion whose norm is further from 1 is refused, not normalised
TRACK_S = 5.0  # [s] feeding-stream states kept for catching forecasts up to now
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
    "image_transport": ParamSpec("raw", "raw: sensor_msgs/Image on `image`; compressed: sensor_msgs/CompressedImage "
                                 "(jpeg, png) on `<image>/compressed` (image_transport's name, after remapping `image`)",
                                 read_only=True, choices=("raw", "compressed")),
    "twist_stamped": ParamSpec(False, "the twist topic is geometry_msgs/TwistStamped (else Twist, stamped on arrival)",
                           read_only=True),
    "context_frames": ParamSpec(4, "observed frames the model is started from (a multiple of the model's frames "
                                "per chunk)", (2, 64)),
    "horizon_s": ParamSpec(2.0, "each forecast covers at least this long [s] after its publication", (0.1, 30.0)),
    "publish_rate": ParamSpec(10.0, "at most this many forecasts per second [Hz]: the next starts as soon as the "
                              "previous is out and a newer frame exists, no sooner than 1/publish_rate after it",
                              (0.05, 30.0)),
    "max_catch_up_s": ParamSpec(3.0, "images older than this [s] against the node clock are not caught up to now "
                                "(another clock: replay bags with --clock and use_sim_time:=true); the forecast "
                                "then starts at the newest frame and /diagnostics warns", (0.0, 60.0)),
    "resize_mode": ParamSpec("crop", "how images of another aspect ratio reach the square model input: crop (centre "
                             "crop, intrinsics adjusted) or squash (resize as they are)", read_only=True,
                             choices=RESIZE_MODES),
    "device": ParamSpec("auto", "where the model runs: auto (cuda when available), cpu or cuda", read_only=True,
                        choices=("auto", "cpu", "cuda")),
    "num_threads": ParamSpec(0, "torch threads of each model thread (live loop, ~/imagine); 0: half the cores, "
                             "at least 1", (0, 256), read_only=True),
    "action_range_multiple": ParamSpec(3.0, "~/imagine refuses actions beyond this multiple of the speeds the model "
                                       "was trained on (0.7 m/s, 1.1 rad/s)", (1.0, 100.0)),
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
    "imagine_timeout_s": ParamSpec(30.0, "longest an ~/imagine call waits for the model, queue and answer together; "
                                   "then it is cancelled; a request estimated to take longer is refused at once [s]",
                                   (0.1, 600.0)),
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
        self._not_caught_up = 0  # forecasts from images too far behind the node clock to catch up
        self._live_snapshot = None  # the window the last published forecast started from (~/imagine's live history)
        self._camera_info: CameraInfo | None = None  # at the model's resolution, published with each forecast

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
        self._window = ObservationWindow(self._params["context_frames"], self._model.resolution,
                                         self._params["resize_mode"])
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

        intrinsics = getattr(self._model, "intrinsics", None)  # the model's assumed camera until a camera_info comes
        if intrinsics is not None:
            self._camera_info = self._predicted_camera_info(np.asarray(intrinsics, dtype=np.float64))
        threads = self._params["num_threads"] or max(1, (os.cpu_count() or 2) // 2)
        self._threads = threads
        self._topics: dict[str, str] = {}  # input -> resolved topic name

        # The node spins on a single-threaded executor (see main): its callbacks never wait for the model.
        # The live forecasts run in a thread of their own, ~/imagine in another with its own executor.
        inputs = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        services = ReentrantCallbackGroup()
        twist_type = TwistStamped if self._params["twist_stamped"] else Twist
        if self._params["image_transport"] == "compressed":
            image_sub = (CompressedImage, self.resolve_topic_name("image") + "/compressed", self._on_image)
        else:
            image_sub = (Image, "image", self._on_image)
        for name, (msg_type, topic, callback) in (("image", image_sub), ("pose", (PoseStamped, "pose", self._on_pose)),
                                                  ("twist", (twist_type, "twist", self._on_twist)),
                                                  ("odom", (Odometry, "odom", self._on_odom))):
            subscription = self.create_subscription(
                msg_type, topic, callback, qos_profile_sensor_data, callback_group=inputs,
                event_callbacks=SubscriptionEventCallbacks(message_lost=partial(self._on_lost, name)))
            self._topics[name] = subscription.topic_name  # logs and diagnostics name what the user remapped to
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data,
                                 callback_group=inputs)

        reliable = QoSProfile(depth=10)
        self._image_pub = self.create_publisher(Image, "~/predicted/image", reliable)
        self._info_pub = self.create_publisher(CameraInfo, "~/predicted/camera_info", reliable)
        self._montage_pub = self.create_publisher(Image, "~/predicted/montage", reliable)
        self._frames_pub = (
            self.create_publisher(PredictedFrames, "~/predicted/frames", reliable) if PredictedFrames is not None else None
        )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services)
        self._imagine: ImagineServer | None = None
        self._imagine_model = self._model.twin() if hasattr(self._model, "twin") else self._model
        if Imagine is not None:
            self._imagine = ImagineServer(self, Imagine, self._imagine_model, self._prepare_imagine,
                                          self._count_imagine, threads)
        else:
            self.get_logger().warning("the package's interfaces are not built: no ~/imagine and no ~/predicted/frames "
                                      "(run scripts/setup.sh or build the workspace with colcon)")

        self.create_timer(1.0, self._on_diagnostics_tick, timers)
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
            if "context_frames" in changed:
                before = set(self._window.stamps_ns)
                self._window.resize(self._params["context_frames"])
                self._supersede(before - set(self._window.stamps_ns))
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
        # Some middlewares fill the change with garbage (2**31 after a few hundred images): only a
        # plausible, non-negative change counts.
        change = int(info.total_count_change)
        if 0 <= change <= LOST_CHANGE_MAX:
            with self._lock:
                self._lost[stream] += change

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
            self._grid.undo_last()  # the grid must not wait for a time the outlier claimed
            queued = len(self._pairer.discard_images_after(stamp_ns))
            windowed = set(self._window.discard_after(stamp_ns))
            self._ledger.skip("image_stamp_jump", queued + len(self._unsent & windowed))
            self._unsent -= windowed
        elif self._feeds_model(stream):
            self._pairer.discard_states_after(stamp_ns)  # it was used (counted); it only leaves the queue

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """The camera's intrinsics, for a model that turns the newest frame by the commanded rotation
        (``rotation_reference``); without them it assumes its config's field of view."""
        # Compared as bytes: a NaN in K is unequal to itself, and each such message warned again.
        key = (msg.width, msg.height, np.asarray(msg.k, dtype=np.float64).tobytes())
        if key == self._intrinsics_key:
            return
        self._intrinsics_key = key
        try:
            K = model_intrinsics(msg.k, msg.width, msg.height, self._model.resolution, self._params["resize_mode"])
        except ValueError as error:
            self.get_logger().warning(f"camera_info ignored, the model keeps its {self._intrinsics_source} intrinsics: "
                                      f"{error}")
            return
        for model in (self._model, self._imagine_model):
            set_intrinsics = getattr(model, "set_intrinsics", None)
            if set_intrinsics is not None:
                set_intrinsics(K)  # one attribute: each model thread reads it whole at its next chunk
        self._intrinsics_source = (f"camera_info (at the model's size: fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} "
                                   f"cx={K[0, 2]:.2f} cy={K[1, 2]:.2f} px)")
        self._camera_info = self._predicted_camera_info(K)

    def _predicted_camera_info(self, K: np.ndarray) -> CameraInfo:
        """The camera_info published with each predicted image: its intrinsics at the model's resolution."""
        info = CameraInfo()
        info.width, info.height = int(self._model.resolution[1]), int(self._model.resolution[0])
        info.k = [float(v) for v in np.asarray(K, dtype=np.float64).reshape(-1)]
        info.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        return info

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._arrived("image")
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            rgb = compressed_msg_to_rgb(msg) if isinstance(msg, CompressedImage) else image_msg_to_rgb(msg)
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
            if not self._grid.offer(stamp_ns):  # between two frames of the model's grid (a faster camera)
                self._ledger.skip("image_off_grid")
                return
            image = (rgb, msg.header.frame_id)
            if not self._state_silent(time.monotonic()):
                self._pair(lambda: self._pairer.add_image(stamp_ns, image))
                return
            # Fallback: the feeding stream is silent; pair this image (and any still waiting) with no motion.
            if not self._fallback_active:
                self._fallback_active = True
                # Info, not a warning: the silence itself is warned about once (diagnostics tick).
                self.get_logger().info(
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
            self._track.append((stamp_ns, state))
            while self._track and self._track[-1][0] - self._track[0][0] > TRACK_S * 1e9:
                self._track.pop(0)

    def _on_pose(self, msg: PoseStamped) -> None:
        self._arrived("pose")
        stamp_ns = stamp_to_ns(msg.header.stamp)
        o = msg.pose.orientation
        norm = float(np.linalg.norm([o.x, o.y, o.z, o.w])) if np.isfinite([o.x, o.y, o.z, o.w]).all() else np.nan
        if np.isfinite(norm) and abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            with self._lock:  # (1e200, 1e200, 0, 0) used to become the identity, silently
                self._ledger.receive("pose")
                self._drop("pose_quaternion_not_unit", f"pose at {stamp_ns} ns has a quaternion of norm {norm:.6g}")
            return
        self._on_state("pose", stamp_ns, pose_msg_to_matrix(msg.pose))

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
        self._live.clear()  # a forecast in flight from the old history is not published
        self._live_snapshot = None  # ~/imagine must not continue the forgotten history
        self._track.clear()
        self._grid.reset()
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
        stopping = self._loop.stopping

        def job(model: Any) -> Any:
            prediction = forecast_window(model, snapshot, plan, seed=None if seed < 0 else seed,
                                         guidance_scale=guidance or None, should_stop=stopping.is_set)
            if not self._live.started(snapshot, generation):
                return None
            return prediction, model.expert_usage()
        return job

    def _actions_at(self, snapshot: Any, stamps_ns: np.ndarray, now_ns: int) -> np.ndarray:
        """Model action rows for frames at ``stamps_ns`` after the window: the states received up to now
        (the catch-up), then what holds now (the lock is held)."""
        modality = snapshot.modality
        kind = state_kind(modality)
        track = [(int(t), s) for t, s in self._track if t > snapshot.last_stamp_ns]
        times = [int(t) for t in snapshot.stamps_ns] + [t for t, _ in track]
        states = list(snapshot.states) + [s for _, s in track]
        future = states_at(stamps_ns, times, states, kind, now_ns,
                           self._future_command() if kind == "twist" else None)
        if kind == "twist" and self._future_command() is None:
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
            self._forecast_stats = {"lead_s": (int(prediction.stamps_ns[ahead][0]) - now_ns) * 1e-9,
                                    "latency_s": prediction.latency_s,
                                    "coverage_s": (int(prediction.stamps_ns[-1]) - now_ns) * 1e-9,
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

    def _count_imagine(self, outcome: str) -> None:
        with self._lock:
            self._imagine_calls[outcome] += 1

    def _prepare_imagine(self, request: Any) -> dict:
        """Check an ``~/imagine`` request and gather what its job needs (the imagine server's thread).

        Raises ValueError with the reason. Candidates apply from now: the catch-up rolls the states in
        force from the window's newest frame up to now (when the request's modality is the live one).
        """
        with self._lock:
            params = dict(self._params)
        live_modality = params["action_modality"]
        modality = request.modality or live_modality
        if modality not in self._model.modalities:
            raise ValueError(f"unknown modality {modality!r}; the model knows {', '.join(self._model.modalities)}")
        si_dim = SI_ACTION_DIMS[modality]
        if int(request.action_dim) != si_dim:
            raise ValueError(f"action_dim must be {si_dim} for {modality} actions ({SI_ACTION_UNITS[modality]}), "
                             f"got {request.action_dim}")
        limits = ImagineLimits(params["max_imagine_batch"], params["max_imagine_horizon"], params["max_imagine_steps"])
        si = check_imagine_request(np.asarray(request.actions, dtype=np.float32), batch=request.batch,
                                   horizon=request.horizon, action_dim=si_dim, expected_dim=si_dim, limits=limits,
                                   denoise_steps=int(request.denoise_steps), guidance_scale=float(request.guidance_scale))
        with self._lock:
            if request.from_live_history and self._live_snapshot is not None:
                snapshot = self._live_snapshot
            elif self._window.full:
                snapshot = self._window.snapshot(live_modality, 1, latest_command=self._future_command(),
                                                 thresholds=self._thresholds(), interval_s=self._interval_s)
            else:
                raise ValueError(f"no history yet: the window has {len(self._window)} of "
                                 f"{self._window.context_frames} observed frames")
            now_ns = self.get_clock().now().nanoseconds
            behind_s = (now_ns - snapshot.last_stamp_ns) * 1e-9
            catch_up_frames = (int(behind_s // self._interval_s)
                               if modality == live_modality and 0 <= behind_s <= self._params["max_catch_up_s"] else 0)
            catch_stamps = snapshot.last_stamp_ns + np.round(
                np.arange(1, catch_up_frames + 1) * self._interval_s * 1e9).astype(np.int64)
            catch_up = (self._actions_at(snapshot, catch_stamps, now_ns) if catch_up_frames
                        else np.zeros((0, self._model.action_dim(modality)), np.float32))
        newest_pose = self._last_pose if self._last_pose is not None else snapshot.states[-1]
        previous_pose = newest_pose if modality in ("camera", "robot") and modality == live_modality else None
        check_action_range(modality, si, self._interval_s, params["action_range_multiple"], previous_pose)
        first_pose = snapshot.states[0] if modality == live_modality and snapshot.states.ndim == 3 else np.eye(4)
        n = catch_up_frames + int(request.horizon)
        stamps = snapshot.last_stamp_ns + np.round(np.arange(1, n + 1) * self._interval_s * 1e9).astype(np.int64)
        live_chunk_s = self._latency.seconds_per_frame
        return {"snapshot": snapshot, "catch_up": catch_up, "modality": modality, "limits": limits,
                "model_actions": si_to_model_actions(modality, si, self._interval_s, first_pose),
                "model_dim": self._model.action_dim(modality), "frames_per_chunk": self._model.frames_per_chunk,
                "stamps_ns": stamps, "frame_id": snapshot.frame_id, "interval_s": self._interval_s,
                "timeout_s": params["imagine_timeout_s"], "sub_batch": params["imagine_sub_batch"] or None,
                "default_steps": int(getattr(getattr(self._model, "config", None), "denoise_steps", 1)),
                "live_chunk_s": None if live_chunk_s is None else live_chunk_s * self._model.frames_per_chunk}

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
            forecast_stats, not_caught_up, gaps = dict(self._forecast_stats), self._not_caught_up, self._grid.gaps
            new_latencies, self._new_latencies = self._new_latencies, []
            usage = dict(self._expert_usage)
            predictions, window_len = self._predictions, len(self._window)
            imagine_calls = Counter(self._imagine_calls)
            last_error = self._last_error
        if went_silent:
            consequence = ("predictions pause until images return" if "image" in went_silent
                           else "predictions continue assuming no motion until it returns")
            names = ", ".join(self._topics.get(name, name) for name in went_silent)
            self.get_logger().warning(f"no messages on {names} for {self._params['input_timeout_s']} s; "
                                      f"{consequence}")
        stamp = self.get_clock().now().to_msg()
        inputs = DiagnosticStatus(name=f"{NODE_NAME}: inputs", hardware_id=NODE_NAME)
        inputs.level = DiagnosticStatus.WARN if silent else DiagnosticStatus.OK
        inputs.message = (f"silent: {', '.join(self._topics.get(n, n) for n in silent)}" if silent
                          else "inputs arriving")
        if fallback_silent:
            inputs.message += (f"; fallback: {feeding} silent, images paired with "
                               + ("a zero twist" if kind == "twist" else "the last pose held"))
        inputs.values = [KeyValue(key=f"rate_{name}_hz", value=f"{rate:.2f}") for name, rate in rates.items()]
        inputs.values += [KeyValue(key=f"dropped_{reason}", value=str(count)) for reason, count in sorted(dropped.items())]
        inputs.values.append(KeyValue(key="window_frames", value=str(window_len)))
        inputs.values += [KeyValue(key=f"topic_{name}", value=topic) for name, topic in sorted(self._topics.items())]
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
        prediction.values = [KeyValue(key="predictions", value=str(predictions)),
                             KeyValue(key="frame_interval_s", value=f"{self._interval_s:g}"),
                             KeyValue(key="frame_gaps", value=str(gaps)),
                             KeyValue(key="forecasts_not_caught_up", value=str(not_caught_up))]
        # The newest forecast against the clock when it was published: how far ahead its first and last frame lie.
        prediction.values += [KeyValue(key=f"last_{name}", value=f"{value:.3f}") for name, value in forecast_stats.items()]
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
        if not_caught_up and prediction.level == DiagnosticStatus.OK and forecast_stats.get("lead_s", 0.0) < 0:
            prediction.level = DiagnosticStatus.WARN
            prediction.message += ("; images are more than max_catch_up_s behind the node clock: forecasts start at "
                                   "the newest frame (replay bags with --clock and use_sim_time:=true)")
        if fallback_silent and prediction.level == DiagnosticStatus.OK:
            prediction.level = DiagnosticStatus.WARN
            prediction.message += f"; fallback: no {feeding}, assuming no motion"
        array = DiagnosticArray(status=[inputs, accounting, prediction, experts])
        array.header.stamp = stamp
        self._diagnostics_pub.publish(array)

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
