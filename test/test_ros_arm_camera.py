"""A predictor whose model has end-effector maps learns where the arm's camera is from /tf_static.

The node runs as its own process on a tiny checkpoint with ``arm_map_cells``; this test is the robot: it
latches /tf_static (odom -> base_link -> camera_link -> camera_optical_frame) and publishes end-effector
poses in ``base_link`` and images in ``camera_optical_frame``. The environment (LOCALHOST discovery, a
domain of this run) comes from conftest.py.
"""

import os
import time

import numpy as np
import pytest
from node_process import console_script, start_node, stop_node

rclpy = pytest.importorskip("rclpy")
tf2_msgs = pytest.importorskip("tf2_msgs.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, TransformStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from ros_harness import REPO, RELIABLE, TestNode  # noqa: E402

from astra_ros.model import WorldModel, preset  # noqa: E402

LATCHED = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _transform(parent: str, child: str, xyz, quat_xyzw=(0.0, 0.0, 0.0, 1.0)) -> TransformStamped:
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, xyz)
    (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
     t.transform.rotation.w) = map(float, quat_xyzw)
    return t


class Harness(TestNode):
    def __init__(self) -> None:
        super().__init__("astra_arm_camera_test")
        self.diagnostics: list[DiagnosticArray] = []
        self.image_pub = self.node.create_publisher(Image, "/ac/image", RELIABLE)
        self.pose_pub = self.node.create_publisher(PoseStamped, "/ac/ee_pose", RELIABLE)
        self.tf_pub = self.node.create_publisher(tf2_msgs.TFMessage, "/tf_static", LATCHED)
        self.record(DiagnosticArray, "/diagnostics", self.diagnostics)
        self.start_loop(self._feed)

    def latch_tree(self) -> None:
        # camera_link 1.0 m ahead of the base and 0.5 m up; the optical frame turned as REP-103 has it.
        self.tf_pub.publish(tf2_msgs.TFMessage(transforms=[
            _transform("odom", "base_link", (0.0, 0.0, 0.4)),
            _transform("base_link", "camera_link", (1.0, 0.0, 0.5)),
            _transform("camera_link", "camera_optical_frame", (0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5))]))

    def _feed(self) -> None:
        while not self.stopping.is_set():
            stamp = self.node.get_clock().now().nanoseconds
            pose = PoseStamped()
            pose.header.stamp.sec, pose.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            pose.header.frame_id = "base_link"
            pose.pose.position.x, pose.pose.position.z = 0.4, 0.2
            pose.pose.orientation.w = 1.0
            self.pose_pub.publish(pose)
            image = Image(height=16, width=16, encoding="rgb8", step=48)
            image.header = pose.header
            image.header.frame_id = "camera_optical_frame"
            image.data = self.rng.integers(0, 255, 16 * 16 * 3, dtype=np.uint8).tobytes()
            self.image_pub.publish(image)
            time.sleep(0.1)

    def arm_camera(self) -> str:
        return self.newest_diagnostics(self.diagnostics).get("arm_camera", "")


def test_the_arm_camera_comes_from_tf_static_between_the_pose_and_image_frames(tmp_path):
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    WorldModel(preset("tiny", arm_map_cells=2)).save_pretrained(tmp_path / "mapped")
    command = [
        console_script("astra-predictor"), "--ros-args", "--params-file", str(REPO / "config" / "predictor.yaml"),
        "-p", f"checkpoint:={tmp_path / 'mapped'}", "-p", "action_modality:=robot", "-p", "horizon_s:=0.3",
        "-p", "context_frames:=4", "-p", "publish_rate:=4.0", "-r", "image:=/ac/image", "-r", "pose:=/ac/ee_pose",
    ]
    process = start_node(command, REPO)
    harness = Harness()
    try:
        harness.wait_for(lambda: harness.arm_camera().startswith("unknown") or process.poll() is not None, 40.0,
                         "diagnostics saying the camera is not known yet")
        harness.latch_tree()  # latched: the node gets it although it subscribed first
        harness.wait_for(lambda: harness.arm_camera().startswith("/tf_static") or process.poll() is not None, 20.0,
                         "diagnostics naming the /tf_static chain")
        assert "camera_optical_frame in base_link at (1.000, 0.000, 0.500) m" in harness.arm_camera()
        assert process.poll() is None, "the predictor exited"
    finally:
        harness.close()
        log = stop_node(process)
    assert "end-effector maps: camera /tf_static" in log
