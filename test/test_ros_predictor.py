"""The predictor node with real rclpy and DDS: the node runs as its own process, this test publishes to it.

The environment (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a ROS_DOMAIN_ID of this run) comes from
conftest.py and is inherited by the node process.
"""

import os
import threading
import time

import numpy as np
import pytest
from node_process import console_script, start_node, stop_node

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from ros_harness import NODE, REPO, RELIABLE, Imagine, PredictedFrames, TestNode  # noqa: E402

HORIZON_S = 0.3
INTERVAL_S = 0.1  # the tiny model's frame interval (its config's frame_interval_s)
CAMERA_HZ = 10.0
IMAGE_SIZE = (48, 64)  # (H, W): not the model's 32x32, so the node must resize


class Harness(TestNode):
    """A test node that feeds the predictor synthetic camera frames and twists, and records its outputs."""

    def __init__(self) -> None:
        super().__init__("astra_predictor_test")
        self.predicted: list[Image] = []
        self.montages: list[Image] = []
        self.frames: list = []
        self.diagnostics: list[DiagnosticArray] = []
        self.published_stamps_ns: list[int] = []
        self.image_pub = self.node.create_publisher(Image, "/test/image", RELIABLE)
        self.twist_pub = self.node.create_publisher(Twist, "/test/cmd_vel", RELIABLE)
        self.pose_pub = self.node.create_publisher(PoseStamped, "/test/pose", RELIABLE)
        self.record(Image, f"{NODE}/predicted/image", self.predicted)
        self.record(Image, f"{NODE}/predicted/montage", self.montages)
        self.record(DiagnosticArray, "/diagnostics", self.diagnostics)
        self.received_frames: list[tuple[int, object]] = []  # (client clock when received [ns], PredictedFrames)
        if PredictedFrames is not None:
            self.record(PredictedFrames, f"{NODE}/predicted/frames", self.frames)
            self.record(PredictedFrames, f"{NODE}/predicted/frames", self.received_frames,
                        keep=lambda msg: (self.now_ns(), msg))
        self.feeding = threading.Event()  # set: publish camera frames and twists at CAMERA_HZ
        self.send_twist = threading.Event()
        self.send_twist.set()
        self.send_pose = threading.Event()
        self.start_loop(self._feed)

    def image(self, stamp_ns: int, encoding: str = "rgb8") -> Image:
        height, width = IMAGE_SIZE
        channels = {"rgb8": 3, "bgra8": 4, "mono8": 1, "32FC1": 4}[encoding]
        msg = Image(height=height, width=width, encoding=encoding, step=width * channels + 8)  # padded rows
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = "test_camera"
        msg.data = self.rng.integers(0, 255, height * msg.step, dtype=np.uint8).tobytes()
        return msg

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _feed(self) -> None:
        while not self.stopping.is_set():
            if self.feeding.is_set():
                if self.send_twist.is_set():
                    twist = Twist()
                    twist.linear.x, twist.angular.z = 0.4, 0.2
                    self.twist_pub.publish(twist)
                stamp = self.now_ns()
                if self.send_pose.is_set():  # a camera moving forward (optical z) 5 cm per frame
                    pose = PoseStamped()
                    pose.header.stamp.sec, pose.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                    pose.header.frame_id = "world"
                    pose.pose.position.z = 0.05 * len(self.published_stamps_ns)
                    pose.pose.orientation.w = 1.0
                    self.pose_pub.publish(pose)
                self.image_pub.publish(self.image(stamp, "bgra8" if len(self.published_stamps_ns) % 2 else "rgb8"))
                with self.lock:
                    self.published_stamps_ns.append(stamp)
            time.sleep(1.0 / CAMERA_HZ)

    def count(self, store: list) -> int:
        with self.lock:
            return len(store)

    def diagnostic_values(self) -> dict[str, str]:
        """Key/values of the newest /diagnostics message from the predictor (all statuses merged)."""
        with self.lock:
            arrays = [a for a in self.diagnostics if any(s.hardware_id == "astra_predictor" for s in a.status)]
        if not arrays:
            return {}
        return {v.key: v.value for status in arrays[-1].status for v in status.values} | {
            f"level:{status.name}": str(status.level[0] if isinstance(status.level, bytes) else status.level)
            for status in arrays[-1].status
        }


@pytest.fixture(scope="module")
def predictor():
    """The predictor process (tiny random model, twist modality) and a harness feeding it."""
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    command = [
        console_script("astra-predictor"), "--ros-args", "--params-file", str(REPO / "config" / "predictor.yaml"),
        "-p", "checkpoint:=random:tiny", "-p", "action_modality:=twist", "-p", f"horizon_s:={HORIZON_S}",
        "-p", "context_frames:=4", "-p", "publish_rate:=4.0", "-p", "input_timeout_s:=1.0",
        "-p", "sync_slop_s:=0.2",
        "-r", "image:=/test/image", "-r", "twist:=/test/cmd_vel", "-r", "pose:=/test/pose", "-r", "odom:=/test/odom",
    ]
    process = start_node(command, REPO)
    harness = Harness()
    harness.feeding.set()
    try:
        yield harness, process
    finally:
        harness.close()
        print(stop_node(process))


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_predicted_frames_arrive_with_future_stamps(predictor):
    """Every published frame shows a time still to come when this client receives it, on the model's grid."""
    harness, process = predictor
    harness.wait_for(lambda: harness.count(harness.predicted) >= 8 or process.poll() is not None,
                     40.0, "predicted frames")
    assert process.poll() is None, "the predictor exited"
    with harness.lock:
        predicted = list(harness.predicted)
        montages = list(harness.montages)
        published = set(harness.published_stamps_ns)
    for msg in predicted:
        assert (msg.height, msg.width, msg.encoding, msg.step) == (32, 32, "rgb8", 96)
        assert len(msg.data) == 32 * 32 * 3
        assert msg.header.frame_id == "test_camera"
    assert montages, "no montage"
    assert _stamp_ns(montages[0]) == _stamp_ns(predicted[0])  # stamped with the first frame it shows
    assert _stamp_ns(montages[0]) not in published  # a forecast, not an observed frame


@pytest.mark.skipif(PredictedFrames is None, reason="the interfaces are not built (scripts/setup.sh builds them)")
def test_forecasts_lead_the_clock_and_cover_the_horizon(predictor):
    harness, _ = predictor
    harness.wait_for(lambda: harness.count(harness.received_frames) >= 3, 30.0, "PredictedFrames messages")
    with harness.lock:
        received = list(harness.received_frames)
    for received_ns, msg in received:
        stamps = np.array([s.sec * 1_000_000_000 + s.nanosec for s in msg.stamps])
        observed = msg.observed_stamp.sec * 1_000_000_000 + msg.observed_stamp.nanosec
        anchor = _stamp_ns(msg)
        assert stamps[0] > received_ns, "the first frame shows a time already past when the client got it"
        assert stamps[-1] - received_ns >= 0.8 * HORIZON_S * 1e9  # covers the horizon (less transport)
        assert observed < anchor < stamps[0]  # anchored at the present, after the newest observed frame
        # On the model's grid from the observed frame, the catch-up frames left out.
        steps = (stamps - observed) / (INTERVAL_S * 1e9)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert msg.frame_interval_s == pytest.approx(INTERVAL_S)
        assert round(steps[0]) == msg.catch_up_frames + 1


@pytest.mark.skipif(PredictedFrames is None, reason="astra_ros.msg and astra_ros.srv not built (scripts/setup.sh builds it)")
def test_predicted_frames_message_holds_the_whole_horizon(predictor):
    harness, _ = predictor
    harness.wait_for(lambda: harness.count(harness.frames) >= 1, 30.0, "a PredictedFrames message")
    with harness.lock:
        msg = harness.frames[-1]
    n = len(msg.frames)
    assert n == len(msg.stamps) >= round(HORIZON_S / INTERVAL_S)
    assert msg.modality == "twist" and msg.action_dim == 6 and len(msg.actions) == n * 6
    # 0.4 m/s forward held for the horizon, times the model's frame interval (0.1 s).
    np.testing.assert_allclose(np.asarray(msg.actions).reshape(n, 6)[:, 0], 0.04, rtol=1e-5)


def test_bad_inputs_are_counted_and_prediction_continues(predictor):
    harness, process = predictor
    harness.wait_for(lambda: harness.count(harness.predicted) >= 3, 40.0, "first predictions")
    now = harness.now_ns()
    harness.image_pub.publish(harness.image(now, "32FC1"))  # unsupported encoding
    harness.image_pub.publish(harness.image(now - 5_000_000_000))  # 5 s in the past: stamps backwards
    nan_pose = PoseStamped()
    nan_pose.header.stamp.sec, nan_pose.header.stamp.nanosec = divmod(now, 1_000_000_000)
    nan_pose.pose.position.x = float("nan")
    nan_pose.pose.orientation.w = 1.0
    harness.pose_pub.publish(nan_pose)

    def counted() -> bool:
        values = harness.diagnostic_values()
        return all(int(values.get(f"dropped_{reason}", 0)) >= 1
                   for reason in ("image_decode_error", "image_stamp_backwards", "pose_not_finite"))

    harness.wait_for(counted, 15.0, "the bad inputs in /diagnostics")
    values = harness.diagnostic_values()
    assert float(values["rate_image_hz"]) > 2.0 and float(values["rate_twist_hz"]) > 2.0
    assert "twist_expert_0" in values and "latency_last_s" in values
    before = harness.count(harness.predicted)
    harness.wait_for(lambda: harness.count(harness.predicted) >= before + 6, 20.0, "predictions after bad inputs")

    # A silent twist topic is reported (and counted once), then predictions resume when it returns.
    harness.send_twist.clear()
    harness.wait_for(lambda: int(harness.diagnostic_values().get("dropped_twist_timeout", 0)) >= 1, 10.0,
                     "the twist timeout in /diagnostics")
    assert harness.diagnostic_values()["level:astra_predictor: inputs"] == "1"  # WARN
    harness.send_twist.set()
    before = harness.count(harness.predicted)
    harness.wait_for(lambda: harness.count(harness.predicted) >= before + 3, 20.0, "predictions after the timeout")
    assert process.poll() is None


def _set_parameter(harness: Harness, name: str, value) -> object:
    parameter_value = ParameterValue()
    if isinstance(value, str):
        parameter_value.type, parameter_value.string_value = ParameterType.PARAMETER_STRING, value
    else:
        parameter_value.type, parameter_value.double_value = ParameterType.PARAMETER_DOUBLE, float(value)
    request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=parameter_value)])
    return harness.call(SetParameters, f"{NODE}/set_parameters", request).results[0]


def test_bad_parameter_values_are_refused_with_a_reason(predictor):
    harness, _ = predictor
    result = _set_parameter(harness, "action_modality", "smell")
    assert not result.successful and "smell" in result.reason and "twist" in result.reason
    result = _set_parameter(harness, "publish_rate", -1.0)
    assert not result.successful and result.reason
    result = _set_parameter(harness, "checkpoint", "elsewhere")
    assert not result.successful and "read-only" in result.reason
    result = _set_parameter(harness, "input_timeout_s", 1.5)
    assert result.successful
    result = _set_parameter(harness, "guidance_scale", -2.0)
    assert not result.successful and "guidance_scale" in result.reason
    result = _set_parameter(harness, "guidance_scale", 1.0)  # guidance off: live predictions go on
    assert result.successful
    result = _set_parameter(harness, "publish_rate", 5.0)  # the prediction timer is replaced
    assert result.successful
    before = harness.count(harness.predicted)
    harness.wait_for(lambda: harness.count(harness.predicted) >= before + 3, 20.0, "predictions at the new rate")


@pytest.mark.skipif(Imagine is None, reason="astra_ros.msg and astra_ros.srv not built (scripts/setup.sh builds it)")
def test_imagine_returns_a_batch_of_futures_and_refuses_malformed_requests(predictor):
    harness, _ = predictor
    harness.wait_for(lambda: harness.count(harness.predicted) >= 3, 40.0, "first predictions")
    batch, horizon = 4, 5
    actions = np.zeros((batch, horizon, 6), np.float32)
    actions[:, :, 0] = np.linspace(-0.6, 0.6, batch)[:, None]  # [m/s]
    request = Imagine.Request(modality="twist", actions=actions.reshape(-1).tolist(), batch=batch, horizon=horizon,
                              action_dim=6, seed=3, from_live_history=True)
    asked_ns = harness.now_ns()
    response = harness.call(Imagine, f"{NODE}/imagine", request)
    assert response.success, response.message
    assert (response.batch, response.horizon, len(response.frames)) == (batch, horizon, batch * horizon)
    frames = np.stack([np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width, 3) for m in response.frames])
    frames = frames.reshape(batch, horizon, 32, 32, 3).astype(int)
    for a in range(batch):
        for b in range(a + 1, batch):
            assert np.abs(frames[a] - frames[b]).mean() > 0.5, f"futures {a} and {b} are the same"
    assert response.latency_s > 0
    stamps = [_stamp_ns(m) for m in response.frames[:horizon]]
    np.testing.assert_allclose(np.diff(stamps), INTERVAL_S * 1e9, atol=2)  # on the model's grid
    assert response.frame_interval_s == pytest.approx(INTERVAL_S)
    assert stamps[0] > asked_ns - INTERVAL_S * 1e9  # from now: the catch-up came first

    # The planner's fast path (test_imagine_draft.py checks what it computes): each candidate's last frame.
    actions[:, :, 5] = np.linspace(-0.8, 0.8, batch)[:, None]  # [rad/s]
    draft = Imagine.Request(modality="twist", actions=actions.reshape(-1).tolist(), batch=batch, horizon=horizon,
                            action_dim=6, seed=3, from_live_history=True, shared_noise=True, last_frame_only=True,
                            draft=True)
    response = harness.call(Imagine, f"{NODE}/imagine", draft)
    assert response.success, response.message
    assert (response.frames_per_candidate, len(response.frames)) == (1, batch)
    assert all((m.height, m.width, m.encoding) == (32, 32, "rgb8") for m in response.frames)
    assert _stamp_ns(response.frames[0]) == _stamp_ns(response.frames[-1])  # every candidate's same last frame

    # Velocities beyond what the model was trained on are refused with the reason, not answered black.
    wild = Imagine.Request(modality="twist", actions=[1e30] + [0.0] * 5, batch=1, horizon=1, action_dim=6)
    response = harness.call(Imagine, f"{NODE}/imagine", wild)
    assert not response.success and "trained up to" in response.message

    bad = Imagine.Request(modality="twist", actions=[0.0] * 7, batch=1, horizon=2, action_dim=6, seed=-1)
    response = harness.call(Imagine, f"{NODE}/imagine", bad)
    assert not response.success and "12 values" in response.message
    too_many = Imagine.Request(modality="twist", actions=[0.0] * (100 * 6), batch=100, horizon=1, action_dim=6)
    response = harness.call(Imagine, f"{NODE}/imagine", too_many)
    assert not response.success and "max_imagine_batch" in response.message
    before = harness.count(harness.predicted)
    harness.wait_for(lambda: harness.count(harness.predicted) >= before + 3, 20.0, "live predictions after imagine")


def test_reset_clears_the_history_and_prediction_resumes(predictor):
    harness, _ = predictor
    response = harness.call(Trigger, f"{NODE}/reset", Trigger.Request())
    assert response.success and "cleared" in response.message
    before = harness.count(harness.predicted)
    harness.wait_for(lambda: harness.count(harness.predicted) >= before + 3, 20.0, "predictions after reset")


@pytest.mark.skipif(PredictedFrames is None, reason="astra_ros.msg and astra_ros.srv not built (scripts/setup.sh builds it)")
def test_switching_to_camera_actions_predicts_from_poses(predictor):
    harness, process = predictor
    harness.send_pose.set()
    result = _set_parameter(harness, "action_modality", "camera")  # the history restarts with camera actions
    assert result.successful, result.reason
    try:
        harness.wait_for(lambda: harness.count(harness.frames) and harness.frames[-1].modality == "camera", 30.0,
                         "predictions from camera actions")
        with harness.lock:
            msg = harness.frames[-1]
        actions = np.asarray(msg.actions).reshape(-1, 12)
        assert msg.action_dim == 12 and len(actions) >= 3
        # Extrapolated forward motion: each future frame is further along +z than the window's first one.
        assert np.all(np.diff(actions[:, 11]) > 0.0)
    finally:
        assert _set_parameter(harness, "action_modality", "twist").successful
        harness.send_pose.clear()
    assert process.poll() is None


@pytest.mark.skipif(PredictedFrames is None, reason="astra_ros.msg and astra_ros.srv not built (scripts/setup.sh builds it)")
def test_poses_that_start_late_do_not_read_as_a_jump(predictor):
    """Camera actions with no pose yet: the window is filled with the identity pose (no motion). The
    first real pose is metres away (the harness's camera has been moving all along); kept next to the
    identity frames it read as one huge step, and the constant-velocity future flew off with it."""
    harness, process = predictor
    harness.send_pose.clear()
    result = _set_parameter(harness, "action_modality", "camera")
    assert result.successful, result.reason
    try:
        harness.wait_for(lambda: harness.diagnostic_values().get("fallback_active") == "true", 20.0,
                         "the pose fallback")
        with harness.lock:
            seen = len(harness.frames)
            far = 0.05 * len(harness.published_stamps_ns)
        assert far > 1.0  # the first pose will be this far along z from the identity
        harness.send_pose.set()
        harness.wait_for(lambda: harness.diagnostic_values().get("fallback_active") == "false", 20.0, "poses back")
        harness.wait_for(lambda: harness.count(harness.frames) >= seen + 6, 30.0, "predictions after the poses returned")
        with harness.lock:
            after = [m for m in harness.frames[seen:] if m.modality == "camera"]
        steps = [np.abs(np.asarray(m.actions).reshape(-1, 12)[:, [3, 7, 11]]).max() for m in after]  # [R|t]: t
        # 5 cm per frame over a window of 4, the catch-up and 0.3 s: well under a metre from its first frame
        assert after and max(steps) < 1.0, steps
    finally:
        harness.send_pose.clear()
        assert _set_parameter(harness, "action_modality", "twist").successful
    assert process.poll() is None
