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
        "-p", "image_transport:=compressed", "-r", "image:=/conv/camera/image_raw", "-r", "twist:=/conv/cmd_vel"], REPO)
    harness = Harness()
    try:
        harness.wait_for(lambda: len(harness.predicted) >= 6 or process.poll() is not None, 60.0, "predictions from jpeg")
        assert process.poll() is None, "the predictor exited"
        harness.wait_for(lambda: len(harness.infos) >= 6, 10.0, "camera_info with the predictions")
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
    finally:
        harness.close()
        print(stop_node(process))
