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

from geometry_msgs.msg import PoseStamped, Twist, TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from astra_ros.data.geometry import pose_to_matrix  # noqa: E402

from astra_ros.ros.runner import BackgroundSpinner  # noqa: E402

try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # scripts/setup.sh builds it on pip-only machines
    TFMessage = None

REPO = Path(__file__).resolve().parents[1]
RATE_HZ = 10
# In-process simulator nodes run on a domain of their own: their /tf would otherwise mix into the rover's.
PRIVATE_DOMAIN = (int(os.environ["ROS_DOMAIN_ID"]) + 101) % 232


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
        [console_script("astra-predictor"), "--ros-args", "-p", "checkpoint:=random:tiny", "-p", "horizon_s:=0.3",
         "-p", "publish_rate:=2.0", "-p", "sync_slop_s:=0.3",
         "-r", "image:=/camera/image_raw", "-r", "twist:=/cmd_vel", "-r", "odom:=/odom", "-r", "pose:=/camera/pose"],
        REPO,
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("astra_sim_test", context=context)
    record = {"images": [], "infos": [], "odom": [], "poses": [], "predicted": [], "tf": [], "tf_static": [], "clock": []}
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
    node.create_subscription(Clock, "/clock", keep("clock"), qos)
    if TFMessage is not None:
        node.create_subscription(TFMessage, "/tf", keep("tf"), QoSProfile(depth=100))
        # as tf2_ros listens: transient local, so the latched static transforms arrive whenever we join
        node.create_subscription(TFMessage, "/tf_static", keep("tf_static"),
                                 QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))
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
    assert (image.width, image.height, image.encoding, image.header.frame_id) == (64, 48, "rgb8", "camera_optical_frame")
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
    assert predicted.header.frame_id == "camera_optical_frame"


def test_arm_node_at_one_hertz_starts_and_holds_the_arm_until_a_target():
    """rate_hz:=1 is in the declared range but was refused (a 1 s episode has one frame); and the arm
    followed the recorded episodes' random pushes before any /robot/ee_target."""
    from rclpy.parameter import Parameter

    from astra_ros.ros.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=PRIVATE_DOMAIN)  # its /tf must not reach the rover's listeners
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


def test_the_simulator_ticks_under_use_sim_time():
    """With use_sim_time:=true (say, set for every node of a launch file) its tick timer followed /clock,
    which only it publishes: no tick, no image, no /clock, no error."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from astra_ros.ros.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=PRIVATE_DOMAIN)
    try:
        node = SimNode(context=context, parameter_overrides=[
            Parameter("use_sim_time", value=True), Parameter("size", value="32x32"), Parameter("rate_hz", value=10)])
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            deadline = time.monotonic() + 20
            while node._tick < 3 and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            assert node._tick >= 3
        finally:
            executor.shutdown()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_a_camera_rate_that_does_not_divide_the_state_rate_is_said_in_parameter_names():
    from rclpy.parameter import Parameter

    from astra_ros.ros.runner import StartupError
    from astra_ros.ros.sim_node import SimNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=PRIVATE_DOMAIN)
    try:
        with pytest.raises(StartupError, match=r"rate_hz \(7\) must divide state_rate_hz \(30\)"):
            SimNode(context=context, parameter_overrides=[Parameter("rate_hz", value=7), Parameter("size", value="32x32")])
    finally:
        rclpy.shutdown(context=context)


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _transform(t) -> np.ndarray:
    r, q = t.transform.translation, t.transform.rotation
    return pose_to_matrix(np.array([r.x, r.y, r.z]), np.array([q.x, q.y, q.z, q.w]))


@pytest.mark.skipif(TFMessage is None, reason="tf2_msgs not installed (scripts/setup.sh builds it)")
def test_tf_chain_from_odom_to_the_optical_frame_matches_the_camera_pose(rover):
    wait_until(lambda: _count(rover, "tf_static") >= 1 and _count(rover, "tf") >= 5, 40.0, "/tf and /tf_static")
    with rover["lock"]:
        static = rover["record"]["tf_static"][0][1]
        tf = [msg for _, msg in rover["record"]["tf"]]
        poses = {_ns(msg.header.stamp): msg for _, msg in rover["record"]["poses"]}
    edges = {t.child_frame_id: (t.header.frame_id, _transform(t)) for t in static.transforms}
    assert {child: parent for child, (parent, _) in edges.items()} == {
        "camera_link": "base_link", "camera_optical_frame": "camera_link"}
    matched = 0
    for message in tf:
        (odom_to_base,) = message.transforms
        assert (odom_to_base.header.frame_id, odom_to_base.child_frame_id) == ("odom", "base_link")
        pose = poses.get(_ns(odom_to_base.header.stamp))
        if pose is None:
            continue
        chain = _transform(odom_to_base) @ edges["camera_link"][1] @ edges["camera_optical_frame"][1]
        p, q = pose.pose.position, pose.pose.orientation
        camera = pose_to_matrix(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))
        assert pose.header.frame_id == "odom"
        np.testing.assert_allclose(chain, camera, atol=1e-6)
        matched += 1
    assert matched >= 3


def test_clock_carries_simulated_time_and_the_stamps_follow_it(rover):
    wait_until(lambda: _count(rover, "clock") >= 30, 40.0, "/clock")
    with rover["lock"]:
        clock = np.array([_ns(msg.clock) for _, msg in rover["record"]["clock"]])
        odom = [_ns(msg.header.stamp) for _, msg in rover["record"]["odom"]]
    steps = np.diff(clock)
    assert (steps > 0).all()
    # Simulated ticks of 1/30 s; a tick that overran makes up at most 3 steps and publishes the last.
    tick_ns = 1_000_000_000 // 30
    assert set(np.unique(steps // tick_ns)) <= {1, 2, 3}, np.unique(steps)
    assert set(odom) & set(clock.tolist())  # the data is stamped with the simulated time it was published at
    assert abs(clock[-1] - time.time_ns()) < 60e9  # started at the wall clock, so stamps look familiar


def test_cmd_vel_takes_twist_stamped_when_asked(monkeypatch):
    """Nav2 (Jazzy and later) sends TwistStamped: with cmd_vel_stamped:=true the explore rig follows it."""
    domain = (int(os.environ["ROS_DOMAIN_ID"]) + 151) % 232  # away from the rover fixture's /cmd_vel and poses
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    sim = start_node([console_script("astra-sim-node"), "--ros-args", "-p", "scenario:=explore", "-p", "size:=32x32",
                      "-p", "cmd_vel_stamped:=true", "-p", "publish_clock:=false"], REPO)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("astra_twist_stamped_test", context=context)
    poses, clocks, lock = [], [], threading.Lock()

    def keep(store):
        def callback(msg):
            with lock:
                store.append(msg)
        return callback

    node.create_subscription(PoseStamped, "/camera/pose", keep(poses), QoSProfile(depth=50))
    node.create_subscription(Clock, "/clock", keep(clocks), QoSProfile(depth=50))
    cmd_vel = node.create_publisher(TwistStamped, "/cmd_vel", QoSProfile(depth=10))
    spinner = BackgroundSpinner(node)
    try:
        wait_until(lambda: len(poses) >= 3 or sim.poll() is not None, 40.0, "camera poses")
        assert sim.poll() is None, "the simulator exited"
        wait_until(lambda: cmd_vel.get_subscription_count() > 0, 10.0, "the simulator's /cmd_vel subscription")
        with lock:
            start = poses[-1].pose.position
        command = TwistStamped()
        command.header.frame_id = "base_link"
        command.twist.linear.x = 0.5
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            command.header.stamp = node.get_clock().now().to_msg()
            cmd_vel.publish(command)
            time.sleep(0.05)
        with lock:
            now = poses[-1].pose.position
            clock_count = len(clocks)
        moved = np.linalg.norm([now.x - start.x, now.y - start.y, now.z - start.z])
        assert 0.1 < moved < 1.5, moved
        assert clock_count == 0  # publish_clock:=false
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.shutdown(context=context)
        print(_stop(sim))
