"""The predictor takes a camera_info's intrinsics for a model that turns its views (rotation_reference).

The node runs as its own process on a tiny rotation-reference checkpoint; this test publishes images,
twists and camera_info to it. The environment (LOCALHOST discovery, a domain of this run) comes from
conftest.py.
"""

import os
import time

import numpy as np
import pytest
from node_process import console_script, start_node, stop_node

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from ros_harness import REPO, RELIABLE, TestNode  # noqa: E402

from astra_ros.model import WorldModel, preset  # noqa: E402
from astra_ros.ros.predictor_core import model_intrinsics  # noqa: E402

IMAGE_SIZE = (48, 64)  # (H, W); the model is 16x16, so K scales by 1/3 in y and 1/4 in x


def test_model_intrinsics_scale_per_axis_and_refuse_an_uncalibrated_camera():
    K = model_intrinsics([120.0, 0, 31.5, 0, 90.0, 23.5, 0, 0, 1], 64, 48, (16, 16))
    assert np.allclose(K, [[30.0, 0, 7.5], [0, 30.0, 7.5], [0, 0, 1]])
    for k, width, height in (([0.0] * 9, 64, 48), ([np.nan] * 9, 64, 48), ([120.0, 0, 31.5, 0, 90, 23.5, 0, 0, 1], 0, 0),
                             ([1.0] * 4, 64, 48)):
        with pytest.raises(ValueError):
            model_intrinsics(k, width, height, (16, 16))


class Harness(TestNode):
    def __init__(self) -> None:
        super().__init__("astra_camera_info_test")
        self.diagnostics: list[DiagnosticArray] = []
        self.predicted: list[Image] = []
        self.image_pub = self.node.create_publisher(Image, "/ci/image", RELIABLE)
        self.twist_pub = self.node.create_publisher(Twist, "/ci/cmd_vel", RELIABLE)
        self.info_pub = self.node.create_publisher(CameraInfo, "/ci/camera_info", RELIABLE)
        self.info: CameraInfo | None = None  # published with every frame when set
        self.record(DiagnosticArray, "/diagnostics", self.diagnostics)
        self.record(Image, "/astra_predictor/predicted/image", self.predicted)
        self.start_loop(self._feed)

    def _feed(self) -> None:
        height, width = IMAGE_SIZE
        while not self.stopping.is_set():
            stamp = self.node.get_clock().now().nanoseconds
            twist = Twist()
            twist.angular.z = 0.3
            self.twist_pub.publish(twist)
            image = Image(height=height, width=width, encoding="rgb8", step=width * 3)
            image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            image.header.frame_id = "ci_camera"
            image.data = self.rng.integers(0, 255, height * width * 3, dtype=np.uint8).tobytes()
            self.image_pub.publish(image)
            with self.lock:
                info = self.info
            if info is not None:
                info.header = image.header
                self.info_pub.publish(info)
            time.sleep(0.1)

    def intrinsics(self) -> str:
        return self.newest_diagnostics(self.diagnostics).get("intrinsics", "")


def _camera_info(fx: float, fy: float) -> CameraInfo:
    height, width = IMAGE_SIZE
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = [fx, 0.0, (width - 1) / 2, 0.0, fy, (height - 1) / 2, 0.0, 0.0, 1.0]
    return info


def test_camera_info_sets_the_intrinsics_and_an_uncalibrated_one_is_ignored(tmp_path):
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    model = WorldModel(preset("tiny", latent_delta=True, prediction="x0", residual_decoding=True,
                             rotation_reference=True))
    model.save_pretrained(tmp_path / "turning")
    command = [
        console_script("astra-predictor"), "--ros-args", "--params-file", str(REPO / "config" / "predictor.yaml"),
        "-p", f"checkpoint:={tmp_path / 'turning'}", "-p", "action_modality:=twist", "-p", "horizon_s:=0.3",
        "-p", "context_frames:=4", "-p", "publish_rate:=4.0",
        "-r", "image:=/ci/image", "-r", "twist:=/ci/cmd_vel", "-r", "camera_info:=/ci/camera_info",
    ]
    process = start_node(command, REPO)
    harness = Harness()
    try:
        harness.wait_for(lambda: harness.intrinsics().startswith("default") or process.poll() is not None, 40.0,
                         "diagnostics naming the default intrinsics")
        harness.wait_for(lambda: len(harness.predicted) >= 2 or process.poll() is not None, 40.0,
                         "predictions with the default camera")
        with harness.lock:
            harness.info = _camera_info(0.0, 0.0)  # an uncalibrated driver
        time.sleep(2.5)
        assert harness.intrinsics().startswith("default")
        with harness.lock:
            harness.info = _camera_info(120.0, 90.0)
        harness.wait_for(lambda: harness.intrinsics().startswith("camera_info") or process.poll() is not None, 20.0,
                         "diagnostics naming the camera_info")
        # Centre-cropped to 48x48 (resize_mode crop), then 16/48: 120 px / 3 and 90 px / 3 at the model's 16x16.
        assert "fx=40.00 fy=30.00" in harness.intrinsics()
        count = len(harness.predicted)
        harness.wait_for(lambda: len(harness.predicted) >= count + 2 or process.poll() is not None, 20.0,
                         "predictions with the camera_info's intrinsics")
        assert process.poll() is None, "the predictor exited"
    finally:
        harness.close()
        log = stop_node(process)
    assert "camera_info ignored" in log and "uncalibrated" in log
