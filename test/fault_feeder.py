"""The test node the fault tests feed the predictor through: camera frames, stamped twists and poses in,
predictions and /diagnostics recorded."""

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from ros_harness import NODE, RELIABLE, PredictedFrames, TestNode  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

CAMERA_HZ = 15.0
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Feeder(TestNode):
    """A test node: publishes camera frames and stamped twists into the predictor and records its outputs.

    ``offset_ns`` shifts every stamp (a clock jump); ``encoding`` and ``size`` (H, W) change the images;
    ``rate_factor`` multiplies the rate (a burst); ``send_images``/``send_twists`` stop a stream.
    """

    frame_id = "faults_camera"  # of the images (a class default: some tests build messages without a node)

    def __init__(self) -> None:
        super().__init__("astra_faults_test")
        self.frames: list = []  # (monotonic arrival [s], PredictedFrames)
        self.diagnostics: list[DiagnosticArray] = []
        self.image_pub = self.node.create_publisher(Image, "/faults/image", RELIABLE)
        self.twist_pub = self.node.create_publisher(TwistStamped, "/faults/twist", RELIABLE)
        self.pose_pub = self.node.create_publisher(PoseStamped, "/faults/pose", RELIABLE)
        self.record(PredictedFrames, f"{NODE}/predicted/frames", self.frames, keep=lambda msg: (time.monotonic(), msg))
        self.record(DiagnosticArray, "/diagnostics", self.diagnostics,
                    accept=lambda msg: any(status.hardware_id == "astra_predictor" for status in msg.status))
        self.offset_ns = 0
        self.encoding = "rgb8"
        self.size = (48, 64)
        self.rate_factor = 1.0
        self.send_images = threading.Event()
        self.send_twists = threading.Event()
        self.sent_images = 0
        self.start_loop(self._feed)

    def image(self, stamp_ns: int) -> Image:
        height, width = self.size
        msg = Image(height=height, width=width, encoding=self.encoding, step=width * CHANNELS[self.encoding])
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = self.frame_id
        msg.data = self.rng.integers(0, 255, height * msg.step, dtype=np.uint8).tobytes()
        return msg

    def twist(self, stamp_ns: int, vx: float = 0.4) -> TwistStamped:
        msg = TwistStamped()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.twist.linear.x, msg.twist.angular.z = vx, 0.2
        return msg

    def _feed(self) -> None:
        next_s = time.monotonic()
        while not self.stopping.is_set():
            stamp = time.time_ns() + self.offset_ns
            if self.send_images.is_set():
                self.image_pub.publish(self.image(stamp))
                self.sent_images += 1
            if self.send_twists.is_set():  # stamped with the image, so each image pairs exactly
                self.twist_pub.publish(self.twist(stamp))
            next_s = max(next_s + 1.0 / (CAMERA_HZ * self.rate_factor), time.monotonic() - 0.1)
            time.sleep(max(0.0, next_s - time.monotonic()))

    def count(self) -> int:
        with self.lock:
            return len(self.frames)

    def values(self) -> dict[str, str]:
        """Key/values of the newest predictor /diagnostics message, plus ``level:<status>`` and ``message:<status>``."""
        with self.lock:
            if not self.diagnostics:
                return {}
            array = self.diagnostics[-1]
        values = {v.key: v.value for status in array.status for v in status.values}
        for status in array.status:
            level = status.level[0] if isinstance(status.level, bytes) else status.level
            values[f"level:{status.name.split(': ')[-1]}"] = str(level)
            values[f"message:{status.name.split(': ')[-1]}"] = status.message
        return values

    def value(self, key: str, default: int = 0) -> int:
        return int(self.values().get(key, default))

    def detail(self) -> str:
        return f"diagnostics: {self.values()}"

    def wait_for_predictions(self, count: int, timeout_s: float = 20.0) -> None:
        before = self.count()
        self.wait_for(lambda: self.count() >= before + count, timeout_s, f"{count} more predictions")

    def wait_for_new_diagnostics(self) -> None:
        with self.lock:
            seen = len(self.diagnostics)
        self.wait_for(lambda: len(self.diagnostics) > seen, 5.0, "a new /diagnostics message")
