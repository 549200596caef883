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
import time
from pathlib import Path

import numpy as np
import pytest
from node_process import console_script, start_node, stop_node

rclpy = pytest.importorskip("rclpy")

from fault_feeder import CAMERA_HZ, Feeder, stamp_ns  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from ros_harness import NODE, REPO, Imagine, PredictedFrames  # noqa: E402

HORIZON_S = 0.3
MAX_BATCH, MAX_HORIZON = 4, 6


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
    feeder.wait_for(lambda: feeder.count() and stamp_ns(feeder.frames[-1][1].observed_stamp) >= jumped_at, 15.0,
                    "predictions from the restarted stream")
    feeder.wait_for_predictions(2)
    with feeder.lock:
        observed = [stamp_ns(m.observed_stamp) for _, m in feeder.frames[-2:]]
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
