"""Simulated episodes: recorded topics, rates, stamps, determinism, frames with structure, and the CLI."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402

from astra_ros.cli.sim import main  # noqa: E402
from astra_ros.data.actions import MODALITY_DIMS, scenario_modality  # noqa: E402
from astra_ros.data.bags import bag_topics, modality_from_topics, read_episode  # noqa: E402
from astra_ros.data.geometry import BODY_FROM_OPTICAL, quaternion_to_matrix  # noqa: E402
from astra_ros.data.images import image_to_rgb  # noqa: E402
from astra_ros.data.record import SIM_EPOCH_NS, record_episode  # noqa: E402
from astra_ros.data.scenes import SimSettings  # noqa: E402

SECONDS = 2.0
SETTINGS = SimSettings(seconds=SECONDS, image_width=96, image_height=96)

EXPECTED_TOPICS = {
    "explore": {"/camera/image_raw", "/camera/camera_info", "/camera/pose", "/cmd_vel", "/tf", "/tf_static"},
    "arm": {"/camera/image_raw", "/camera/camera_info", "/camera/pose", "/robot/ee_pose", "/robot/gripper", "/tf",
            "/tf_static"},
    "rover": {"/camera/image_raw", "/camera/camera_info", "/camera/pose", "/cmd_vel", "/odom", "/tf", "/tf_static"},
}
HEADERLESS = {"/cmd_vel", "/tf", "/tf_static"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One short episode per scenario, seed 7."""
    out = tmp_path_factory.mktemp("sim")
    return {scenario: record_episode(scenario, 7, out, settings=SETTINGS, progress=False) for scenario in EXPECTED_TOPICS}


def read_all(bag_path):
    """{topic: [(bag stamp, header stamp or None, message, raw bytes)]}"""
    messages = {}
    with AnyReader([bag_path]) as reader:
        for connection, stamp, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            header = getattr(message, "header", None)
            header_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec if header is not None else None
            messages.setdefault(connection.topic, []).append((stamp, header_ns, message, bytes(raw)))
    return messages


@pytest.mark.parametrize("scenario", sorted(EXPECTED_TOPICS))
def test_episode_topics_counts_rates_and_stamps(recorded, scenario):
    bag = recorded[scenario]
    assert bag.name == f"{scenario}_s7"
    messages = read_all(bag)
    assert set(messages) == EXPECTED_TOPICS[scenario]
    images = messages["/camera/image_raw"]
    assert len(images) == int(SECONDS * 10)
    assert len(messages["/camera/camera_info"]) == len(images)
    for topic, entries in messages.items():
        stamps = np.array([header if header is not None else stamp for stamp, header, _, _ in entries])
        bag_stamps = np.array([stamp for stamp, _, _, _ in entries])
        assert stamps[0] == SIM_EPOCH_NS
        assert np.all(np.diff(stamps) > 0), topic
        np.testing.assert_array_equal(stamps, bag_stamps)  # bag time is the header stamp
        if topic == "/tf_static":  # once, at the first stamp
            assert len(entries) == 1
            continue
        rate_hz = 1e9 / np.mean(np.diff(stamps))
        if topic.startswith("/camera/image") or topic == "/camera/camera_info":
            assert rate_hz == pytest.approx(10.0)
        else:
            assert rate_hz >= 30.0 - 1e-6
            assert len(entries) == int(SECONDS * 30)
    image = images[0][2]
    assert (image.width, image.height, image.encoding, image.step) == (96, 96, "rgb8", 96 * 3)
    assert image.header.frame_id == "camera_optical_frame"
    assert messages["/camera/pose"][0][2].header.frame_id == "odom"
    info = messages["/camera/camera_info"][0][2]
    assert info.k[0] > 0 and info.k[2] == pytest.approx(47.5) and info.p[10] == 1.0
    if scenario == "arm":
        assert messages["/robot/ee_pose"][0][2].header.frame_id == "base_link"
    if scenario == "rover":
        odometry = messages["/odom"][0][2]
        assert (odometry.header.frame_id, odometry.child_frame_id) == ("odom", "base_link")


@pytest.mark.parametrize("scenario", sorted(EXPECTED_TOPICS))
def test_frames_have_visible_structure(recorded, scenario):
    images = read_all(recorded[scenario])["/camera/image_raw"]
    for _, _, message, _ in images[:: max(1, len(images) // 5)]:
        rgb = image_to_rgb(message.data, height=message.height, width=message.width, encoding=message.encoding, step=message.step)
        assert rgb.std() > 12.0, "frame is nearly flat"
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize("scenario", sorted(EXPECTED_TOPICS))
def test_episode_reads_back_as_its_modality(recorded, scenario):
    bag = recorded[scenario]
    modality = modality_from_topics(bag_topics(bag))
    assert modality == scenario_modality[scenario]
    episode = read_episode(bag, resolution=(48, 64))
    assert episode.modality == modality
    assert episode.frames.shape == (20, 48, 64, 3) and episode.frames.dtype == np.uint8
    assert episode.actions.shape == (20, MODALITY_DIMS[modality]) and episode.actions.dtype == np.float32
    assert np.isfinite(episode.actions).all()
    assert episode.camera_info.width == 64 and episode.camera_info.height == 48


def test_same_seed_is_identical_and_different_seeds_differ(tmp_path):
    settings = SimSettings(seconds=1.0, image_width=96, image_height=96)
    first = read_all(record_episode("explore", 11, tmp_path / "a", settings=settings, progress=False))
    again = read_all(record_episode("explore", 11, tmp_path / "b", settings=settings, progress=False))
    other = read_all(record_episode("explore", 12, tmp_path / "c", settings=settings, progress=False))
    for topic in first:
        assert [raw for *_, raw in first[topic]] == [raw for *_, raw in again[topic]], topic
    assert [raw for *_, raw in first["/camera/image_raw"]] != [raw for *_, raw in other["/camera/image_raw"]]


def test_arm_same_seed_identical(tmp_path):
    settings = SimSettings(seconds=1.0, image_width=96, image_height=96)
    first = read_all(record_episode("arm", 3, tmp_path / "a", settings=settings, progress=False))
    again = read_all(record_episode("arm", 3, tmp_path / "b", settings=settings, progress=False))
    assert first["/robot/ee_pose"][-1][3] == again["/robot/ee_pose"][-1][3]
    assert first["/camera/image_raw"][-1][3] == again["/camera/image_raw"][-1][3]


@pytest.mark.parametrize("scenario", ["explore", "rover"])
def test_cmd_vel_is_the_body_velocity_of_the_camera(recorded, scenario):
    """Integrating /cmd_vel reproduces the camera motion (the command is what moved the camera)."""
    messages = read_all(recorded[scenario])
    poses = [m.pose for _, _, m, _ in messages["/camera/pose"]]
    commands = [m for _, _, m, _ in messages["/cmd_vel"]]
    dt = 1.0 / 30.0
    moved = False
    for k in range(len(poses) - 1):
        p0 = np.array([poses[k].position.x, poses[k].position.y, poses[k].position.z])
        p1 = np.array([poses[k + 1].position.x, poses[k + 1].position.y, poses[k + 1].position.z])
        q0 = poses[k].orientation
        world_from_optical = quaternion_to_matrix(np.array([q0.x, q0.y, q0.z, q0.w]))
        body_from_world = BODY_FROM_OPTICAL @ world_from_optical.T
        displacement_body = body_from_world @ (p1 - p0)
        command = commands[k]
        linear = np.array([command.linear.x, command.linear.y, command.linear.z])
        if scenario == "rover":
            # The camera sits ahead of base_link, so turning moves it sideways too: compare forward only.
            assert displacement_body[0] == pytest.approx(linear[0] * dt, abs=0.02 * dt + abs(command.angular.z) * 0.2 * dt)
        else:
            np.testing.assert_allclose(displacement_body, linear * dt, atol=1e-6)
        moved |= np.linalg.norm(linear) > 0.05 or abs(command.angular.z) > 0.1
    assert moved


def test_arm_ee_pose_moves_and_gripper_in_range(recorded):
    messages = read_all(recorded["arm"])
    positions = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for _, _, m, _ in messages["/robot/ee_pose"]])
    assert np.ptp(positions, axis=0).max() > 0.03
    assert {tuple(m.name) for _, _, m, _ in messages["/robot/gripper"]} == {("gripper_joint",)}
    gripper = np.array([m.position[0] for _, _, m, _ in messages["/robot/gripper"]])
    assert np.all((gripper >= -1e-3) & (gripper <= 0.081))


def test_cli_without_command_prints_help_as_a_usage_error(capsys):
    assert main([]) == 2
    assert "record" in capsys.readouterr().err


def test_cli_record_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["record", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--scenario", "--episodes", "--seed", "--out", "--seconds", "--size", "--storage"):
        assert flag in text


def test_cli_records_episodes_with_consecutive_seeds(tmp_path, capsys):
    status = main(
        ["record", "--scenario", "rover", "--episodes", "2", "--seed", "4", "--out", str(tmp_path),
         "--seconds", "0.5", "--size", "96x80", "--storage", "sqlite3", "--quiet"]
    )
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rover_s4", "rover_s5"]
    assert list((tmp_path / "rover_s4").glob("*.db3"))
    image = read_all(tmp_path / "rover_s5")["/camera/image_raw"][0][2]
    assert (image.width, image.height) == (96, 80)
    # Recording over an existing bag is refused.
    assert main(["record", "--scenario", "rover", "--seed", "4", "--out", str(tmp_path), "--seconds", "0.5", "--quiet"]) == 1


def test_cli_rejects_bad_size():
    with pytest.raises(SystemExit):
        main(["record", "--scenario", "arm", "--out", "x", "--size", "big"])


@pytest.mark.parametrize("args, message", [
    (["--state-rate", "0"], "positive multiple"),  # was a ZeroDivisionError and a broken bag left behind
    (["--state-rate", "-30"], "positive multiple"),  # was a bag of -30 ticks
    (["--seconds", "0.01"], "fewer than 2 camera frames"),  # was a bag without topics
    (["--seed", "-1"], "--seed must be >= 0"),  # was a numpy traceback
    (["--camera-rate", "7"], "--state-rate (30) must be a positive multiple of --camera-rate (7)"),  # named fields
])
def test_cli_refuses_settings_that_cannot_make_an_episode(tmp_path, capsys, args, message):
    assert main(["record", "--scenario", "explore", "--out", str(tmp_path / "out"), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_interrupted_recording_leaves_no_bag_and_does_not_block_a_rerun(tmp_path, capsys, caplog, monkeypatch):
    import astra_ros.data.record as record_module

    args = ["record", "--scenario", "rover", "--seed", "4", "--out", str(tmp_path), "--seconds", "0.5", "--quiet"]
    real_tick_messages = record_module._tick_messages
    calls = []

    def interrupted_at_tick_5(*tick_args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C mid-episode
        return real_tick_messages(*tick_args)

    monkeypatch.setattr(record_module, "_tick_messages", interrupted_at_tick_5)
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no half-written rover_s4 under the final name
    monkeypatch.undo()
    # A recording killed outright (no cleanup) leaves its .partial directory behind: the rerun removes it.
    leftover = tmp_path / "rover_s4.partial" / "rover_s4"
    leftover.mkdir(parents=True)
    (leftover / "rover_s4.mcap").write_bytes(b"half a bag")
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    assert f"removing {tmp_path / 'rover_s4.partial'}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rover_s4"]
    assert sorted(p.name for p in (tmp_path / "rover_s4").iterdir()) == ["metadata.yaml", "rover_s4.mcap"]
    reference = record_episode("rover", 4, tmp_path / "reference", settings=SimSettings(seconds=0.5), progress=False)
    rerun, expected = read_all(tmp_path / "rover_s4"), read_all(reference)
    assert set(rerun) == set(expected)
    for topic in expected:
        assert [raw for *_, raw in rerun[topic]] == [raw for *_, raw in expected[topic]], topic


def test_a_held_arm_stays_where_it_is():
    """The live simulator node holds the arm until its first /robot/ee_target; before, the recorded
    episodes' random pushes moved it 0.4 m in 3 s with nobody commanding it."""
    from astra_ros.data.scenes import make_scenario

    settings = SimSettings(seconds=1.0, image_width=32, image_height=32)
    free, held = make_scenario("arm", 0, settings), make_scenario("arm", 0, settings)
    held.hold()
    start = held.ee_pose_base().position.copy()
    for _ in range(90):  # 3 s at 30 Hz
        free.advance(1 / 30)
        held.advance(1 / 30)
    assert np.linalg.norm(free.ee_pose_base().position - start) > 0.05  # the episode's own moves
    assert np.linalg.norm(held.ee_pose_base().position - start) < 0.005


def test_arm_pose_and_view_belong_to_the_joints_at_their_stamp():
    """mj_step leaves body and site poses at the joints before its last integration: the recorded
    ee pose (and the rendered arm) lagged their stamp by one physics step, while the gripper opening,
    read from the joints, did not."""
    import mujoco

    from astra_ros.data.scenes import make_scenario

    scene = make_scenario("arm", 5, SimSettings(seconds=1.0, image_width=32, image_height=32))
    for _ in range(10):
        scene.advance(1 / 30)
    recorded = scene.ee_pose_base().position.copy()
    mujoco.mj_forward(scene.model, scene.data)  # body and site poses of the current joints
    np.testing.assert_allclose(scene.ee_pose_base().position, recorded, atol=1e-12)


def test_a_very_fast_command_does_not_carry_the_rover_through_an_obstacle():
    """The hard limits are checked along each tick's step, not only where it ends."""
    from astra_ros.data.scenes import BodyTwist, SimSettings, make_scenario

    def crosses(a, b, obstacle):
        centre, d = np.array([obstacle.x, obstacle.y]), b - a
        t = np.clip(np.dot(centre - a, d) / max(np.dot(d, d), 1e-12), 0.0, 1.0)
        return np.linalg.norm(a + t * d - centre) < obstacle.radius

    settings = SimSettings(seconds=1.0, image_width=16, image_height=16, camera_rate_hz=10, state_rate_hz=30)
    with make_scenario("rover", 0, settings) as rover:
        for yaw, speed in ((yaw, speed) for yaw in np.linspace(-np.pi, np.pi, 73) for speed in (30.0, 60.0, 90.0)):
            rover.rig.position, rover.rig.yaw = np.zeros(3), float(yaw)
            rover.rig.command = type(rover.rig.command)()
            rover.set_command(BodyTwist(np.array([speed, 0.0, 0.0]), np.zeros(3)))
            for _ in range(10):
                a = rover.rig.position[:2].copy()
                rover.advance(1 / 30)
                b = rover.rig.position[:2].copy()
                assert not any(crosses(a, b, o) for o in rover.rig.obstacles), (yaw, a, b)
