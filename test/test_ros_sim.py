"""The simulator node live (real rclpy and DDS, its own process): camera rate, /cmd_vel drives the rover,
and the predictor fed by it end to end."""

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from node_process import console_script, start_node, stop_node, wait_until

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from astra_ros.ros.runner import BackgroundSpinner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE_HZ = 10


def _stop(process: subprocess.Popen) -> str:
    return stop_node(process)


@pytest.fixture(scope="module")
def rover():
    """astra_sim (rover) and astra_predictor on its camera and /cmd_vel, and a node recording their topics."""
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    sim = start_node(
        [console_script("astra-sim-node"), "--ros-args", "-p", "scenario:=rover", "-p", "seed:=3",
         "-p", f"rate_hz:={RATE_HZ}", "-p", "size:=64x48"], REPO,
    )
    predictor = start_node(
        [console_script("astra-predictor"), "--ros-args", "-p", "checkpoint:=random:tiny", "-p", "horizon:=2",
         "-p", "publish_rate:=2.0", "-p", "sync_slop_s:=0.3",
         "-r", "image:=/camera/image_raw", "-r", "twist:=/cmd_vel", "-r", "odom:=/odom", "-r", "pose:=/camera/pose"],
        REPO,
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("astra_sim_test", context=context)
    record = {"images": [], "infos": [], "odom": [], "poses": [], "predicted": []}
    lock = threading.Lock()

    def keep(name):
        def callback(msg):
            with lock:
                record[name].append((time.monotonic(), msg))
        return callback

    qos = QoSProfile(depth=50)
    node.create_subscription(Image, "/camera/image_raw", keep("images"), qos)
    node.create_subscription(CameraInfo, "/camera/camera_info", keep("infos"), qos)
    node.create_subscription(Odometry, "/odom", keep("odom"), qos)
    node.create_subscription(PoseStamped, "/camera/pose", keep("poses"), qos)
    node.create_subscription(Image, "/astra_predictor/predicted/image", keep("predicted"), qos)
    cmd_vel = node.create_publisher(Twist, "/cmd_vel", qos)
    spinner = BackgroundSpinner(node)
    try:
        yield {"record": record, "lock": lock, "cmd_vel": cmd_vel, "sim": sim}
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.shutdown(context=context)
        print(_stop(predictor))
        print(_stop(sim))




def _count(rover, name: str) -> int:
    with rover["lock"]:
        return len(rover["record"][name])


def test_sim_publishes_images_at_about_rate_hz(rover):
    wait_until(lambda: _count(rover, "images") >= 3 or rover["sim"].poll() is not None, 40.0, "simulated images")
    assert rover["sim"].poll() is None, "the simulator exited"
    start = time.monotonic()
    first = _count(rover, "images")
    time.sleep(2.0)
    rate = (_count(rover, "images") - first) / (time.monotonic() - start)
    assert 0.5 * RATE_HZ <= rate <= 1.3 * RATE_HZ, rate  # real time, with room for a loaded machine
    with rover["lock"]:
        image = rover["record"]["images"][-1][1]
        info = rover["record"]["infos"][-1][1]
        odom = rover["record"]["odom"][-1][1]
    assert (image.width, image.height, image.encoding, image.header.frame_id) == (64, 48, "rgb8", "camera_optical")
    assert (info.width, info.height) == (64, 48) and info.k[0] > 0
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    assert np.frombuffer(bytes(image.data), np.uint8).std() > 5.0  # a rendered room, not a blank frame


def _odom_xy(rover) -> np.ndarray:
    with rover["lock"]:
        position = rover["record"]["odom"][-1][1].pose.pose.position
    return np.array([position.x, position.y])


def test_rover_holds_still_then_follows_cmd_vel(rover):
    wait_until(lambda: _count(rover, "odom") >= 3, 40.0, "odometry")
    still = _odom_xy(rover)
    time.sleep(0.5)
    np.testing.assert_allclose(_odom_xy(rover), still, atol=1e-9)  # no command: no motion
    command = Twist()
    command.linear.x = 0.5
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        rover["cmd_vel"].publish(command)
        time.sleep(0.05)
    moved = np.linalg.norm(_odom_xy(rover) - still)
    assert 0.1 < moved < 1.5, moved  # 0.75 m in real time; less when the machine is loaded
    with rover["lock"]:
        twist = rover["record"]["odom"][-1][1].twist.twist
    assert twist.linear.x == pytest.approx(0.5) or twist.linear.x == 0.0  # commanded, or held after the timeout
    time.sleep(1.0)  # more than the 0.5 s command timeout: the rover holds still again
    stopped = _odom_xy(rover)
    time.sleep(0.3)
    np.testing.assert_allclose(_odom_xy(rover), stopped, atol=1e-9)


def test_predictor_predicts_from_the_simulated_camera(rover):
    command = Twist()
    command.angular.z = 0.3
    deadline = time.monotonic() + 40.0
    while time.monotonic() < deadline and _count(rover, "predicted") < 2:
        rover["cmd_vel"].publish(command)
        time.sleep(0.05)
    assert _count(rover, "predicted") >= 2
    with rover["lock"]:
        predicted = rover["record"]["predicted"][-1][1]
    assert (predicted.width, predicted.height, predicted.encoding) == (32, 32, "rgb8")
    assert predicted.header.frame_id == "camera_optical"


def test_arm_node_at_one_hertz_starts_and_holds_the_arm_until_a_target():
    """rate_hz:=1 is in the declared range but was refused (a 1 s episode has one frame); and the arm
    followed the recorded episodes' random pushes before any /robot/ee_target."""
    from rclpy.parameter import Parameter

    from astra_ros.ros.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = SimNode(context=context, parameter_overrides=[
            Parameter("scenario", value="arm"), Parameter("rate_hz", value=1), Parameter("size", value="32x32")])
        try:
            start = node._scenario.ee_pose_base().position.copy()
            for _ in range(60):  # 2 s of ticks at the default state rate
                node._on_tick()
            assert np.linalg.norm(node._scenario.ee_pose_base().position - start) < 0.005
            # Real-time check: 60 ticks at 30 Hz are 2 s of simulation; over 5 s of wall time that is 0.4x.
            node._realtime_since, node._tick = (100.0, 0), 60
            assert node._check_realtime(102.0) is None  # not yet due
            assert abs(node._check_realtime(105.0) - 0.4) < 1e-9
            node._realtime_since, node._tick = (300.0, 0), 150  # 5 s simulated in 5 s
            assert abs(node._check_realtime(305.0) - 1.0) < 1e-9 and node._realtime_since == (305.0, 150)
            # An overrun tick is made up by extra fixed steps (at most 3), so motion keeps pace with the stamps.
            t0, dt = 1000.0, 1 / 30
            node._wall_start_s, node._tick = t0, 1  # tick 0 ran at t0
            node._step(t0 + dt)
            assert node._tick == 2  # on time: one step
            node._step(t0 + 4 * dt + 0.001)
            assert node._tick == 5  # two periods late: three steps
            node._step(t0 + 20 * dt + 0.001)
            assert node._tick == 8  # far behind: three steps, then on from here
            node._step(t0 + 21 * dt + 0.001)
            assert node._tick == 9
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_a_camera_rate_that_does_not_divide_the_state_rate_is_said_in_parameter_names():
    from rclpy.parameter import Parameter

    from astra_ros.ros.runner import StartupError
    from astra_ros.ros.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError, match=r"rate_hz \(7\) must divide state_rate_hz \(30\)"):
            SimNode(context=context, parameter_overrides=[Parameter("rate_hz", value=7), Parameter("size", value="32x32")])
    finally:
        rclpy.shutdown(context=context)
