"""Fault injection into the predictor node (real rclpy, the node as its own process, random:tiny model).

Each test states a fault, injects it through the node's topics or services, and checks the node's own
answer: values from /diagnostics, the predictions it keeps publishing, or a service response. The
faults run in order on one node process (a fixture), and the checkpoint faults on short-lived ones.
The environment (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a ROS_DOMAIN_ID of this run) comes from
conftest.py and is inherited by the node processes.
"""

import json
import os
import pickle
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from node_process import console_script, start_node, stop_node

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from ros_harness import NODE, REPO, RELIABLE, Imagine, PredictedFrames, TestNode  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

CAMERA_HZ = 15.0
HORIZON_S = 0.3
MAX_BATCH, MAX_HORIZON = 4, 6
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


def _stamp_ns(stamp) -> int:
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


@pytest.fixture(scope="module")
def node():
    """The predictor (random:tiny, twist modality on TwistStamped) and a feeder publishing into it."""
    if PredictedFrames is None:
        pytest.skip("astra_ros.msg and astra_ros.srv not built (scripts/setup.sh builds it)")
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    command = [
        console_script("astra-predictor"), "--ros-args", "-p", "checkpoint:=random:tiny", "-p", "action_modality:=twist",
        "-p", "twist_stamped:=true", "-p", f"horizon_s:={HORIZON_S}", "-p", "context_frames:=4",
        "-p", "publish_rate:=4.0", "-p", "input_timeout_s:=1.0", "-p", "sync_slop_s:=0.1",
        "-p", f"max_imagine_batch:={MAX_BATCH}", "-p", f"max_imagine_horizon:={MAX_HORIZON}",
        "-r", "image:=/faults/image", "-r", "twist:=/faults/twist", "-r", "pose:=/faults/pose", "-r", "odom:=/faults/odom",
    ]
    process = start_node(command, REPO)
    feeder = Feeder()
    feeder.send_images.set()
    feeder.send_twists.set()
    try:
        feeder.wait_for(lambda: feeder.count() >= 2 or process.poll() is not None, 60.0, "first predictions")
        assert process.poll() is None, "the predictor exited"
        yield feeder, process
    finally:
        feeder.close()
        print(stop_node(process))


def test_images_change_size_and_encoding_mid_stream(node):
    feeder, process = node
    decode_errors = feeder.value("input_skipped_image_decode_error")
    for encoding, size in (("bgr8", (48, 64)), ("mono8", (48, 64)), ("rgb8", (64, 64)), ("bgr8", (80, 96))):
        feeder.encoding, feeder.size = encoding, size
        used = feeder.value("used_image")
        feeder.wait_for_predictions(2)
        feeder.wait_for(lambda: feeder.value("used_image") > used, 5.0, f"{encoding} {size} images used")
    with feeder.lock:
        frames = feeder.frames[-1][1].frames
    assert (frames[0].height, frames[0].width, frames[0].encoding) == (32, 32, "rgb8")
    assert feeder.value("input_skipped_image_decode_error") == decode_errors
    assert process.poll() is None


def test_nan_and_inf_poses_and_twists_are_counted_and_skipped(node):
    feeder, process = node
    now = time.time_ns() + feeder.offset_ns
    for value in (float("nan"), float("inf"), -float("inf"), 1e39):  # 1e39: finite, but inf in float32
        pose = PoseStamped()
        pose.header.stamp.sec, pose.header.stamp.nanosec = divmod(now, 1_000_000_000)
        pose.pose.position.x = value
        pose.pose.orientation.w = 1.0
        feeder.pose_pub.publish(pose)
        feeder.twist_pub.publish(feeder.twist(now, vx=value))
    bad_quaternion = PoseStamped()
    bad_quaternion.pose.orientation.w = 0.0  # all-zero orientation: not a rotation
    feeder.pose_pub.publish(bad_quaternion)
    feeder.wait_for(lambda: feeder.value("input_skipped_pose_not_finite") >= 4
                    and feeder.value("input_skipped_pose_not_finite")
                    + feeder.value("input_skipped_pose_quaternion_not_unit") >= 5
                    and feeder.value("input_skipped_twist_not_finite") >= 4, 10.0, "the non-finite inputs counted")
    feeder.wait_for_predictions(2)
    with feeder.lock:
        actions = np.asarray(feeder.frames[-1][1].actions)
    assert np.isfinite(actions).all()
    assert process.poll() is None


def test_camera_stops_then_resumes(node):
    feeder, process = node
    feeder.send_images.clear()
    feeder.wait_for(lambda: "image" in feeder.values().get("message:inputs", ""), 8.0, "a warning that images stopped")
    assert feeder.values()["level:inputs"] == "1"  # WARN
    time.sleep(0.6)  # a prediction already in the model may still land
    stopped_at = feeder.count()
    skipped = feeder.value("skipped_no_new_frame")
    time.sleep(1.5)
    assert feeder.count() == stopped_at, "predictions went on without new frames"
    feeder.wait_for(lambda: feeder.value("skipped_no_new_frame") > skipped, 5.0, "ticks skipped for no new frame")
    feeder.send_images.set()
    feeder.wait_for_predictions(2)
    feeder.wait_for(lambda: feeder.values().get("level:inputs") == "0", 5.0, "the inputs back to OK")
    assert process.poll() is None


def test_twist_stops_predictions_continue_with_a_zero_twist(node):
    feeder, process = node
    feeder.send_twists.clear()
    try:
        feeder.wait_for(lambda: feeder.values().get("fallback_active") == "true", 8.0, "the fallback in /diagnostics")
        values = feeder.values()
        assert values["level:inputs"] == "1" and "zero twist" in values["message:inputs"]
        assert values["level:prediction"] == "1" and "fallback" in values["message:prediction"]
        feeder.wait_for_predictions(3)  # predictions continue while the twist is silent
        with feeder.lock:
            msg = feeder.frames[-1][1]
        assert np.allclose(msg.actions, 0.0), "the fallback holds a zero twist over the horizon"
        feeder.wait_for(lambda: feeder.value("fallback_frames") > 0, 5.0, "fallback frames counted")
    finally:
        feeder.send_twists.set()
    feeder.wait_for(lambda: feeder.values().get("fallback_active") == "false", 8.0, "the fallback to end")
    feeder.wait_for_predictions(2)
    with feeder.lock:
        msg = feeder.frames[-1][1]
    assert np.asarray(msg.actions).reshape(-1, 6)[0, 0] > 0.0  # the real command again
    assert process.poll() is None


def test_clock_jumps_back_and_the_stream_restarts(node):
    feeder, process = node
    restarts = feeder.value("restarts_image") + feeder.value("restarts_twist")
    feeder.offset_ns = -60_000_000_000  # a bag loop: stamps start again one minute earlier
    jumped_at = time.time_ns() + feeder.offset_ns
    feeder.wait_for(lambda: feeder.value("restarts_image") + feeder.value("restarts_twist") > restarts, 10.0,
                    "the restart in /diagnostics")
    feeder.wait_for(lambda: feeder.count() and _stamp_ns(feeder.frames[-1][1].observed_stamp) >= jumped_at, 15.0,
                    "predictions from the restarted stream")
    feeder.wait_for_predictions(2)
    with feeder.lock:
        observed = [_stamp_ns(m.observed_stamp) for _, m in feeder.frames[-2:]]
    assert all(jumped_at <= stamp < jumped_at + 30_000_000_000 for stamp in observed)
    assert process.poll() is None


def test_burst_at_ten_times_the_rate_is_dropped_and_counted(node):
    feeder, process = node
    superseded = feeder.value("input_skipped_image_superseded") + feeder.value("input_skipped_image_off_grid")
    received = feeder.value("received_image")
    sent = feeder.sent_images
    feeder.rate_factor = 10.0
    time.sleep(2.0)
    feeder.rate_factor = 1.0
    burst = feeder.sent_images - sent
    assert burst > 0.6 * 10 * CAMERA_HZ * 2.0, f"the burst sent only {burst} images"
    feeder.wait_for_predictions(2)
    feeder.wait_for_new_diagnostics()
    values = feeder.values()
    got = int(values["received_image"]) - received
    lost = int(values.get("lost_in_transport_image", 0))
    assert got > burst / 4, f"the node saw {got} of {burst} burst images"
    # The camera outran the model's frame grid and the model: most frames were thinned off the grid or
    # left the window unused, and each one was counted.
    skipped = int(values["input_skipped_image_superseded"]) + int(values.get("input_skipped_image_off_grid", 0))
    assert skipped - superseded > got / 2
    assert values["inputs_accounted"] == "true", values["message:input accounting"]
    print(f"burst: sent {burst}, received {got}, lost in transport (reported) {lost}")
    assert process.poll() is None


def test_a_camera_with_another_frame_id_restarts_the_history(node):
    """Frames of another camera (its frame_id) are not the future of the first one's history."""
    feeder, process = node
    restarts = feeder.value("restarts_image_frame_id")
    feeder.frame_id = "second_camera"
    try:
        feeder.wait_for(lambda: feeder.value("restarts_image_frame_id") == restarts + 1, 10.0, "a frame_id restart")
        feeder.wait_for(lambda: feeder.frames and feeder.frames[-1][1].header.frame_id == "second_camera", 20.0,
                        "predictions in the new camera's frame")
        time.sleep(0.5)
        assert feeder.value("restarts_image_frame_id") == restarts + 1  # once, not per image
    finally:
        feeder.frame_id = "faults_camera"
    feeder.wait_for(lambda: feeder.value("restarts_image_frame_id") == restarts + 2, 10.0, "the switch back")
    feeder.wait_for_predictions(2)
    assert process.poll() is None


@pytest.mark.skipif(Imagine is None, reason="astra_ros.msg and astra_ros.srv not built")
def test_imagine_refuses_bad_requests_and_bounds_their_size(node):
    feeder, process = node

    def imagine(actions, batch, horizon, action_dim=6):
        request = Imagine.Request(modality="twist", actions=[float(a) for a in actions], batch=batch, horizon=horizon,
                                  action_dim=action_dim, seed=1, from_live_history=True)
        return feeder.call(Imagine, f"{NODE}/imagine", request)

    response = imagine([0.0] * 11, batch=1, horizon=2)  # one value short
    assert not response.success and "12 values" in response.message
    response = imagine([0.0] * 5 * 2, batch=2, horizon=1, action_dim=5)  # twist actions are 6-D
    assert not response.success and "action_dim must be 6" in response.message
    response = imagine([0.0] * 6, batch=1_000_000, horizon=1)  # huge batch: refused before any allocation
    assert not response.success and "max_imagine_batch=4" in response.message
    response = imagine([0.0] * (MAX_BATCH + 1) * 6, batch=MAX_BATCH + 1, horizon=1)  # just above the limit
    assert not response.success and "max_imagine_batch" in response.message
    response = imagine([0.0] * (MAX_HORIZON + 1) * 6, batch=1, horizon=MAX_HORIZON + 1)
    assert not response.success and "max_imagine_horizon=6" in response.message
    actions = np.zeros((1, 2, 6))
    actions[0, 1, 3] = np.nan
    response = imagine(actions.reshape(-1), batch=1, horizon=2)
    assert not response.success and "NaN" in response.message
    response = imagine(np.zeros(MAX_BATCH * MAX_HORIZON * 6), batch=MAX_BATCH, horizon=MAX_HORIZON)  # at the limits
    assert response.success, response.message
    assert len(response.frames) == MAX_BATCH * MAX_HORIZON
    feeder.wait_for_new_diagnostics()
    assert feeder.value("imagine_refused") >= 6 and feeder.value("imagine_served") >= 1
    feeder.wait_for_predictions(2)
    assert process.poll() is None


def test_every_input_is_used_or_counted_as_skipped(node):
    feeder, process = node
    feeder.send_images.clear()
    feeder.send_twists.clear()
    time.sleep(0.5)
    feeder.wait_for_new_diagnostics()
    values = feeder.values()
    received, used = int(values["inputs_received"]), int(values["inputs_used"])
    skipped = sum(int(v) for k, v in values.items() if k.startswith("input_skipped_"))
    pending = int(values["inputs_pending"])
    assert received == used + skipped + pending and values["inputs_accounted"] == "true"
    assert pending <= 4 + 10  # at most the window and the pairing queue
    assert int(values["received_image"]) <= feeder.sent_images
    assert process.poll() is None


# ---------------------------------------------------------------------------------------- checkpoints
def _tiny_checkpoint(path: Path) -> Path:
    from astra_ros.model import WorldModel, preset

    WorldModel(preset("tiny", resolution=(32, 32))).save_pretrained(path)
    return path


class _Payload:
    """Unpickling this touches a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_checkpoints_stop_the_node_with_a_reason(tmp_path):
    marker = tmp_path / "pickle_was_executed"
    pickle_only = _tiny_checkpoint(tmp_path / "pickle_only")
    (pickle_only / "model.safetensors").unlink()
    for name in ("pytorch_model.bin", "model.bin"):
        (pickle_only / name).write_bytes(pickle.dumps(_Payload(marker)))
    corrupt_weights = _tiny_checkpoint(tmp_path / "corrupt_weights")
    weights = corrupt_weights / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # truncated
    unknown_key = _tiny_checkpoint(tmp_path / "unknown_key")
    config = json.loads((unknown_key / "config.json").read_text())
    (unknown_key / "config.json").write_text(json.dumps(config | {"__reduce__": "os.system"}))
    garbage_config = _tiny_checkpoint(tmp_path / "garbage_config")
    (garbage_config / "config.json").write_text("{not json")
    cases = {  # checkpoint -> what the fatal message must say
        str(tmp_path / "missing"): "does not exist",
        str(pickle_only): "has no model.safetensors",
        str(corrupt_weights): "not a readable safetensors file",
        str(unknown_key): "__reduce__",
        str(garbage_config): "invalid",
    }
    processes = {
        checkpoint: subprocess.Popen([console_script("astra-predictor"), "--ros-args", "-p", f"checkpoint:={checkpoint}"],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for checkpoint in cases
    }
    for checkpoint, process in processes.items():
        try:
            output, _ = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"the node did not stop on checkpoint {checkpoint}")
        assert process.returncode != 0, output
        assert "cannot load checkpoint" in output and cases[checkpoint] in output, output
        assert "Traceback" not in output, output
    assert not marker.exists(), "a pickle file in the checkpoint was unpickled"


# ---------------------------------------------------------------------------------------- accounting, in process
def test_accounting_holds_when_a_state_decides_an_image_it_cannot_pair():
    """A pose that arrives after an image but beyond the slop drops that image and is itself still used.

    (Found by the soak, with twists then: the state was counted neither used nor skipped.) Callbacks
    are called directly on an in-process node, so the sequence is exact.
    """
    from rclpy.parameter import Parameter

    from astra_ros.ros.predictor_node import PredictorNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = PredictorNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value="random:tiny"), Parameter("action_modality", value="camera"),
        Parameter("sync_slop_s", value=0.05)])
    try:
        feeder = Feeder.__new__(Feeder)  # only its message builders
        feeder.rng, feeder.size, feeder.encoding = np.random.default_rng(0), (48, 64), "rgb8"
        start = time.time_ns()
        node._on_state("pose", start, np.eye(4))
        node._on_image(feeder.image(start + 100_000_000))
        node._on_state("pose", start + 400_000_000, np.eye(4))  # decides the image: no pose within 50 ms
        ledger = node._ledger
        assert ledger.skipped["image_no_state_within_slop"] == 1
        assert ledger.used["pose"] == 2 and ledger.received["pose"] == 2
        received, used, skipped = ledger.totals()
        assert received == used + skipped + node._pairer.pending_images + len(node._unsent) == 3
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_twists_are_held_for_the_images_after_them_as_in_training():
    """Twists pair like the bag reader's zero-order hold: an image takes the latest twist at or before
    it (not one beyond the slop: none dropped), and a zero twist once that one is over 0.5 s old."""
    from rclpy.parameter import Parameter

    from astra_ros.ros.predictor_node import PredictorNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = PredictorNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value="random:tiny"), Parameter("twist_stamped", value=True),
        Parameter("sync_slop_s", value=0.05)])
    try:
        feeder = Feeder.__new__(Feeder)
        feeder.rng, feeder.size, feeder.encoding = np.random.default_rng(0), (48, 64), "rgb8"
        start, ms = time.time_ns(), 1_000_000
        node._on_twist(feeder.twist(start, vx=0.3))
        node._on_image(feeder.image(start + 100 * ms))  # the 0.3 m/s command is 100 ms old: in force
        node._on_twist(feeder.twist(start + 130 * ms, vx=0.5))  # after the image: not its command
        node._on_image(feeder.image(start + 700 * ms))  # 570 ms after the newest command: stopped
        node._on_twist(feeder.twist(start + 800 * ms, vx=0.1))
        assert node._ledger.skipped["image_no_state_within_slop"] == 0
        states = [o.state for o in node._window._observations]
        np.testing.assert_allclose([st[0] for st in states], [0.3, 0.0])
        assert node._pairer.stale_pairs == 1
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_one_image_stamped_far_ahead_costs_only_that_image():
    """A camera driver glitch stamps one frame 100 s ahead. Before, every good frame after it was
    refused as backwards until five made a "restart" that cleared the history; now only the outlier
    goes, and the window keeps filling with the frames around it."""
    from rclpy.parameter import Parameter

    from astra_ros.ros.predictor_node import PredictorNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = PredictorNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value="random:tiny"), Parameter("twist_stamped", value=True),
        Parameter("sync_slop_s", value=0.05), Parameter("context_frames", value=6)])
    try:
        feeder = Feeder.__new__(Feeder)  # only its message builders
        feeder.rng, feeder.size, feeder.encoding = np.random.default_rng(0), (48, 64), "rgb8"
        start = time.time_ns()
        period = 100_000_000  # the model's frame interval: every frame is on its grid
        stamps = []
        for i in range(10):
            stamp = start + i * period
            node._on_twist(feeder.twist(stamp))
            if i == 4:
                node._on_image(feeder.image(stamp + 100_000_000_000))  # the glitch
            else:
                node._on_image(feeder.image(stamp))
                stamps.append(stamp)
        node._on_twist(feeder.twist(start + 10 * period))  # decides the last image
        ledger = node._ledger
        assert ledger.skipped["image_stamp_jump"] == 1, ledger.skipped
        assert ledger.skipped["image_stamp_backwards"] == 0 and not node._restarts
        assert node._stamps["image"].jumps_undone == 1
        assert node._window.stamps_ns == stamps[-6:]  # the frames around the glitch, in order
        received, used, skipped = ledger.totals()
        assert received == used + skipped + node._pairer.pending_images + len(node._unsent)
        # a twist glitch: the same for the state stream (its queue drops the outlier; nothing else is lost)
        node._on_twist(feeder.twist(start + 11 * period + 100_000_000_000))
        node._on_twist(feeder.twist(start + 11 * period))
        node._on_image(feeder.image(start + 11 * period))
        node._on_twist(feeder.twist(start + 12 * period))
        assert node._stamps["twist"].jumps_undone == 1 and ledger.skipped["twist_stamp_backwards"] == 0
        assert node._window.stamps_ns[-1] == start + 11 * period
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


class _Warnings:
    """Stands in for a node's logger: keeps the warnings."""

    def __init__(self, logger) -> None:
        self.logger, self.warnings = logger, []

    def warning(self, message: str, **_) -> None:
        self.warnings.append(message)

    def __getattr__(self, name: str):
        return getattr(self.logger, name)


def test_images_and_plain_twists_on_different_clocks_name_the_cause():
    """Replaying a bag without --clock: images carry the bag's stamps, a plain Twist is stamped on
    arrival with the node's clock, and no image has a twist in force (each pairs with a zero command).
    The node must say why; an ordinary gap in the commands of a few hundred ms must not claim it."""
    from geometry_msgs.msg import Twist
    from rclpy.parameter import Parameter

    from astra_ros.ros.predictor_node import PredictorNode

    feeder = Feeder.__new__(Feeder)  # only its message builders
    feeder.rng, feeder.size, feeder.encoding = np.random.default_rng(0), (48, 64), "rgb8"
    for stamped in (False, True):  # a context each: the twist topic changes type
        context = rclpy.Context()
        rclpy.init(context=context)
        node = None
        try:
            node = PredictorNode(context=context, parameter_overrides=[
                Parameter("checkpoint", value="random:tiny"), Parameter("twist_stamped", value=stamped),
                Parameter("sync_slop_s", value=0.05)])
            log = _Warnings(node.get_logger())
            node.get_logger = lambda log=log: log
            if not stamped:
                bag_ns = 1_700_000_000_000_000_000  # a recording from 2023
                for i in range(3):
                    node._on_image(feeder.image(bag_ns + i * 100_000_000))
                    node._on_twist(Twist())
                assert node._pairer.stale_pairs == 3
                hints = [w for w in log.warnings if "different clocks" in w]
                assert hints and "s from the nearest twist" in hints[0], log.warnings
                assert "paired with a zero command" in hints[0]
                assert "plain geometry_msgs/Twist has no stamp" in hints[0] and "use_sim_time:=true" in hints[0]
                gap_s = float(hints[0].split("images are stamped ")[1].split(" s")[0])
                assert gap_s < -3e7  # the bag is years behind the node's clock
            else:
                start = time.time_ns()
                node._on_twist(feeder.twist(start))
                node._on_image(feeder.image(start + 700_000_000))  # the command is 0.7 s old: stopped
                node._on_twist(feeder.twist(start + 900_000_000))
                assert node._pairer.stale_pairs == 1
                assert not [w for w in log.warnings if "different clocks" in w], log.warnings
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.shutdown(context=context)


def test_a_publish_racing_shutdown_is_dropped_but_real_publish_errors_are_raised():
    """Ctrl-C shuts the context down while a model job may still be running: its publish is dropped."""
    from std_msgs.msg import String

    from astra_ros.ros.runner import publish_from_worker

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("publish_race", context=context)
    publisher = node.create_publisher(String, "race", 1)
    try:
        assert publish_from_worker(node, lambda: publisher.publish(String(data="before")))

        def broken() -> None:
            raise RuntimeError("a real failure")

        with pytest.raises(RuntimeError, match="a real failure"):
            publish_from_worker(node, broken)
        rclpy.shutdown(context=context)
        with pytest.raises(Exception):  # what the node saw before this fix: an RCLError from the worker
            publisher.publish(String(data="after"))
        assert not publish_from_worker(node, lambda: publisher.publish(String(data="after")))
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_background_spinner_runs_callbacks_and_always_stops():
    """Test harnesses and the soak spin in a thread; stopping must end that thread (before the node is
    destroyed) even with nothing arriving to wake its wait."""
    from std_msgs.msg import String

    from astra_ros.ros.runner import BackgroundSpinner

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("spinner_check", context=context)
    heard: list[str] = []
    node.create_subscription(String, "spinner_check", lambda msg: heard.append(msg.data), 10)
    publisher = node.create_publisher(String, "spinner_check", 10)
    try:
        for _ in range(3):  # stop/start cycles: each stop ends its thread
            spinner = BackgroundSpinner(node)
            count = len(heard)
            deadline = time.monotonic() + 10.0
            while len(heard) == count and time.monotonic() < deadline:
                publisher.publish(String(data="ping"))
                time.sleep(0.05)
            assert len(heard) > count, "no callback ran while spinning"
            started = time.monotonic()
            assert spinner.stop(timeout_s=5.0)
            assert time.monotonic() - started < 2.0
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_run_node_treats_an_error_from_a_shut_down_context_as_a_clean_stop():
    """Ctrl-C can shut the context down while the executor builds its wait set; rclpy then raises
    RCLError, not ExternalShutdownException (seen in CI as a Traceback from astra-predictor). That is
    a clean stop (exit 0); the same error with the context still valid is a real failure."""
    from rclpy.executors import SingleThreadedExecutor

    from astra_ros.ros.runner import run_node

    class RacingShutdown(SingleThreadedExecutor):
        def spin(self) -> None:
            rclpy.shutdown()  # what the SIGINT handler does
            raise RuntimeError("failed to initialize wait set: the given context is not valid")

    class Broken(SingleThreadedExecutor):
        def spin(self) -> None:
            raise RuntimeError("a real failure")

    make_node = lambda: rclpy.create_node("runner_check")  # noqa: E731
    assert run_node(make_node, RacingShutdown, "runner_check", []) == 0
    assert not rclpy.ok()
    with pytest.raises(RuntimeError, match="a real failure"):
        run_node(make_node, Broken, "runner_check", [])
    assert not rclpy.ok()  # shut down on the way out all the same


@pytest.mark.skipif(Imagine is None, reason="astra_ros.msg and astra_ros.srv not built")
def test_ctrl_c_during_a_long_imagine_exits_cleanly_and_soon(node):
    """Ctrl-C while ~/imagine runs a long job: the worker used to be left running torch while the
    interpreter shut down (exit 134 after a 5 s join). The job now stops at its next chunk."""
    feeder, _ = node
    feeder.send_images.set()  # an earlier fault may have stopped the streams
    feeder.send_twists.set()
    name = "astra_ctrlc_test"
    process = start_node([
        console_script("astra-predictor"), "--ros-args", "-r", f"__node:={name}", "-r", "/diagnostics:=/ctrlc/diagnostics",
        "-p", "checkpoint:=random:tiny", "-p", "action_modality:=twist", "-p", "twist_stamped:=true",
        "-p", "context_frames:=4", "-p", "publish_rate:=1.0", "-p", "max_imagine_horizon:=256",
        "-p", "imagine_timeout_s:=600.0",
        "-r", "image:=/faults/image", "-r", "twist:=/faults/twist"], REPO)
    try:
        small = Imagine.Request(modality="twist", actions=[0.0] * 12, batch=1, horizon=2, action_dim=6, seed=1)
        probe = feeder.node.create_client(Imagine, f"/{name}/imagine")
        assert probe.wait_for_service(timeout_sec=60.0), "the node's ~/imagine did not come up"  # a loaded machine
        feeder.node.destroy_client(probe)
        feeder.wait_for(lambda: feeder.call(Imagine, f"/{name}/imagine", small).success, 60.0, "a full window")
        horizon, batch = 256, 16  # minutes of work, under imagine_timeout_s by the cost estimate
        big = Imagine.Request(modality="twist", actions=[0.1] * (batch * horizon * 6), batch=batch, horizon=horizon,
                              action_dim=6, seed=1)
        client = feeder.node.create_client(Imagine, f"/{name}/imagine")
        assert client.wait_for_service(timeout_sec=10.0)
        pending = client.call_async(big)
        time.sleep(2.0)  # the job is running (it takes minutes)
        assert not pending.done(), pending.result().message
        began = time.monotonic()
        process.send_signal(2)  # SIGINT, as Ctrl-C
        returncode = process.wait(timeout=60)
        took = time.monotonic() - began
        feeder.node.destroy_client(client)
    finally:
        output = stop_node(process) if process.poll() is None else (process.log.seek(0), process.log.read())[1]
    assert returncode == 0 and took < 5.0, (returncode, took, output[-3000:])


def test_node_help_lists_the_parameters_without_starting_ros(capsys):
    from astra_ros.ros.parameters import ParamSpec
    from astra_ros.ros.runner import run_node

    def must_not_start():
        raise AssertionError("--help started the node")

    parameters = {"horizon": ParamSpec(4, "frames predicted ahead", (1, 64))}
    for flag in ("--help", "-h"):
        assert run_node(must_not_start, must_not_start, "help_check", ["prog", flag, "--ros-args", "-p", "x:=1"],
                        usage="The node.", parameters=parameters) == 0
        out = capsys.readouterr().out
        assert out.startswith("The node.") and "horizon (default 4, in [1, 64])" in out and "--params-file" in out
    assert not rclpy.ok()


def test_a_missing_params_file_is_one_fatal_line(capfd):
    from astra_ros.ros.runner import run_node

    def must_not_start():
        raise AssertionError("the node started without its parameters")

    status = run_node(must_not_start, must_not_start, "params_check",
                      ["prog", "--ros-args", "--params-file", "/nonexistent/params.yaml"])
    err = capfd.readouterr().err
    fatal = [line for line in err.splitlines() if "[FATAL]" in line]
    assert status == 1 and len(fatal) == 1 and "Traceback" not in err
    assert fatal[0].startswith("[FATAL] [params_check]: cannot start") and "/nonexistent/params.yaml" in fatal[0]
    assert "parser.c" not in fatal[0]


def test_a_misspelt_parameter_is_named_with_the_closest_declared_one(capfd):
    from rclpy.executors import SingleThreadedExecutor

    from astra_ros.ros.parameters import ParamSpec
    from astra_ros.ros.runner import run_node

    class StopAtOnce(SingleThreadedExecutor):
        def spin(self) -> None:
            raise KeyboardInterrupt

    def make_node():
        node = rclpy.create_node("spelling_check")
        node.declare_parameter("horizon", 4)
        return node

    parameters = {"horizon": ParamSpec(4, "frames predicted ahead")}
    assert run_node(make_node, StopAtOnce, "spelling_check", ["prog", "--ros-args", "-p", "horizn:=3", "-p", "horizon:=5"],
                    parameters=parameters) == 0
    err = capfd.readouterr().err
    assert "ignoring parameter 'horizn'" in err and "did you mean horizon?" in err
    assert "'horizon'" not in err  # the declared one is not warned about


def test_re_applying_a_parameter_value_changes_nothing():
    """rqt or `ros2 param load` of the running file sets every parameter to the value it has: that must
    not clear the history (a pause of a whole window) or restart the pairing; a real change still does."""
    from rclpy.parameter import Parameter

    from astra_ros.ros.predictor_node import PredictorNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = PredictorNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value="random:tiny"), Parameter("action_modality", value="camera")])
    try:
        clears = []
        node._clear_history = lambda: clears.append(1)
        pairer = node._pairer
        same = [Parameter(name, value=node._params[name]) for name in ("action_modality", "twist_source", "sync_slop_s")]
        assert all(r.successful for r in node.set_parameters(same))
        assert clears == [] and node._pairer is pairer
        node.set_parameters([Parameter("twist_source", value="odom")])  # camera actions do not read twists
        assert clears == [] and node._params["twist_source"] == "odom"
        node.set_parameters([Parameter("action_modality", value="twist")])
        assert clears == [1]
        node.set_parameters([Parameter("twist_source", value="twist")])  # now it feeds the model
        assert clears == [1, 1]
        node.set_parameters([Parameter("sync_slop_s", value=0.2)])
        assert node._pairer is not pairer
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
