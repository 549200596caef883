"""Defects of the predictor found from outside, each called directly on an in-process node (exact sequences)."""

import contextlib
import time
import types

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402


class _Log:
    """Stands in for a node's logger: keeps what was logged, by level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str):
        return lambda message, **_: self.lines.append((level, message))


@contextlib.contextmanager
def _node(**overrides):
    from astra_ros.ros.predictor_node import PredictorNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = PredictorNode(context=context, parameter_overrides=[Parameter("checkpoint", value="random:tiny")] + [
        Parameter(name, value=value) for name, value in overrides.items()])
    log = _Log()
    node.get_logger = lambda: log
    try:
        yield node, log
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_a_garbage_lost_message_count_is_not_summed():
    """Fast DDS reported total_count_change = 2**31 + n after ~1,100 images; the sum became 2,147,484,221."""
    with _node() as (node, _):
        node._on_lost("image", types.SimpleNamespace(total_count_change=2**31 + 573, total_count=2**31 + 573))
        node._on_lost("image", types.SimpleNamespace(total_count_change=-5, total_count=0))
        node._on_lost("image", types.SimpleNamespace(total_count_change=3, total_count=3))
        assert node._lost["image"] == 3


def test_a_nan_camera_info_warns_once_and_absurd_focal_lengths_are_refused():
    with _node() as (node, log):
        info = CameraInfo(width=64, height=48)
        info.k = [float("nan"), 0.0, 32.0, 0.0, 40.0, 24.0, 0.0, 0.0, 1.0]
        for _ in range(5):
            node._on_camera_info(info)
        assert sum("camera_info ignored" in m for _, m in log.lines) == 1
        for fx in (1e-12, 1e300):
            info = CameraInfo(width=64, height=48)
            info.k = [fx, 0.0, 32.0, 0.0, fx, 24.0, 0.0, 0.0, 1.0]
            node._on_camera_info(info)
        refusals = [m for _, m in log.lines if "camera_info ignored" in m]
        assert len(refusals) == 3 and all("outside" in m for m in refusals[1:])
        assert node._intrinsics_source.startswith("default")


def test_a_failed_forecast_is_reported_with_its_type_and_a_shutdown_stays_quiet():
    """SIGTERM during a prediction logged an empty "[ERROR] prediction failed:" and an rcl context error."""
    from astra_ros.model.world_model import ImagineCancelled

    with _node() as (node, log):
        node._on_forecast_error(RuntimeError())
        assert ("error", "prediction failed: RuntimeError") in log.lines
        assert node._skipped["model_error"] == 1 and node._last_error == "RuntimeError"
        node._on_forecast_error(ImagineCancelled("the node is shutting down"))
        assert len(log.lines) == 1 and node._skipped["model_error"] == 1


def test_the_model_runs_where_the_device_parameter_says():
    with _node(device="cpu", num_threads=1) as (node, _):
        assert str(node._model.device) == "cpu" and node._threads == 1
    import torch

    if not torch.cuda.is_available():
        from astra_ros.ros.runner import StartupError

        with pytest.raises(StartupError, match="no CUDA device"):
            with _node(device="cuda"):
                pass


def test_compile_is_asked_for_at_startup_and_a_failure_leaves_the_node_running_eagerly(monkeypatch, broken_torch_compile):
    """compile:=true compiles the convolution stacks before any thread runs the model; where torch.compile
    cannot work the node still starts, eagerly (the real compile is tested in test_compiled.py)."""
    import torch

    from astra_ros.model.compiled import compilable_modules

    with _node(compile=True) as (node, _):  # the broken compiler first
        assert not any("forward" in vars(m) for m in compilable_modules(node._model).values())
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # stands in for a compiler: the same function
    with _node(compile=True) as (node, _):
        assert all("forward" in vars(m) for m in compilable_modules(node._model).values())
    with _node() as (node, _):  # off by default
        assert not any("forward" in vars(m) for m in compilable_modules(node._model).values())


def test_a_camera_info_of_another_size_than_the_images_is_warned_about():
    """A 640x480 camera_info beside 64x48 images (a resize that left its camera_info behind) was taken silently."""
    import numpy as np

    from astra_ros.ros.conversions import rgb_to_image_msg

    with _node() as (node, log):
        info = CameraInfo(width=640, height=480)
        info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
        node._on_camera_info(info)
        node._on_image(rgb_to_image_msg(np.zeros((48, 64, 3), np.uint8), 1_000_000_000, "camera"))
        warned = [m for level, m in log.lines if level == "warning" and "camera_info is for 640x480" in m]
        assert warned and "the images are 64x48" in warned[0]
        info.width, info.height = 64, 48
        info.k = [50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0]
        node._on_camera_info(info)
        node._on_image(rgb_to_image_msg(np.zeros((48, 64, 3), np.uint8), 1_100_000_000, "camera"))
        assert len([m for _, m in log.lines if "camera_info is for" in m]) == 1
        # A refused camera_info of another size leaves the applied one in use: no size warning about it.
        refused = CameraInfo(width=320, height=240)
        refused.k = [float("nan"), 0.0, 160.0, 0.0, 250.0, 120.0, 0.0, 0.0, 1.0]
        node._on_camera_info(refused)
        assert any("camera_info ignored" in m for _, m in log.lines)
        node._on_image(rgb_to_image_msg(np.zeros((48, 64, 3), np.uint8), 1_200_000_000, "camera"))
        assert not [m for _, m in log.lines if "camera_info is for 320x240" in m]


def test_a_command_stream_that_stopped_is_not_driven_on_in_the_forecast():
    """The last /cmd_vel was 0.5 m/s and nothing came after it: the catch-up frames (command older than
    0.5 s) used zero, then the future frames drove on at 0.5 m/s until input_timeout_s (2 s) of silence."""
    import numpy as np

    with _node(action_modality="twist", input_timeout_s=2.0) as (node, _):
        now_ns = node.get_clock().now().nanoseconds
        drive = np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0])
        node._on_state("twist", now_ns - 1_000_000_000, drive)
        assert node._latest_command is not None and not node._state_silent(time.monotonic())
        assert np.array_equal(node._future_command(), np.zeros(6))  # 1 s old: the base has stopped
        node._on_state("twist", node.get_clock().now().nanoseconds, drive)
        assert np.array_equal(node._future_command(), drive)  # fresh: it holds over the horizon


def test_a_glitched_state_stamp_leaves_the_catch_up_track_too():
    """A twist stamped 5 s ahead, then the stream went on from before it: it left the pairer's queue but
    stayed in the track the catch-up reads (out of time order, which is binary-searched) for ~5 s."""
    import numpy as np

    with _node(action_modality="twist") as (node, log):
        t0 = node.get_clock().now().nanoseconds
        for i, stamp in enumerate((t0, t0 + 100_000_000, t0 + 5_000_000_000, t0 + 200_000_000)):
            node._on_state("twist", stamp, np.full(6, 0.01 * (i + 1)))
        assert any("taken back as a glitch" in m for _, m in log.lines)
        assert [t - t0 for t, _ in node._track] == [0, 100_000_000, 200_000_000]
        assert node._track[-1][1][0] == pytest.approx(0.04)


def test_a_new_frame_in_the_window_wakes_the_live_loop():
    """Nothing called LiveLoop.notify(): a forecast that ended just before a frame waited 0.5 s idle."""
    import numpy as np

    with _node() as (node, _):
        woken = []
        node._loop.notify = lambda: woken.append(True)
        node._add_to_window(1_000_000_000, (np.zeros((48, 64, 3), np.uint8), "camera"), np.eye(4))
        assert woken == [True]


def test_a_profile_s_values_are_what_the_parameters_say(tmp_path):
    """twist_stamped is read-only: setting it from the profile failed silently, so `ros2 param get
    twist_stamped` said false while the node subscribed to TwistStamped."""
    from pathlib import Path

    profile = Path(__file__).resolve().parents[1] / "config" / "robots" / "yard_bot.yaml"
    with _node(profile=str(profile), twist_stamped=False, seed=3) as (node, _):
        assert node.get_parameter("twist_stamped").value is True and node._params["twist_stamped"] is True
        assert node.get_parameter("seed").value == 3  # the overrides the profile does not set still hold
        from geometry_msgs.msg import TwistStamped

        assert any(subscription.msg_type is TwistStamped for subscription in node.subscriptions)


def test_runtime_changes_of_the_catch_up_and_horizon_are_applied_or_said():
    """max_catch_up_s changed at run time never reached the latency estimate (it capped the plans at the
    start-up value), and a larger horizon_s silently outgrew the image publisher's queue."""
    with _node(horizon_s=2.0, max_catch_up_s=3.0) as (node, log):
        assert node._latency.most_s == 3.0
        assert all(r.successful for r in node.set_parameters([Parameter("max_catch_up_s", value=1.5)]))
        assert node._latency.most_s == 1.5 and not [m for level, m in log.lines if level == "warning"]
        assert all(r.successful for r in node.set_parameters([Parameter("horizon_s", value=30.0)]))
        warned = [m for level, m in log.lines if level == "warning" and "queue sized at start-up" in m]
        assert len(warned) == 1 and f"({node._burst_depth})" in warned[0]


def test_an_unexpected_error_in_imagine_is_answered_and_the_service_goes_on():
    """A non-ValueError while preparing a request escaped the service callback, ended the executor's
    spin, and ~/imagine stopped answering with nothing logged."""
    ImagineService = pytest.importorskip("astra_ros.srv").Imagine  # built by scripts/setup.sh

    with _node() as (node, log):
        server = node._imagine

        def broken(request):
            raise KeyError("snapshot")

        server._prepare = broken
        response = server._on_imagine(ImagineService.Request(batch=1, horizon=2), ImagineService.Response())
        assert not response.success and "KeyError" in response.message
        assert any(level == "error" and "KeyError" in m for level, m in log.lines)
        spins = []

        def spin():
            spins.append(1)
            if len(spins) == 1:
                raise RuntimeError("a callback failed")

        server._executor.spin = spin
        server._spin()
        assert len(spins) == 2 and any("RuntimeError: a callback failed (still serving)" in m for _, m in log.lines)
