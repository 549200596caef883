"""``astra_sim``: the MuJoCo simulator scenes live, publishing the recorded bags' topics in real time.

    astra-sim-node --ros-args -p scenario:=rover -p seed:=0 -p rate_hz:=10 -p size:=128x128

Publishes (DESIGN §3; frames as in the recorded bags): ``/camera/image_raw`` (rgb8) and
``/camera/camera_info`` at ``rate_hz``; ``/camera/pose`` (camera optical frame in ``world``) at
``state_rate_hz``; ``/robot/ee_pose`` (in ``base``) and ``/robot/gripper`` (std_msgs/Float32 [m])
for ``arm``; ``/odom`` (``odom`` -> ``base_link``) for ``rover``. Stamps are the node clock.

Follows ``/cmd_vel`` (geometry_msgs/Twist, body frame: linear x/y/z, angular z = yaw rate and
y = pitch rate; the rover uses linear x and angular z) in ``explore`` and ``rover``, and
``/robot/ee_target`` (geometry_msgs/PoseStamped in the arm's ``base`` frame) in ``arm``. Unlike the
recorded episodes, nothing moves on its own: before the first command, and whenever no ``/cmd_vel``
arrived for 0.5 s, the camera / rover holds still (zero twist). The arm moves to each target and holds.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; before mujoco is imported

import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.exceptions import ParameterException  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from astra_ros.data.bags import COMMAND_TIMEOUT_NS  # noqa: E402
from astra_ros.data.geometry import PinholeIntrinsics  # noqa: E402
from astra_ros.data.record import ARM_BASE_FRAME_ID, CAMERA_FRAME_ID, ODOM_FRAME_ID, ROBOT_FRAME_ID, WORLD_FRAME_ID  # noqa: E402
from astra_ros.data.scenes import SCENARIOS, BodyTwist, Pose, SimSettings, SimTick, make_scenario  # noqa: E402
from astra_ros.ros.parameters import ParamSpec, descriptor  # noqa: E402
from astra_ros.ros.runner import StartupError, run_node  # noqa: E402
from astra_ros.ros.conversions import ns_to_stamp, pose_msg_to_matrix, rgb_to_image_msg, twist_msg_to_vector  # noqa: E402

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

        qos = QoSProfile(depth=10)
        self._image_pub = self.create_publisher(Image, "/camera/image_raw", qos)
        self._info_pub = self.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self._camera_pose_pub = self.create_publisher(PoseStamped, "/camera/pose", qos)
        if scenario == "arm":
            self._ee_pub = self.create_publisher(PoseStamped, "/robot/ee_pose", qos)
            self._gripper_pub = self.create_publisher(Float32, "/robot/gripper", qos)
            self.create_subscription(PoseStamped, "/robot/ee_target", self._on_ee_target, qos)
            self._scenario.hold()  # the recorded episodes' random pushes are not commands
        else:
            self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, qos)
            self._hold_still()
        if scenario == "rover":
            self._odom_pub = self.create_publisher(Odometry, "/odom", qos)
        self.create_timer(1.0 / self._settings.state_rate_hz, self._on_tick)
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

    def _on_cmd_vel(self, msg: Twist) -> None:
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
        if msg.header.frame_id not in ("", ARM_BASE_FRAME_ID):
            self.get_logger().warning(f"/robot/ee_target is taken in '{ARM_BASE_FRAME_ID}', not '{msg.header.frame_id}'",
                                      throttle_duration_sec=5.0)
        p, o = msg.pose.position, msg.pose.orientation
        self._scenario.set_ee_target(Pose(np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])))

    # ------------------------------------------------------------------ stepping
    def _on_tick(self) -> None:
        self._step(time.monotonic())

    def _step(self, now_s: float) -> None:
        """One timer tick at monotonic ``now_s``: advance the physics by the ticks that are due and publish.

        Each step is a fixed 1 / state_rate_hz (the scenes' physics are tuned for it); a tick that
        overran its period is made up by extra steps (at most MAX_CATCHUP_STEPS at once), so the motion
        keeps pace with the stamps, which are the clock's.
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
        self._publish(self._scenario.state(self.get_clock().now().nanoseconds, render))
        self._check_realtime(now_s)

    def _check_realtime(self, now_s: float) -> float | None:
        """Every REALTIME_CHECK_S: the simulated seconds per wall second since the last check; a warning
        below MIN_REALTIME_FACTOR. Steps are fixed but stamped with the clock: when ticks overrun their
        period (large images, busy cores) by more than the catch-up makes good, the motion is slower
        than its stamps say."""
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
                "period, so motion per stamped second is too slow; lower size, rate_hz or state_rate_hz")
        return factor

    def _publish(self, tick: SimTick) -> None:
        stamp_ns = tick.stamp_ns
        if tick.image is not None:
            self._image_pub.publish(rgb_to_image_msg(tick.image, stamp_ns, CAMERA_FRAME_ID))
            self._info_pub.publish(camera_info_msg(self._intrinsics, stamp_ns))
        self._camera_pose_pub.publish(self._pose_stamped(tick.camera_pose, stamp_ns, WORLD_FRAME_ID))
        if tick.ee_pose is not None:
            self._ee_pub.publish(self._pose_stamped(tick.ee_pose, stamp_ns, ARM_BASE_FRAME_ID))
        if tick.gripper_opening_m is not None:
            self._gripper_pub.publish(Float32(data=float(tick.gripper_opening_m)))
        if tick.odom_pose is not None and tick.odom_twist is not None:
            odom = Odometry(child_frame_id=ROBOT_FRAME_ID)
            odom.header.stamp = ns_to_stamp(stamp_ns)
            odom.header.frame_id = ODOM_FRAME_ID
            _pose_fields(odom.pose.pose, tick.odom_pose)
            _twist_fields(odom.twist.twist, tick.odom_twist)
            self._odom_pub.publish(odom)

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
