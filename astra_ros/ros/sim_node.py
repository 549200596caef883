"""``astra_sim``: the MuJoCo simulator scenes live, publishing the recorded bags' topics in real time.

    astra-sim-node --ros-args -p scenario:=rover -p seed:=0 -p rate_hz:=10 -p size:=128x128

Publishes (DESIGN §3; topics and frames as in the recorded bags, frames per REP-103/105, see
:mod:`astra_ros.data.frames`): ``/camera/image_raw`` (rgb8, ``camera_optical_frame``) and
``/camera/camera_info`` at ``rate_hz``; ``/camera/pose`` (camera optical frame in ``odom``) at
``state_rate_hz``; ``/robot/ee_pose`` (in ``base_link``) and ``/robot/gripper`` (sensor_msgs/JointState,
joint ``gripper_joint``, position = finger opening [m]) for ``arm``; ``/odom`` (``odom`` -> ``base_link``)
for ``rover``; ``/tf`` every tick and ``/tf_static`` once (transient local): odom -> base_link ->
camera_link -> camera_optical_frame, and base_link -> ee_link for ``arm``.

Time is simulated: tick n is stamped start + n / state_rate_hz (start = the wall clock when the node
starts), and ``/clock`` (rosgraph_msgs/Clock) carries it every tick (``publish_clock``), so nodes run with
``use_sim_time:=true`` follow the simulation even when it runs slower than real time. Its own ticks run
on the steady clock, so it runs under ``use_sim_time:=true`` as well (a launch-wide setting).

Follows ``/cmd_vel`` (geometry_msgs/Twist, or TwistStamped with ``cmd_vel_stamped:=true`` as Nav2 sends;
body frame: linear x/y/z, angular z = yaw rate and y = pitch rate; the rover uses linear x and angular z)
in ``explore`` and ``rover``, and ``/robot/ee_target`` (geometry_msgs/PoseStamped in ``base_link``) in
``arm``. Unlike the recorded episodes, nothing moves on its own: before the first command, and whenever no
``/cmd_vel`` arrived for 0.5 s, the camera / rover holds still (zero twist). The arm moves to each target
and holds.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; before mujoco is imported

import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from geometry_msgs.msg import PoseStamped, TransformStamped, Twist, TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.clock import Clock as RosClock  # noqa: E402
from rclpy.clock import ClockType  # noqa: E402
from rclpy.exceptions import ParameterException  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402

from astra_ros.data.bags import COMMAND_TIMEOUT_NS  # noqa: E402
from astra_ros.data.frames import (  # noqa: E402
    BASE_FRAME_ID, CAMERA_FRAME_ID, GRIPPER_JOINT, LEGACY_FRAME_IDS, ODOM_FRAME_ID, Transform, dynamic_transforms,
    static_transforms)
from astra_ros.data.geometry import PinholeIntrinsics  # noqa: E402
from astra_ros.data.scenes import SCENARIOS, BodyTwist, Pose, SimSettings, SimTick, make_scenario  # noqa: E402
from astra_ros.ros.parameters import ParamSpec, descriptor  # noqa: E402
from astra_ros.ros.runner import StartupError, run_node  # noqa: E402
from astra_ros.ros.conversions import ns_to_stamp, pose_msg_to_matrix, rgb_to_image_msg, twist_msg_to_vector  # noqa: E402

try:  # a ROS install has tf2_msgs; on pip-only machines scripts/setup.sh builds it (no wheel exists)
    from tf2_msgs.msg import TFMessage  # noqa: E402
except ImportError:
    TFMessage = None

NODE_NAME = "astra_sim"
COMMAND_TIMEOUT_S = COMMAND_TIMEOUT_NS / 1e9  # [s] without /cmd_vel the rig holds still, as bags assume
MAX_CATCHUP_STEPS = 3  # physics steps one tick may run to make up for an overrun
REALTIME_CHECK_S = 5.0  # [s] how often the simulated time is compared with the wall clock
MIN_REALTIME_FACTOR = 0.9  # simulated seconds per wall second below which the node warns


def parse_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` -> (width, height) [px], each at least 16."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 128x128, got {text!r}") from error
    if width < 16 or height < 16:
        raise ValueError(f"size must be at least 16x16, got {text!r}")
    return width, height


def _pose_fields(msg_pose: Any, pose: Pose) -> None:
    msg_pose.position.x, msg_pose.position.y, msg_pose.position.z = (float(v) for v in pose.position)
    o = msg_pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in pose.quat_xyzw)


def _twist_fields(msg_twist: Any, twist: BodyTwist) -> None:
    msg_twist.linear.x, msg_twist.linear.y, msg_twist.linear.z = (float(v) for v in twist.linear)
    msg_twist.angular.x, msg_twist.angular.y, msg_twist.angular.z = (float(v) for v in twist.angular)


def _transform_msg(transform: Transform, stamp_ns: int) -> TransformStamped:
    msg = TransformStamped(child_frame_id=transform.child)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = transform.parent
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in transform.pose.position)
    q.x, q.y, q.z, q.w = (float(v) for v in transform.pose.quat_xyzw)
    return msg


def camera_info_msg(intrinsics: PinholeIntrinsics, stamp_ns: int) -> CameraInfo:
    msg = CameraInfo(width=intrinsics.width, height=intrinsics.height, distortion_model="plumb_bob")
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = CAMERA_FRAME_ID
    k = intrinsics.matrix()
    msg.d = [0.0] * 5
    msg.k = k.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    msg.p = projection.reshape(-1).tolist()
    return msg


PARAMETERS: dict[str, ParamSpec] = {
    "scenario": ParamSpec("rover", "scene to simulate", read_only=True, choices=tuple(SCENARIOS)),
    "seed": ParamSpec(0, "seed of the scene (textures, objects, lighting)", (0, 2**31 - 1), read_only=True),
    "rate_hz": ParamSpec(10, "camera images per second [Hz]; must divide state_rate_hz", (1, 60), read_only=True),
    "state_rate_hz": ParamSpec(30, "poses and odometry per second [Hz] (the simulation tick)", (1, 240),
                               read_only=True),
    "size": ParamSpec("128x128", "image size WIDTHxHEIGHT [px]", read_only=True),
    "cmd_vel_stamped": ParamSpec(False, "take /cmd_vel as geometry_msgs/TwistStamped (Nav2 on Jazzy and later) "
                                 "instead of Twist", read_only=True),
    "publish_clock": ParamSpec(True, "publish the simulated time on /clock (for use_sim_time:=true)", read_only=True),
}


class SimNode(Node):
    """Steps one scenario at ``state_rate_hz`` on a timer and publishes its state."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._declare_parameters()
        except ParameterException as error:  # a -p value of the wrong type or out of range
            raise StartupError(str(error)) from error
        scenario = self.get_parameter("scenario").value
        if scenario not in SCENARIOS:
            raise StartupError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        rate_hz, state_rate_hz = self.get_parameter("rate_hz").value, self.get_parameter("state_rate_hz").value
        if state_rate_hz % rate_hz:  # said in the node's parameter names, not the simulator's settings
            raise StartupError(f"rate_hz ({rate_hz}) must divide state_rate_hz ({state_rate_hz}), "
                               f"e.g. rate_hz:=10 or 15 with state_rate_hz:=30")
        try:
            width, height = parse_size(self.get_parameter("size").value)
            # The live node runs until stopped; an episode length only has to hold two frames to pass the checks.
            self._settings = SimSettings(
                seconds=max(1.0, 2.0 / rate_hz), image_width=width, image_height=height,
                camera_rate_hz=rate_hz,
                state_rate_hz=state_rate_hz,
            )
        except ValueError as error:
            raise StartupError(str(error)) from error
        self._scenario = make_scenario(scenario, self.get_parameter("seed").value, self._settings)
        self._name = scenario
        self._intrinsics = self._scenario.intrinsics
        self._ticks_per_image = self._settings.state_rate_hz // self._settings.camera_rate_hz
        self._tick = 0
        self._wall_start_s: float | None = None  # monotonic [s] of tick 0 (moved on when too far behind)
        self._realtime_since: tuple[float, int] | None = None  # (monotonic [s], tick) of the last real-time check
        self._last_command_s: float | None = None
        self._holding = False
        self._start_ns: int | None = None  # [ns] simulated time of tick 0: the wall clock at the first tick

        qos = QoSProfile(depth=10)
        self._image_pub = self.create_publisher(Image, "/camera/image_raw", qos)
        self._info_pub = self.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self._camera_pose_pub = self.create_publisher(PoseStamped, "/camera/pose", qos)
        self._clock_pub = self.create_publisher(Clock, "/clock", qos) if self.get_parameter("publish_clock").value else None
        if TFMessage is None:
            self.get_logger().warning("tf2_msgs is not installed: no /tf and /tf_static (scripts/setup.sh builds it)")
            self._tf_pub = self._tf_static_pub = None
        else:
            self._tf_pub = self.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
            # As tf2_ros' static broadcaster: one latched message that late listeners still get.
            self._tf_static_pub = self.create_publisher(
                TFMessage, "/tf_static", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self._static_sent = False
        if scenario == "arm":
            self._ee_pub = self.create_publisher(PoseStamped, "/robot/ee_pose", qos)
            self._gripper_pub = self.create_publisher(JointState, "/robot/gripper", qos)
            self.create_subscription(PoseStamped, "/robot/ee_target", self._on_ee_target, qos)
            self._scenario.hold()  # the recorded episodes' random pushes are not commands
        else:
            stamped = self.get_parameter("cmd_vel_stamped").value
            self.create_subscription(TwistStamped if stamped else Twist, "/cmd_vel", self._on_cmd_vel, qos)
            self._hold_still()
        if scenario == "rover":
            self._odom_pub = self.create_publisher(Odometry, "/odom", qos)
        # On the steady clock: this node makes /clock, so a timer on its ROS clock would wait forever for
        # it under use_sim_time:=true (e.g. set for every node of a launch file).
        self.create_timer(1.0 / self._settings.state_rate_hz, self._on_tick,
                          clock=RosClock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"simulating {scenario} (seed {self.get_parameter('seed').value}): {width}x{height} images at "
            f"{self._settings.camera_rate_hz} Hz, state at {self._settings.state_rate_hz} Hz"
        )

    def _declare_parameters(self) -> None:
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, descriptor(name, spec))

    # ------------------------------------------------------------------ commands
    def _hold_still(self) -> None:
        self._scenario.set_command(BodyTwist(np.zeros(3), np.zeros(3)))
        self._holding = True

    def _on_cmd_vel(self, msg: Twist | TwistStamped) -> None:
        if isinstance(msg, TwistStamped):
            if msg.header.frame_id not in ("", BASE_FRAME_ID):
                self.get_logger().warning(f"/cmd_vel is taken in '{BASE_FRAME_ID}', not '{msg.header.frame_id}'",
                                          throttle_duration_sec=5.0)
            msg = msg.twist
        twist = twist_msg_to_vector(msg)
        if not np.isfinite(twist).all():
            self.get_logger().warning("ignoring a /cmd_vel with NaN or inf values", throttle_duration_sec=5.0)
            return
        self._scenario.set_command(BodyTwist(twist[:3], twist[3:]))
        self._last_command_s = time.monotonic()
        self._holding = False

    def _on_ee_target(self, msg: PoseStamped) -> None:
        transform = pose_msg_to_matrix(msg.pose)
        if not np.isfinite(transform).all():
            self.get_logger().warning("ignoring an /robot/ee_target with NaN or inf values", throttle_duration_sec=5.0)
            return
        if LEGACY_FRAME_IDS.get(msg.header.frame_id, msg.header.frame_id) not in ("", BASE_FRAME_ID):
            self.get_logger().warning(f"/robot/ee_target is taken in '{BASE_FRAME_ID}', not '{msg.header.frame_id}'",
                                      throttle_duration_sec=5.0)
        p, o = msg.pose.position, msg.pose.orientation
        self._scenario.set_ee_target(Pose(np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])))

    # ------------------------------------------------------------------ stepping
    def _on_tick(self) -> None:
        self._step(time.monotonic())

    def _step(self, now_s: float) -> None:
        """One timer tick at monotonic ``now_s``: advance the physics by the ticks that are due and publish.

        Each step is a fixed 1 / state_rate_hz (the scenes' physics are tuned for it); a tick that
        overran its period is made up by extra steps (at most MAX_CATCHUP_STEPS at once), so simulated
        time keeps pace with the wall clock; what is published is stamped with its simulated time.
        """
        if (self._name != "arm" and not self._holding and self._last_command_s is not None
                and now_s - self._last_command_s > COMMAND_TIMEOUT_S):
            self._hold_still()
        rate = self._settings.state_rate_hz
        if self._wall_start_s is None:
            self._wall_start_s = now_s
        due = int((now_s - self._wall_start_s) * rate + 1e-6) + 1  # ticks that should have run by now
        steps = max(1, min(due - self._tick, MAX_CATCHUP_STEPS))
        render = False
        for _ in range(steps):
            if self._tick > 0:
                self._scenario.advance(1.0 / rate)
            render = render or self._tick % self._ticks_per_image == 0
            self._tick += 1
        if due - self._tick > 0:  # too far behind to make up: go on from here (the real-time check warns)
            self._wall_start_s = now_s - (self._tick - 1) / rate
        if self._start_ns is None:
            self._start_ns = time.time_ns()  # sim time starts at the wall clock, so stamps look familiar
        stamp_ns = self._start_ns + self._settings.tick_stamp_ns(self._tick - 1)
        if self._clock_pub is not None:  # before the data stamped with it
            self._clock_pub.publish(Clock(clock=ns_to_stamp(stamp_ns)))
        self._publish(self._scenario.state(stamp_ns, render))
        self._check_realtime(now_s)

    def _check_realtime(self, now_s: float) -> float | None:
        """Every REALTIME_CHECK_S: the simulated seconds per wall second since the last check; a warning
        below MIN_REALTIME_FACTOR. Stamps are simulated time: when ticks overrun their period (large
        images, busy cores) by more than the catch-up makes good, they fall behind the wall clock, which
        only nodes with use_sim_time:=true (following /clock) do not mind."""
        if self._realtime_since is None:
            self._realtime_since = (now_s, self._tick)
            return None
        since_s, since_tick = self._realtime_since
        if now_s - since_s < REALTIME_CHECK_S:
            return None
        factor = (self._tick - since_tick) / self._settings.state_rate_hz / (now_s - since_s)
        self._realtime_since = (now_s, self._tick)
        if factor < MIN_REALTIME_FACTOR:
            self.get_logger().warning(
                f"simulating at {factor:.2f}x real time: ticks overrun their {1e3 / self._settings.state_rate_hz:.0f} ms "
                "period, so simulated time falls behind the wall clock (run other nodes with use_sim_time:=true); "
                "lower size, rate_hz or state_rate_hz")
        return factor

    def _publish(self, tick: SimTick) -> None:
        stamp_ns = tick.stamp_ns
        self._publish_tf(tick)
        if tick.image is not None:
            self._image_pub.publish(rgb_to_image_msg(tick.image, stamp_ns, CAMERA_FRAME_ID))
            self._info_pub.publish(camera_info_msg(self._intrinsics, stamp_ns))
        self._camera_pose_pub.publish(self._pose_stamped(tick.camera_pose, stamp_ns, ODOM_FRAME_ID))
        if tick.ee_pose is not None:
            self._ee_pub.publish(self._pose_stamped(tick.ee_pose, stamp_ns, BASE_FRAME_ID))
        if tick.gripper_opening_m is not None:
            joint = JointState(name=[GRIPPER_JOINT], position=[float(tick.gripper_opening_m)])
            joint.header.stamp = ns_to_stamp(stamp_ns)
            self._gripper_pub.publish(joint)
        if tick.odom_pose is not None and tick.odom_twist is not None:
            odom = Odometry(child_frame_id=BASE_FRAME_ID)
            odom.header.stamp = ns_to_stamp(stamp_ns)
            odom.header.frame_id = ODOM_FRAME_ID
            _pose_fields(odom.pose.pose, tick.odom_pose)
            _twist_fields(odom.twist.twist, tick.odom_twist)
            self._odom_pub.publish(odom)

    def _publish_tf(self, tick: SimTick) -> None:
        if self._tf_pub is None:
            return
        if not self._static_sent:
            base = self._scenario.base_pose_world() if self._name == "arm" else None
            static = static_transforms(self._name, tick, base)
            self._tf_static_pub.publish(TFMessage(transforms=[_transform_msg(t, tick.stamp_ns) for t in static]))
            self._static_sent = True
        self._tf_pub.publish(TFMessage(
            transforms=[_transform_msg(t, tick.stamp_ns) for t in dynamic_transforms(self._name, tick)]))

    @staticmethod
    def _pose_stamped(pose: Pose, stamp_ns: int, frame_id: str) -> PoseStamped:
        msg = PoseStamped()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = frame_id
        _pose_fields(msg.pose, pose)
        return msg

    def destroy_node(self) -> None:
        self._scenario.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the simulator node until Ctrl-C or ROS shutdown; 1 when it cannot start."""
    return run_node(SimNode, SingleThreadedExecutor, NODE_NAME, args, usage=__doc__, parameters=PARAMETERS,
                    exit_at_once_if_not_started=True)
