"""ROS conventions of the predictor, seen from a separate client process: compressed camera input,
a camera_info with every predicted image, resolved topic names in /diagnostics."""

import os
import time

import numpy as np
import pytest
from node_process import console_script, start_node, stop_node

rclpy = pytest.importorskip("rclpy")

import cv2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from ros_harness import NODE, REPO, RELIABLE, TestNode  # noqa: E402

CAMERA_HZ = 10.0


class Harness(TestNode):
    def __init__(self) -> None:
        super().__init__("astra_conventions_test")
        self.predicted: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.jpeg_pub = self.node.create_publisher(CompressedImage, "/conv/camera/image_raw/compressed", RELIABLE)
        self.twist_pub = self.node.create_publisher(Twist, "/conv/cmd_vel", RELIABLE)
        self.record(Image, f"{NODE}/predicted/image", self.predicted)
        self.record(CameraInfo, f"{NODE}/predicted/camera_info", self.infos)
        self.record(DiagnosticArray, "/diagnostics", self.diagnostics)
        self.start_loop(self._feed)

    def _feed(self) -> None:
        while not self.stopping.is_set():
            stamp = self.node.get_clock().now().nanoseconds
            frame = self.rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            msg = CompressedImage(format="jpeg")
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            msg.header.frame_id = "conv_camera"
            msg.data = cv2.imencode(".jpg", frame)[1].tobytes()
            self.jpeg_pub.publish(msg)
            twist = Twist()
            twist.linear.x = 0.3
            self.twist_pub.publish(twist)
            time.sleep(1.0 / CAMERA_HZ)


def test_compressed_images_in_a_camera_info_beside_every_predicted_image_out():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    process = start_node([
        console_script("astra-predictor"), "--ros-args", "-p", "checkpoint:=random:tiny", "-p", "horizon_s:=0.3",
        "-p", "image_transport:=compressed", "-r", "image:=/conv/camera/image_raw", "-r", "twist:=/conv/cmd_vel",
        "-r", "~/odom:=/conv/odom"], REPO)
    harness = Harness()
    try:
        harness.wait_for(lambda: len(harness.predicted) >= 6 or process.poll() is not None, 60.0, "predictions from jpeg")
        assert process.poll() is None, "the predictor exited"
        harness.wait_for(lambda: len(harness.infos) >= 6, 10.0, "camera_info with the predictions")
        harness.wait_for(lambda: len(harness.diagnostics) >= 1, 10.0, "a /diagnostics message")
        with harness.lock:
            images = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in harness.predicted}
            infos = list(harness.infos)
            arrays = list(harness.diagnostics)
        for info in infos:
            assert (info.header.stamp.sec, info.header.stamp.nanosec) in images  # paired with an image
            assert info.header.frame_id == "conv_camera" and (info.width, info.height) == (32, 32)
            assert info.k[0] > 0 and info.k[2] == pytest.approx(15.5) and info.k[8] == 1.0
        values = {v.key: v.value for a in arrays for s in a.status if s.hardware_id == "astra_predictor" for v in s.values}
        assert values["topic_image"] == "/conv/camera/image_raw/compressed"  # resolved, as remapped
        assert values["topic_twist"] == "/conv/cmd_vel"
        assert int(values.get("input_skipped_image_decode_error", 0)) == 0
        # the node's subscriptions as the ROS graph shows them: remapped where asked, private otherwise
        subscribed = {name for name, _ in harness.node.get_subscriber_names_and_types_by_node("astra_predictor", "/")}
        assert {"/conv/camera/image_raw/compressed", "/conv/cmd_vel", "/conv/odom",
                "/astra_predictor/pose", "/astra_predictor/camera_info"} <= subscribed
        assert not subscribed & {"/image", "/pose", "/twist", "/odom", "/camera_info"}
    finally:
        harness.close()
        print(stop_node(process))


PROFILE = """
name: test_bot
modality: twist
topics:
  image: /prof/front_cam/image
  twist: /prof/base/twist
twist_stamped: true
twist_signs:
  linear: [1, 1, 1]
  angular: [1, 1, -1]     # this robot's positive yaw turns right
"""


class ProfileHarness(TestNode):
    """Feeds the topics a robot profile names: images and TwistStamped commands that turn right."""

    def __init__(self) -> None:
        from geometry_msgs.msg import TwistStamped

        from ros_harness import PredictedFrames

        super().__init__("astra_profile_test")
        self.frames: list = []
        self.image_pub = self.node.create_publisher(Image, "/prof/front_cam/image", RELIABLE)
        self.twist_pub = self.node.create_publisher(TwistStamped, "/prof/base/twist", RELIABLE)
        self.record(PredictedFrames, f"{NODE}/predicted/frames", self.frames)
        self.twist_type = TwistStamped
        self.start_loop(self._feed)

    def _feed(self) -> None:
        while not self.stopping.is_set():
            stamp = self.node.get_clock().now().nanoseconds
            image = Image(height=60, width=80, encoding="bgr8", step=240)
            image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            image.header.frame_id = "front_cam"
            image.data = self.rng.integers(0, 255, 60 * 240, dtype=np.uint8).tobytes()
            self.image_pub.publish(image)
            twist = self.twist_type()
            twist.header.stamp = image.header.stamp
            twist.twist.linear.x, twist.twist.angular.z = 0.3, 0.5  # [m/s], [rad/s] in the robot's own sign
            self.twist_pub.publish(twist)
            time.sleep(1.0 / CAMERA_HZ)


def test_the_predictor_reads_a_robot_profile_its_topics_type_and_signs(tmp_path):
    profile = tmp_path / "test_bot.yaml"
    profile.write_text(PROFILE)
    process = start_node([console_script("astra-predictor"), "--ros-args", "-p", "checkpoint:=random:tiny",
                          "-p", "horizon_s:=0.3", "-p", f"profile:={profile}"], REPO)  # no remapping at all
    harness = ProfileHarness()
    try:
        harness.wait_for(lambda: len(harness.frames) >= 2 or process.poll() is not None, 60.0, "forecasts via the profile")
        assert process.poll() is None, "the predictor exited"
        with harness.lock:
            msg = harness.frames[-1]
        actions = np.asarray(msg.actions).reshape(-1, 6)
        # Velocity x the model's 0.1 s frame interval, the yaw turned into REP-103's sign (left positive).
        np.testing.assert_allclose(actions[:, 0], 0.03, rtol=1e-5)
        np.testing.assert_allclose(actions[:, 5], -0.05, rtol=1e-5)
        assert msg.header.frame_id == "front_cam"
    finally:
        harness.close()
        print(stop_node(process))


def test_a_bad_profile_stops_the_predictor_with_one_line_naming_the_key(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text(PROFILE.replace("modality: twist", "modality: teleport"))
    process = start_node([console_script("astra-predictor"), "--ros-args", "-p", "checkpoint:=random:tiny",
                          "-p", f"profile:={profile}"], REPO)
    assert process.wait(timeout=60) == 1
    output = stop_node(process)
    assert "profile=" in output and "modality" in output and "teleport" in output
