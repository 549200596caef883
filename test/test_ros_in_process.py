"""The predictor's input accounting, clock checks, publishing, spinning and parameter handling, each called
directly on an in-process node so that the sequence is exact."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from fault_feeder import Feeder  # noqa: E402


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
