"""The predictor's /diagnostics as a robot monitor reads it: still sent when /clock never comes, named
by namespace, and not green while every image is refused or forecasts fall short of horizon_s."""

import time
import types

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from node_process import console_script, start_node, stop_node  # noqa: E402
from ros_harness import REPO, TestNode  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from astra_ros.ros.conversions import rgb_to_image_msg  # noqa: E402


def test_diagnostics_go_on_without_clock_and_carry_the_namespace():
    """use_sim_time:=true and no /clock: the node clock stands at 0. The 1 Hz diagnostics ran on that clock
    and never fired; now they come, say why nothing is placed in time, and name robot1's node."""
    process = start_node([console_script("astra-predictor"), "--ros-args", "-r", "__ns:=/robot1",
                          "-p", "checkpoint:=random:tiny", "-p", "use_sim_time:=true"], REPO)
    client = TestNode("diagnostics_client")
    arrays: list = []
    try:
        client.record(DiagnosticArray, "/diagnostics", arrays)
        client.wait_for(lambda: any(s.name == "robot1/astra_predictor: inputs" for a in list(arrays) for s in a.status),
                        60.0, "robot1's predictor diagnostics")
        inputs = [s for a in list(arrays) for s in a.status if s.name == "robot1/astra_predictor: inputs"][-1]
        assert inputs.hardware_id == "robot1/astra_predictor"
        assert inputs.level == DiagnosticStatus.WARN
        assert "use_sim_time is true but no /clock has arrived" in inputs.message
    finally:
        client.close()
        output = stop_node(process)
    assert "no /clock has arrived" in output


def _tick(node) -> dict[str, DiagnosticStatus]:
    sent = []
    node._diagnostics_pub = types.SimpleNamespace(publish=sent.append)
    node._on_diagnostics_tick()
    return {status.name: status for status in sent[-1].status}


def _in_process(**overrides):
    from astra_ros.ros.predictor_node import PredictorNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = PredictorNode(context=context, parameter_overrides=[Parameter("checkpoint", value="random:tiny")] + [
        Parameter(name, value=value) for name, value in overrides.items()])
    node.get_logger = lambda: types.SimpleNamespace(warning=lambda *a, **k: None, info=lambda *a, **k: None,
                                                    error=lambda *a, **k: None)
    return context, node


def test_inputs_warn_while_every_image_is_refused_and_recover():
    context, node = _in_process(input_timeout_s=0.1)
    try:
        stamp = [1_000_000_000]

        def feed(encoding: str) -> None:
            stamp[0] += 100_000_000
            if encoding == "rgb8":
                msg = rgb_to_image_msg(np.zeros((32, 32, 3), np.uint8), stamp[0], "camera")
            else:  # a usb_cam format the node does not decode
                msg = Image(encoding=encoding, width=32, height=32, step=64, data=bytes(32 * 64))
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp[0], 1_000_000_000)
            node._on_image(msg)

        _tick(node)
        for _ in range(3):
            feed("yuv422")
        assert "refused" not in _tick(node)["astra_predictor: inputs"].message  # not yet for input_timeout_s
        time.sleep(0.15)
        feed("yuv422")
        inputs = _tick(node)["astra_predictor: inputs"]
        assert inputs.level == DiagnosticStatus.WARN
        assert "every message on /astra_predictor/image refused" in inputs.message
        assert "image_decode_error" in inputs.message
        feed("rgb8")  # one image gets through: the input is no longer refused
        assert "refused" not in _tick(node)["astra_predictor: inputs"].message
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_prediction_warns_when_a_forecast_falls_short_of_horizon_s():
    context, node = _in_process(horizon_s=2.0)
    try:
        node._predictions = 3
        node._forecast_stats = {"lead_s": 0.05, "latency_s": 4.5, "coverage_s": 0.5, "catch_up_frames": 30.0}
        node._recent_coverage_s.extend([2.1, 0.5, 0.6])
        prediction = _tick(node)["astra_predictor: prediction"]
        assert prediction.level == DiagnosticStatus.WARN
        assert ("forecasts reach only 0.60 s ahead (median of the last 3), less than horizon_s 2 s (the last took "
                "4.50 s") in prediction.message
        node._recent_coverage_s.extend([2.05, 2.1, 1.2, 2.0, 2.1])  # one slow forecast among quick ones is jitter
        node._forecast_stats = {"lead_s": 0.05, "latency_s": 0.3, "coverage_s": 2.1, "catch_up_frames": 3.0}
        prediction = _tick(node)["astra_predictor: prediction"]
        assert prediction.level == DiagnosticStatus.OK and "horizon_s" not in prediction.message
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_refusals_count_only_while_messages_keep_arriving_on_watched_streams():
    from astra_ros.ros.input_accounting import RefusalWatch

    watch = RefusalWatch()
    received = {"image": 0, "twist": 0}
    assert watch.refusing(received, 0.0, 2.0) == {}
    for second in (1.0, 2.0, 3.0):  # every image refused, the twists used
        received["image"] += 10
        received["twist"] += 30
        for _ in range(10):
            watch.refuse("image", "image_decode_error")
        result = watch.refusing(received, second, 2.0)
    assert result == {"image": 2.0}
    assert watch.refusing(received, 4.0, 2.0) == {}  # nothing arrived: a silence, not a refusal
    received["image"] += 5
    watch.refuse("image", "image_decode_error")  # one of five refused: the input works
    assert watch.refusing(received, 5.0, 2.0) == {}
    received["image"] += 1
    watch.refuse("image", "image_decode_error")
    watch.refusing(received, 6.0, 2.0)
    assert watch.refusing({"twist": received["twist"]}, 9.0, 2.0) == {}  # image no longer watched
