"""The predictor's ROS-free parts: stamp pairing, action vectors, window, request checks, worker."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from astra_ros.data.actions import MODALITY_DIMS, camera_actions, keys_from_twist
from astra_ros.data.geometry import pose_to_matrix, yaw_pitch_to_matrix
from astra_ros.model.world_model import ImagineCancelled
from astra_ros.ros.input_accounting import InputMonitor
from astra_ros.ros.predictor_core import (
    ImagineLimits,
    LiveStream,
    ModelWorker,
    ObservationWindow,
    check_imagine_request,
    future_actions,
    imagine_job,
    live_job,
    load_world_model,
    montage,
    predict_window,
    whole_chunks,
    window_actions,
)
from astra_ros.ros.sync import (
    DROP_IMAGE_BACKWARDS,
    DROP_IMAGE_QUEUE_FULL,
    DROP_NO_STATE_IN_SLOP,
    ApproximateTimePairer,
    MonotonicStamps,
)

MS = 1_000_000  # [ns]


# ------------------------------------------------------------------------------------------ sync
def test_pairs_each_image_with_the_nearest_state():
    pairer = ApproximateTimePairer(slop_ns=20 * MS)
    assert pairer.add_image(100 * MS, "a") == []  # no state yet: waits
    assert pairer.add_state(90 * MS, "s90") == []  # still before the image: a later state may be nearer
    pairs = pairer.add_state(125 * MS, "s125")
    assert [(p.image, p.state, p.state_stamp_ns) for p in pairs] == [("a", "s90", 90 * MS)]
    # A state already after the image decides it at once; the nearer of the two neighbours wins.
    pairs = pairer.add_image(120 * MS, "b")
    assert [(p.image, p.state) for p in pairs] == [("b", "s125")]


def test_hold_mode_pairs_each_image_with_the_command_in_force_as_training_does():
    """Commands (twists, keys) pair with the latest command at or before the image, zero once it is
    older than the command timeout: exactly the bag reader's zero-order hold. Nearest-stamp pairing
    gave each image the command sent just after it when commands trail the camera."""
    from astra_ros.data.bags import COMMAND_TIMEOUT_NS, zero_order_hold

    rng = np.random.default_rng(0)
    image_ns = np.cumsum(rng.integers(80, 120, 60)) * MS
    command_ns = np.sort(rng.choice(np.arange(0, int(image_ns[-1] // MS) + 300), 45, replace=False)) * MS
    command_ns = np.concatenate([command_ns[command_ns < 2000 * MS], command_ns[command_ns > 3500 * MS]])  # a pause
    commands = rng.normal(size=(len(command_ns), 6))
    pairer = ApproximateTimePairer(slop_ns=50 * MS, hold_ns=COMMAND_TIMEOUT_NS, stale_state=np.zeros(6),
                                   image_queue_size=100)
    events = sorted([(int(t), 0, i) for i, t in enumerate(image_ns)] + [(int(t) + 40 * MS, 1, i)  # arrive 40 ms late
                    for i, t in enumerate(command_ns)], key=lambda e: e[0])
    pairs = []
    for _, kind, i in events:
        if kind == 0:
            pairs += pairer.add_image(int(image_ns[i]), i)
        else:
            pairs += pairer.add_state(int(command_ns[i]), commands[i])
    decided = np.array([p.image for p in pairs])
    expected = zero_order_hold(command_ns, commands, image_ns, max_age_ns=COMMAND_TIMEOUT_NS)
    np.testing.assert_array_equal(np.stack([p.state for p in pairs]), expected[decided])
    assert len(decided) >= 55 and (np.diff(decided) == 1).all()  # every image up to the last commands
    stale = (expected[decided] == 0).all(axis=1)
    assert pairer.stale_pairs == stale.sum() >= 10  # the pause and the time before the first command
    # the same data paired by nearest stamp differs: it takes commands stamped after the image
    nearest = ApproximateTimePairer(slop_ns=50 * MS, image_queue_size=100)
    near_pairs = []
    for _, kind, i in events:
        near_pairs += (nearest.add_image(int(image_ns[i]), i) if kind == 0
                       else nearest.add_state(int(command_ns[i]), commands[i]))
    assert any(p.state_stamp_ns > p.image_stamp_ns for p in near_pairs)
    with pytest.raises(ValueError, match="stale_state"):
        ApproximateTimePairer(slop_ns=MS, hold_ns=COMMAND_TIMEOUT_NS)


def test_poses_are_interpolated_to_the_image_stamp_as_training_does():
    """Within the slop, an image between two poses takes their interpolation at its stamp, the
    bag reader's interpolate_poses (linear position, slerp); nearest-stamp pairing was off by up to
    velocity x half the pose interval."""
    from scipy.spatial.transform import Rotation

    from astra_ros.data.bags import interpolate_poses
    from astra_ros.data.geometry import interpolate_transform

    rng = np.random.default_rng(4)
    pose_ns = np.cumsum(rng.integers(25, 40, 80)) * MS  # a ~30 Hz pose stream
    positions = np.cumsum(rng.normal(0, 0.03, (80, 3)), axis=0)
    quats = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.05, (80, 3)), axis=0)).as_quat()
    poses = pose_to_matrix(positions, quats)
    image_ns = np.arange(pose_ns[0] + 7 * MS, pose_ns[-1], 100 * MS)
    pairer = ApproximateTimePairer(slop_ns=50 * MS, interpolate=interpolate_transform)
    events = sorted([(int(t), 0, i) for i, t in enumerate(image_ns)] + [(int(t), 1, i) for i, t in enumerate(pose_ns)])
    pairs = []
    for _, kind, i in events:
        pairs += pairer.add_image(int(image_ns[i]), i) if kind == 0 else pairer.add_state(int(pose_ns[i]), poses[i])
    assert [p.image for p in pairs] == list(range(len(image_ns)))
    expected_p, expected_q = interpolate_poses(pose_ns, positions, quats, image_ns, max_extrapolation_ns=0)
    expected = pose_to_matrix(expected_p, expected_q)
    np.testing.assert_allclose(np.stack([p.state for p in pairs]), expected, atol=1e-9)
    assert all(p.state_stamp_ns == p.image_stamp_ns for p in pairs)
    # an image exactly on a pose takes that pose; one beyond the slop is still dropped
    exact = ApproximateTimePairer(slop_ns=10 * MS, interpolate=interpolate_transform)
    exact.add_state(0, poses[0])
    assert exact.add_image(100 * MS, "far") == []
    np.testing.assert_array_equal(exact.add_state(100 * MS, poses[1])[0].state, poses[1])
    exact.add_image(150 * MS, "gap")
    assert exact.add_state(200 * MS, poses[2]) == [] and exact.dropped[DROP_NO_STATE_IN_SLOP] == 1
    with pytest.raises(ValueError, match="not both"):
        ApproximateTimePairer(slop_ns=MS, hold_ns=MS, stale_state=0, interpolate=interpolate_transform)


def test_image_without_state_within_slop_is_dropped_and_counted():
    pairer = ApproximateTimePairer(slop_ns=10 * MS)
    pairer.add_state(0, "s0")
    assert pairer.add_image(50 * MS, "far") == []
    assert pairer.add_state(100 * MS, "s100") == []  # 50 ms from either neighbour
    assert pairer.dropped[DROP_NO_STATE_IN_SLOP] == 1
    assert pairer.pending_images == 0


def test_bounded_image_queue_drops_oldest_when_states_stop():
    pairer = ApproximateTimePairer(slop_ns=10 * MS, image_queue_size=3)
    for k in range(5):
        pairer.add_image(k * 100 * MS, k)
    assert pairer.pending_images == 3
    assert pairer.dropped[DROP_IMAGE_QUEUE_FULL] == 2
    pairs = pairer.add_state(405 * MS, "late")
    assert [p.image for p in pairs] == [4]  # 2 and 3 had no state within the slop
    assert pairer.dropped[DROP_NO_STATE_IN_SLOP] == 2


def test_fast_states_and_a_late_camera_still_pair_every_image():
    """A 1 kHz state topic and a 10 Hz camera whose images arrive 120 ms after they are stamped: a
    state queue sized by count (60) had already dropped the states of every image's time."""
    pairer = ApproximateTimePairer(slop_ns=5 * MS)
    pairs, peak = [], 0
    for t_ms in range(0, 2000):
        pairs += pairer.add_state(t_ms * MS, t_ms)
        if t_ms >= 120 and (t_ms - 120) % 100 == 0:  # the image stamped 120 ms ago arrives now
            pairs += pairer.add_image((t_ms - 120) * MS, f"img{t_ms - 120}")
        peak = max(peak, pairer.queued_states)
    assert pairer.dropped[DROP_NO_STATE_IN_SLOP] == 0
    assert [(p.image, p.state) for p in pairs] == [(f"img{k}", k) for k in range(0, 1880, 100)]
    # kept by time: the camera's latency plus one frame interval of states, not the whole run
    assert 120 <= peak <= 240, peak


def test_states_without_images_are_kept_for_state_history_only():
    pairer = ApproximateTimePairer(slop_ns=MS, state_history_ns=50 * MS, max_states=1000)
    for t_ms in range(500):
        pairer.add_state(t_ms * MS, t_ms)
    assert pairer.queued_states == 52  # 448..499 ms: 50 ms before the second-newest state
    assert [p.state for p in pairer.add_image(460 * MS, "late")] == [460]
    # One state glitched 10 s ahead, then taken back: the states before it are still there.
    pairer.add_state(10_500 * MS, "glitch")
    assert pairer.discard_states_after(499 * MS) == 1
    assert [p.state for p in pairer.add_image(470 * MS, "after the glitch")] == [470]
    capped = ApproximateTimePairer(slop_ns=MS, state_history_ns=10**12, max_states=100)
    for t_ms in range(500):
        capped.add_state(t_ms * MS, t_ms)
    assert capped.queued_states == 100


def test_pairer_refuses_images_out_of_order():
    pairer = ApproximateTimePairer(slop_ns=10 * MS)
    pairer.add_image(100 * MS, "a")
    assert pairer.add_image(90 * MS, "old") == []
    assert pairer.dropped[DROP_IMAGE_BACKWARDS] == 1


def test_monotonic_stamps_refuse_backwards_then_accept_a_restart():
    guard = MonotonicStamps(strict=True, restart_after=3)
    assert guard.accept(10) == "ok"
    # strict: equal is not forward; a frozen stamp is refused for as long as it lasts, never a restart
    assert [guard.accept(10) for _ in range(6)] == ["duplicate"] * 6
    assert guard.accept(5) == "backwards"
    assert guard.accept(4) == "backwards"  # earlier again: not a new timeline yet, the count restarts
    assert guard.accept(5) == "backwards"
    assert guard.accept(6) == "restart"  # third earlier stamp moving forward: time restarted
    assert guard.accept(7) == "ok" and guard.restarts == 1
    loose = MonotonicStamps(strict=False)
    assert loose.accept(1) == "ok" and loose.accept(1) == "ok"


def test_monotonic_stamps_take_back_a_single_stamp_that_jumped_ahead():
    guard = MonotonicStamps(strict=True, restart_after=3, max_jump_ns=100)
    assert [guard.accept(s) for s in (10, 20)] == ["ok", "ok"]
    assert guard.accept(10_000) == "ok"  # far ahead: accepted, but remembered
    assert guard.accept(30) == "jump_undone" and guard.undone_ns == 10_000 and guard.jumps_undone == 1
    assert [guard.accept(s) for s in (40, 50)] == ["ok", "ok"] and guard.restarts == 0
    # a real gap: the stamp after the jump goes on from it, so the jump stands
    assert [guard.accept(s) for s in (20_000, 20_010)] == ["ok", "ok"]
    assert guard.accept(60) == "backwards"
    # between the two but nearer the jump: not the old timeline going on
    gap = MonotonicStamps(strict=True, max_jump_ns=100)
    assert [gap.accept(s) for s in (10, 10_000, 9_000)] == ["ok", "ok", "backwards"]
    # without max_jump_ns nothing is ever taken back
    plain = MonotonicStamps(strict=True, restart_after=3)
    assert [plain.accept(s) for s in (10, 10_000, 30, 40)] == ["ok", "ok", "backwards", "backwards"]


def test_pairer_discards_only_what_is_stamped_after_an_outlier():
    pairer = ApproximateTimePairer(slop_ns=5, image_queue_size=10)
    pairer.add_state(0, "s0")
    pairer.add_state(10, "s10")
    pairer.add_state(500, "s500")  # an outlier state: it decides every image up to 500 at once
    assert pairer.discard_states_after(10) == 1
    assert pairer.add_image(20, "i20") == []  # waits again for a state at or after it
    pairer.add_image(600, "i600")
    assert pairer.discard_images_after(20) == [(600, "i600")]
    assert pairer.pending_images == 1
    decided = pairer.add_state(21, "s21")
    assert [(p.image, p.state) for p in decided] == [("i20", "s21")]


# ------------------------------------------------------------------------------------------ actions
def _camera_poses(count: int, step_m: float = 0.1, yaw_step: float = 0.05) -> np.ndarray:
    """Poses of a body moving at a constant body-frame velocity: T_k = T_0 @ step^k."""
    step = np.eye(4)
    step[:3, :3] = yaw_pitch_to_matrix(yaw_step, 0.0)
    step[:3, 3] = [step_m, 0.0, 0.02]
    poses = [pose_to_matrix(np.array([0.0, 0.2, 1.0]), np.array([0.0, 0.0, 0.3, 0.95]))]
    for _ in range(count - 1):
        poses.append(poses[-1] @ step)
    return np.stack(poses)


def test_window_actions_match_the_training_conversions():
    stamps = np.arange(4) * 100 * MS
    poses = _camera_poses(4)
    np.testing.assert_allclose(window_actions("camera", stamps, poses), camera_actions(poses), atol=1e-6)
    robot = window_actions("robot", stamps, poses)
    assert robot.shape == (4, 10) and np.all(robot[:, 9] == 0.0)
    np.testing.assert_allclose(robot[:, :3], poses[:, :3, 3], atol=1e-6)
    twists = np.tile([0.5, 0.0, 0.0, 0.0, 0.0, 0.3], (4, 1))
    np.testing.assert_allclose(window_actions("twist", stamps, twists)[:, 0], 0.05, atol=1e-6)  # 0.5 m/s x 0.1 s
    keys = window_actions("keys", stamps, twists)
    np.testing.assert_array_equal(keys, keys_from_twist(twists[:, :3], twists[:, 3:]))


def test_future_actions_extrapolate_poses_and_hold_the_latest_command():
    stamps = np.arange(6) * 100 * MS
    poses = _camera_poses(6)
    window, horizon = poses[:4], 2
    future = future_actions("camera", stamps[:4], window, horizon)
    # Constant velocity: the future is the true continuation of this uniform motion.
    np.testing.assert_allclose(future, camera_actions(poses)[4:6], atol=1e-6)
    robot = future_actions("robot", stamps[:4], window, horizon)
    np.testing.assert_allclose(robot[:, :3], poses[4:6, :3, 3], atol=1e-6)
    twists = np.zeros((4, 6))
    command = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    held = future_actions("twist", stamps[:4], twists, 3, latest_command=command)
    np.testing.assert_allclose(held, np.tile([0, 0, 0, 0, 0, 0.1], (3, 1)), atol=1e-6)
    keys = future_actions("keys", stamps[:4], twists, 3, latest_command=command)
    assert keys.shape == (3, MODALITY_DIMS["keys"]) and np.all(keys[:, 4] == 1.0)  # turn_left


def test_future_poses_continue_at_the_frame_interval_after_a_dropped_frame():
    """Frames at 0, 100, 200, 300 and 500 ms (the one at 400 dropped) of a uniform motion: the future
    frames come every 100 ms (the median), so they continue the motion by one step each, not by the
    two steps the last pair spans (which the extrapolation used to repeat)."""
    poses = _camera_poses(9)
    kept = [0, 1, 2, 3, 5]
    stamps = np.array(kept) * 100 * MS
    for modality in ("camera", "robot"):
        future = future_actions(modality, stamps, poses[kept], 3)
        if modality == "camera":
            np.testing.assert_allclose(future, camera_actions(poses)[6:9], atol=1e-6)
        else:
            np.testing.assert_allclose(future[:, :3], poses[6:9, :3, 3], atol=1e-6)


def test_scale_motion_is_the_screw_power_of_a_rigid_motion():
    from scipy.linalg import expm, logm

    from astra_ros.data.geometry import axis_angle_to_matrix, scale_motion

    rng = np.random.default_rng(3)
    for angle in (0.0, 1e-9, 0.4, 2.8):
        motion = np.eye(4)
        motion[:3, :3], motion[:3, 3] = axis_angle_to_matrix(rng.normal(size=3), angle), rng.normal(size=3)
        for factor in (0.0, 0.5, 1.0, 2.0, 2.7):
            np.testing.assert_allclose(scale_motion(motion, factor), expm(factor * logm(motion).real), atol=1e-9)
        half = scale_motion(motion, 0.5)
        np.testing.assert_allclose(half @ half, motion, atol=1e-12)


def test_window_snapshot_and_future_stamps():
    window = ObservationWindow(3, (32, 32))
    with pytest.raises(ValueError, match="window has 0 of 3"):
        window.snapshot("twist", 2)
    for k in range(4):
        window.add(k * 100 * MS, np.full((48, 64, 3), k, np.uint8), np.array([0.5, 0, 0, 0, 0, 0.0]), "cam")
    snapshot = window.snapshot("twist", 2)
    assert snapshot.frames.shape == (3, 32, 32, 3) and snapshot.actions.shape == (3, 6)
    assert snapshot.frame_interval_s == pytest.approx(0.1) and snapshot.frame_id == "cam"
    np.testing.assert_array_equal(snapshot.future_stamps_ns(2), [400 * MS, 500 * MS])
    with pytest.raises(ValueError):
        ObservationWindow(1, (32, 32))


def test_check_imagine_request_names_what_is_wrong():
    limits = ImagineLimits(max_batch=4, max_horizon=5)
    good = check_imagine_request(np.zeros(2 * 3 * 6), batch=2, horizon=3, action_dim=6, expected_dim=6, limits=limits)
    assert good.shape == (2, 3, 6)
    assert check_imagine_request(np.zeros(6), batch=1, horizon=1, action_dim=6, expected_dim=6, limits=limits,
                                 denoise_steps=64, guidance_scale=3.0).shape == (1, 1, 6)
    cases = [
        (dict(batch=5, horizon=3, action_dim=6), np.zeros(90), "max_imagine_batch=4"),
        (dict(batch=1, horizon=6, action_dim=6), np.zeros(36), "max_imagine_horizon=5"),
        (dict(batch=1, horizon=3, action_dim=7), np.zeros(21), "action_dim must be 6"),
        (dict(batch=2, horizon=3, action_dim=6), np.zeros(35), "= 36 values, got 35"),
        (dict(batch=1, horizon=1, action_dim=6), np.array([0, 0, np.nan, 0, 0, 0.0]), "NaN"),
        # a NaN guidance scale gave black frames; an unbounded step count held the model worker for days
        (dict(batch=1, horizon=1, action_dim=6, guidance_scale=float("nan")), np.zeros(6), "guidance_scale must be finite"),
        (dict(batch=1, horizon=1, action_dim=6, guidance_scale=-1.0), np.zeros(6), "guidance_scale"),
        (dict(batch=1, horizon=1, action_dim=6, denoise_steps=65), np.zeros(6), "max_imagine_steps=64"),
    ]
    for sizes, actions, message in cases:
        with pytest.raises(ValueError, match=message):
            check_imagine_request(actions, expected_dim=6, limits=limits, **sizes)


def test_montage_puts_the_observed_frame_first():
    observed = np.full((64, 64, 3), 7, np.uint8)
    predicted = np.full((3, 32, 32, 3), 200, np.uint8)
    image = montage(observed, predicted, gap_px=2)
    assert image.shape == (32, 4 * 32 + 3 * 2, 3)
    assert np.all(image[:, :32] == 7) and np.all(image[:, 34:66] == 200)


def test_input_monitor_rates_and_silences():
    monitor = InputMonitor(("image", "twist"), now_s=0.0)
    for k in range(10):
        monitor.arrived("image", 0.1 * k)
    assert monitor.rates_hz(1.0)["image"] == pytest.approx(10.0)
    assert monitor.newly_silent(("image", "twist"), 1.5, timeout_s=1.0) == (["twist"], ["twist"])
    assert monitor.newly_silent(("image", "twist"), 1.6, timeout_s=1.0) == ([], ["twist"])  # reported once
    went, silent = monitor.newly_silent(("image", "twist"), 3.0, timeout_s=1.0)
    assert went == ["image"] and set(silent) == {"image", "twist"}


def test_model_worker_runs_jobs_in_its_thread_and_skips_when_busy():
    started, release = threading.Event(), threading.Event()
    worker = ModelWorker("model", queue_size=1)

    def blocking_job(model):
        started.set()
        release.wait(5)
        return threading.current_thread().name

    try:
        first = worker.try_submit(blocking_job)
        assert started.wait(30)  # the worker has taken the first job
        second = worker.try_submit(lambda model: model.upper())
        assert second is not None
        assert worker.try_submit(lambda model: None) is None  # queue full: skipped, never blocks
        release.set()
        assert first.result(5) == "astra-model-worker"
        assert second.result(5) == "MODEL"
        failing = worker.try_submit(lambda model: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(5)
    finally:
        worker.stop()


def test_predict_window_with_the_tiny_random_model():
    model = load_world_model("random:tiny")
    assert model.resolution == (32, 32)
    window = ObservationWindow(4, model.resolution)
    rng = np.random.default_rng(0)
    for k in range(4):
        window.add(k * 100 * MS, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), np.array([0.3, 0, 0, 0, 0, 0.0]))
    snapshot = window.snapshot("twist", 3, latest_command=np.array([0.5, 0, 0, 0, 0, 0.2]))
    prediction = predict_window(model, snapshot)
    assert prediction.frames.shape == (3, 32, 32, 3) and prediction.frames.dtype == np.uint8
    assert np.all(prediction.stamps_ns > snapshot.last_stamp_ns)
    assert prediction.latency_s > 0
    # The node's guidance_scale reaches the model (None: the model's own default).
    scales = []
    imagine = model.imagine
    model.imagine = lambda *args, **kwargs: scales.append(kwargs.get("guidance_scale")) or imagine(*args, **kwargs)
    predict_window(model, snapshot, guidance_scale=1.0)
    predict_window(model, snapshot)
    assert scales == [1.0, None]


def _tiny_snapshot(model, frames=4):
    window = ObservationWindow(frames, model.resolution)
    rng = np.random.default_rng(0)
    for k in range(frames):
        window.add(k * 100 * MS, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), np.array([0.3, 0, 0, 0, 0, 0.0]))
    return window.snapshot("twist", 2, latest_command=np.array([0.5, 0, 0, 0, 0, 0.2]))


def test_a_reset_while_a_live_job_runs_is_not_undone_by_it():
    """~/reset used to be undone by the prediction in flight: it marked the old history live again
    and ~/imagine with from_live_history continued the past that was meant to be forgotten."""
    model = load_world_model("random:tiny")
    snapshot = _tiny_snapshot(model)
    live = LiveStream()
    start = model.start

    def start_then_reset(*args, **kwargs):
        start(*args, **kwargs)
        live.clear()  # ~/reset lands while the job is running

    model.start = start_then_reset
    assert live_job(model, live=live, generation=live.generation, snapshot=snapshot, seed=0) is None
    assert live.info is None
    model.start = start
    result = live_job(model, live=live, generation=live.generation, snapshot=snapshot, seed=0)
    assert result is not None and result[0].frames.shape == (2, 32, 32, 3)
    assert live.info == (snapshot.last_stamp_ns, snapshot.frame_interval_s, snapshot.frame_id)
    stale = live.generation
    live.clear()
    assert not live.started(snapshot, stale) and live.info is None


def test_imagine_stops_when_asked_and_leaves_the_live_stream_as_it_was():
    model = load_world_model("random:tiny")
    snapshot = _tiny_snapshot(model)
    model.start(snapshot.frames, snapshot.actions, modality="twist", seed=0)
    n = model.frames_per_chunk
    actions = np.zeros((2, 3 * n, 6), dtype=np.float32)
    actions[:, :, 0] = 0.4
    polls = []
    full = model.imagine(actions, seed=5, should_stop=lambda: polls.append(1) and False)
    assert len(polls) == 3 + 1  # before each chunk and before the decode (one sub-batch)
    calls = iter(range(100))
    with pytest.raises(ImagineCancelled):
        model.imagine(actions, seed=5, should_stop=lambda: next(calls) >= 1)  # stops before the second chunk
    assert np.array_equal(model.imagine(actions, seed=5), full)  # the history is untouched by the cancelled call

    with pytest.raises(ImagineCancelled):
        imagine_job(model, snapshot=snapshot, catch_up=np.zeros((0, 6), np.float32), actions=actions,
                    modality="twist", seed=5, should_stop=lambda: True)


def test_imagine_job_rolls_the_catch_up_first_and_returns_only_the_candidates():
    model = load_world_model("random:tiny")
    snapshot = _tiny_snapshot(model)
    n = model.frames_per_chunk
    actions = np.zeros((2, 2 * n, 6), dtype=np.float32)
    catch_up = np.full((3, 6), 0.02, np.float32)
    started = {}
    frames = imagine_job(model, snapshot=snapshot, catch_up=catch_up, actions=actions, modality="twist", seed=5,
                         started=started)
    assert frames.shape == (2, 2 * n, 32, 32, 3) and started
    # The same as one imagine over catch-up + candidates, decoding only the candidates' frames.
    rows = np.concatenate([np.broadcast_to(catch_up[None], (2, 3, 6)), actions], axis=1)
    whole = model.imagine(rows, seed=5, decode=list(range(3, 3 + 2 * n)))
    np.testing.assert_array_equal(frames, whole)


def test_model_worker_stop_ends_a_long_job_that_polls_stopping():
    worker = ModelWorker("model", queue_size=1)
    started = threading.Event()

    def long_job(model):
        started.set()
        for _ in range(3000):  # 300 s unless asked to stop
            if worker.stopping.wait(0.1):
                return "stopped"
        return "ran to the end"

    future = worker.try_submit(long_job)
    assert started.wait(30)
    queued = worker.try_submit(lambda model: "never")
    assert worker.stop(timeout_s=10.0)
    assert future.result(0) == "stopped" and queued.cancelled()


def test_predictor_core_and_sync_import_without_rclpy():
    code = (
        "import sys; sys.modules['rclpy'] = None\n"  # any 'import rclpy' now raises ImportError
        "import astra_ros.ros.sync, astra_ros.ros.predictor_core, astra_ros.ros.conversions\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.parametrize("hold", [False, True])
def test_an_outlier_image_taken_back_leaves_the_states_the_next_images_need(hold):
    """A glitched image stamp waits in the queue (no state after it) while states arrive; once the next
    good image takes it back, that image must still find the states around it."""
    guard = MonotonicStamps(strict=True, max_jump_ns=1000)
    if hold:  # commands: the one in force at the image
        pairer = ApproximateTimePairer(slop_ns=0, hold_ns=100, stale_state="ZERO")
    else:  # poses: interpolated at the image's stamp
        pairer = ApproximateTimePairer(slop_ns=3, interpolate=lambda a, b, f: a + f * (b - a))
    state = (lambda ns: f"cmd{ns}") if hold else float
    for ns in (0, 10, 20):
        pairer.add_state(ns, state(ns))
    for ns in (0, 10, 20):
        assert guard.accept(ns) == "ok" and len(pairer.add_image(ns, f"i{ns}")) == 1
    assert guard.accept(10_000) == "ok" and pairer.add_image(10_000, "glitch") == []
    pairer.add_state(25, state(25))
    pairer.add_state(30, state(30))
    assert guard.accept(26) == "jump_undone"
    assert [ns for ns, _ in pairer.discard_images_after(26)] == [10_000]
    (pair,) = pairer.add_image(26, "i26")
    assert pair.state == ("cmd25" if hold else pytest.approx(26.0)) and not pairer.dropped
    if hold:
        assert pairer.stale_pairs == 0  # not the zero command of a stream gone quiet


def test_an_image_older_than_one_already_paired_is_refused_with_an_empty_queue():
    pairer = ApproximateTimePairer(slop_ns=10)
    for ns in (0, 10, 20, 30):
        pairer.add_state(ns, f"s{ns}")
    assert [p.state for p in pairer.add_image(20, "i20")] == ["s20"]
    pairer.add_state(40, "s40")
    assert pairer.pending_images == 0 and pairer.add_image(12, "i12") == []
    assert pairer.dropped["image_stamp_backwards"] == 1
    assert [p.state for p in pairer.add_image(31, "i31")] == ["s30"]  # later images pair as before


def test_a_window_of_part_chunks_gives_the_model_camera_actions_relative_to_the_first_frame_it_keeps():
    """start() keeps whole chunks: with 5 frames of 2-frame chunks the oldest is left out, and the
    camera actions (window and future) must then be relative to the first frame kept, as in training."""
    stamps = np.arange(5) * 100 * MS
    poses = _camera_poses(7)
    window = ObservationWindow(5, (16, 16))
    for k in range(5):
        window.add(int(stamps[k]), np.full((16, 16, 3), 10 * k, np.uint8), poses[k])
    snapshot = window.snapshot("camera", 2)
    frames, actions, future = whole_chunks(snapshot, 2)
    np.testing.assert_array_equal(frames, snapshot.frames[1:])
    expected = camera_actions(poses[1:])  # a clip that starts at the first frame kept
    np.testing.assert_allclose(actions, expected[:4], atol=1e-5)
    np.testing.assert_allclose(future, expected[4:6], atol=1e-5)
    np.testing.assert_allclose(actions[0], np.eye(4)[:3].reshape(-1), atol=1e-6)
    # Whole chunks, or modalities that are not relative to a frame, pass unchanged.
    for modality, chunk in (("camera", 1), ("robot", 2)):
        other = window.snapshot(modality, 2)
        kept = whole_chunks(other, chunk)
        assert len(kept[0]) == 5 - 5 % chunk
        np.testing.assert_array_equal(kept[1], other.actions[5 % chunk:])
        np.testing.assert_array_equal(kept[2], other.future_actions)


@pytest.mark.parametrize("hold", [False, True])
def test_images_stamped_ahead_of_every_state_are_decided_not_left_to_fall_out(hold):
    """A camera clock 100 s ahead of the states': no state ever comes after an image. Images pushed out
    of the full queue pair with the command in force (hold: none within hold_ns, so the zero command)
    or are dropped for no state within the slop, with the gap that names the clock mismatch."""
    if hold:
        pairer = ApproximateTimePairer(slop_ns=0, image_queue_size=3, hold_ns=500 * MS, stale_state="ZERO")
    else:
        pairer = ApproximateTimePairer(slop_ns=20 * MS, image_queue_size=3)
    decided = []
    for k in range(8):
        decided += pairer.add_state(k * 100 * MS, f"s{k}")
        decided += pairer.add_image(100_000 * MS + k * 100 * MS, k)
    assert pairer.pending_images == 3 and pairer.dropped[DROP_IMAGE_QUEUE_FULL] == 0
    assert pairer.last_unpaired_gap_ns == pytest.approx(100_000 * MS, rel=0.01)
    if hold:
        assert [p.image for p in decided] == [0, 1, 2, 3, 4] and {p.state for p in decided} == {"ZERO"}
        assert pairer.stale_pairs == 5
    else:
        assert decided == [] and pairer.dropped[DROP_NO_STATE_IN_SLOP] == 5


def test_an_image_pushed_out_with_a_state_within_the_slop_pairs_with_it():
    pairer = ApproximateTimePairer(slop_ns=20 * MS, image_queue_size=2)
    pairer.add_state(0, "s0")
    assert pairer.add_image(10 * MS, "a") == [] and pairer.add_image(200 * MS, "b") == []
    (pair,) = pairer.add_image(300 * MS, "c")  # "a" is pushed out: s0 is 10 ms before it
    assert (pair.image, pair.state) == ("a", "s0") and pairer.pending_images == 2
