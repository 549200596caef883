"""Robot profiles: parsing, the one-error rule for missing topics, conventions undone while reading, and
astra-train / astra-eval on bags whose topics, types and yaw sign are not this project's."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from astra_ros.data.bags import BagError, BagTopics, read_episode
from astra_ros.data.conventions import BagConventions
from astra_ros.data.geometry import PinholeIntrinsics, pose_to_matrix
from astra_ros.data.profile import ProfileError, load_profile, profile_from_dict
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[1]
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
# The foreign robot: its own names, TwistStamped commands, a yaw that turns right for positive angular.z.
FOREIGN = {"image": "/front_cam/image", "twist": "/base/twist"}
FOREIGN_PROFILE = {"name": "foreign", "modality": "twist", "topics": dict(FOREIGN), "twist_stamped": True,
                   "twist_signs": {"angular": [1, 1, -1]}}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sim")
    settings = SimSettings(seconds=2.0, image_width=64, image_height=64)
    return {s: record_episode(s, 3, root / s, settings=settings, progress=False) for s in ("explore", "arm", "rover")}


def write_foreign_copy(source: Path, target: Path) -> Path:
    """The rover bag as another robot records it, through rosbags' Writer (sqlite3): images as bgr8 on
    /front_cam/image, commands as TwistStamped on /base/twist with angular.z negated, nothing else."""
    with AnyReader([source]) as reader, Writer(target, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        image = writer.add_connection(FOREIGN["image"], "sensor_msgs/msg/Image", typestore=TYPESTORE)
        twist = writer.add_connection(FOREIGN["twist"], "geometry_msgs/msg/TwistStamped", typestore=TYPESTORE)
        wanted = [c for c in reader.connections if c.topic in ("/camera/image_raw", "/cmd_vel")]
        for connection, stamp, raw in reader.messages(connections=wanted):
            message = reader.deserialize(raw, connection.msgtype)
            if connection.topic == "/camera/image_raw":
                rgb = np.frombuffer(message.data, np.uint8).reshape(message.height, message.width, 3)
                out = T["sensor_msgs/msg/Image"](header=message.header, height=message.height, width=message.width,
                                                 encoding="bgr8", is_bigendian=0, step=message.width * 3,
                                                 data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1))
                writer.write(image, stamp, TYPESTORE.serialize_cdr(out, "sensor_msgs/msg/Image"))
            else:
                header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
                    sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id="base")
                angular = T["geometry_msgs/msg/Vector3"](message.angular.x, message.angular.y, -message.angular.z)
                out = T["geometry_msgs/msg/TwistStamped"](
                    header=header, twist=T["geometry_msgs/msg/Twist"](linear=message.linear, angular=angular))
                writer.write(twist, stamp, TYPESTORE.serialize_cdr(out, "geometry_msgs/msg/TwistStamped"))
    return target


@pytest.fixture(scope="module")
def foreign(sim_bags, tmp_path_factory) -> tuple[Path, Path]:
    """(folder holding two foreign bags, its profile file)."""
    root = tmp_path_factory.mktemp("foreign")
    write_foreign_copy(sim_bags["rover"], root / "bags" / "drive_a")
    write_foreign_copy(sim_bags["rover"], root / "bags" / "drive_b")
    profile = root / "foreign.yaml"
    profile.write_text(yaml.safe_dump(FOREIGN_PROFILE))
    return root / "bags", profile


def _write(tmp_path: Path, data, name: str = "robot.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------------------- parsing
def test_a_full_profile_reads_into_topics_conventions_and_node_parameters(tmp_path):
    path = _write(tmp_path, {
        "name": "patrol", "modality": "camera",
        "topics": {"image": "/cam/image", "camera_info": "/cam/info", "pose": "/base/pose", "twist": "/cmd"},
        "twist_signs": {"linear": [1, -1, 1], "angular": [1, 1, -1]},
        "pose_frame": "base",
        "camera_in_base": {"translation": [0.2, 0.0, 0.5], "quaternion_xyzw": [-0.5, 0.5, -0.5, 0.5]},
        "intrinsics": {"width": 640, "height": 480, "fx": 500.0, "fy": 500.0, "cx": 320.0, "cy": 240.0},
    })
    profile = load_profile(path)
    assert (profile.name, profile.modality, profile.path, profile.twist_stamped) == ("patrol", "camera", str(path), False)
    assert profile.bag_topics() == BagTopics(image="/cam/image", camera_info="/cam/info", camera_pose="/base/pose",
                                             ee_pose="", gripper="", twist="/cmd", odom="")
    c = profile.conventions
    assert c.twist_signs == (1.0, -1.0, 1.0, 1.0, 1.0, -1.0)
    assert c.pose_frame == "base" and c.camera_in_base == (0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5)
    assert c.intrinsics == PinholeIntrinsics(640, 480, 500.0, 500.0, 320.0, 240.0)
    assert profile.node_parameters() == {"action_modality": "camera", "twist_source": "twist", "twist_stamped": False}
    assert profile.node_remappings() == {"image": "/cam/image", "camera_info": "/cam/info", "pose": "/base/pose",
                                         "twist": "/cmd"}


def test_defaults_the_name_from_the_file_and_twist_from_odometry(tmp_path):
    profile = load_profile(_write(tmp_path, {"modality": "keys", "topics": {"image": "/i", "odom": "/wheel_odom"}},
                                  "my_bot.yaml"))
    assert profile.name == "my_bot" and profile.conventions == BagConventions()
    assert profile.twist_source == "odom" and profile.bag_topics().twist == "/wheel_odom"
    assert profile.node_parameters()["twist_source"] == "odom"
    robot = profile_from_dict({"modality": "robot", "topics": {"image": "/i", "ee_pose": "/ee", "pose": "/cam"}})
    assert robot.node_remappings()["pose"] == "/ee"  # the node's one pose input is the end effector's


GOOD = {"modality": "twist", "topics": {"image": "/cam", "twist": "/cmd"}}


@pytest.mark.parametrize("data, message", [
    ("", "must be a mapping with at least 'modality' and 'topics', got nothing"),
    ("- a\n- b\n", "must be a mapping"),
    ("modality: twist\nmodality: camera\ntopics: {image: /i}\n", "key 'modality' is given twice \\(line 2\\)"),
    ("modality: [twist\n", "invalid YAML"),
    ({**GOOD, "topic": {}}, "unknown keys \\['topic'\\]"),
    ({**GOOD, "modality": "wheels"}, "'modality' must be one of camera, robot, twist, keys, got 'wheels'"),
    ({"topics": GOOD["topics"]}, "'modality' must be one of .* got None"),
    ({**GOOD, "name": ""}, "'name' must be a non-empty string"),
    ({"modality": "twist"}, "'topics' must be a mapping of image, camera_info"),
    ({**GOOD, "topics": {"image": "/cam", "twist": "/cmd", "lidar": "/scan"}}, "unknown keys \\['lidar'\\] in 'topics'"),
    ({**GOOD, "topics": {"image": "camera/image", "twist": "/cmd"}}, "'topics.image' must be an absolute topic name"),
    ({**GOOD, "topics": {"image": "/cam", "twist": 5}}, "'topics.twist' must be an absolute topic name"),
    ({**GOOD, "topics": {"twist": "/cmd"}}, "'topics.image' is missing"),
    ({**GOOD, "topics": {"image": "/cam"}}, "modality 'twist' needs 'topics.twist' \\(or 'topics.odom'"),
    ({"modality": "camera", "topics": {"image": "/cam", "twist": "/cmd"}}, "modality 'camera' needs 'topics.pose'"),
    ({"modality": "robot", "topics": {"image": "/cam"}}, "modality 'robot' needs 'topics.ee_pose'"),
    ({**GOOD, "twist_stamped": "yes"}, "'twist_stamped' must be true or false"),
    ({**GOOD, "twist_signs": {"angular": [1, 1, -2]}}, "'twist_signs.angular' must hold 1 or -1 per axis"),
    ({**GOOD, "twist_signs": {"angular": [1, -1]}}, "'twist_signs.angular' must be a list of 3 finite numbers"),
    ({**GOOD, "twist_signs": {"yaw": -1}}, "'twist_signs' must be a mapping with 'linear' and/or 'angular'"),
    ({"modality": "robot", "topics": {"image": "/c", "ee_pose": "/e"}, "twist_signs": {"angular": [1, 1, -1]}},
     "'twist_signs' is given but 'topics' names no twist or odom topic"),
    ({**GOOD, "pose_frame": "lidar"}, "'pose_frame' must be one of camera_optical, camera_link, base"),
    ({**GOOD, "pose_frame": "base"}, "'pose_frame: base' needs 'camera_in_base'"),
    ({**GOOD, "camera_in_base": {"translation": [0, 0, 0], "quaternion_xyzw": [0, 0, 0, 1]}},
     "'camera_in_base' is only used with 'pose_frame: base'"),
    ({**GOOD, "pose_frame": "base", "camera_in_base": {"translation": [0, 0, 0], "quaternion_xyzw": [0, 0, 0, 2]}},
     "'camera_in_base.quaternion_xyzw' must be a unit quaternion, got norm 2.0000"),
    ({**GOOD, "pose_frame": "base", "camera_in_base": {"translation": [0, 0], "quaternion_xyzw": [0, 0, 0, 1]}},
     "'camera_in_base.translation' must be a list of 3 finite numbers"),
    ({**GOOD, "pose_frame": "base", "camera_in_base": {"xyz": [0, 0, 0]}}, "'camera_in_base' must be a mapping of"),
    ({**GOOD, "intrinsics": {"fx": 1.0}}, "'intrinsics' must be a mapping of exactly width, height, fx, fy, cx, cy"),
    ({**GOOD, "intrinsics": {"width": 64, "height": 48, "fx": -5, "fy": 5, "cx": 32, "cy": 24}},
     "'intrinsics.fx' must be a finite number > 0, got -5"),
    ({**GOOD, "intrinsics": {"width": 64.5, "height": 48, "fx": 5, "fy": 5, "cx": 32, "cy": 24}},
     "'intrinsics.width' must be a whole number of pixels"),
])
def test_each_bad_profile_is_refused_naming_the_file_and_the_key(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError, match=message) as caught:
        load_profile(path)
    assert str(caught.value).startswith(f"profile {path}")
    assert isinstance(caught.value, ValueError)


def test_a_missing_profile_file_is_named(tmp_path):
    with pytest.raises(ProfileError, match=f"profile {tmp_path / 'nope.yaml'} does not exist"):
        load_profile(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name, modality", [("explore", "camera"), ("arm", "robot"), ("rover", "twist"),
                                            ("rover_keys", "keys")])
def test_the_shipped_scene_profiles_fit_the_simulators_bags(sim_bags, name, modality):
    profile = load_profile(REPO / "config" / "robots" / f"{name}.yaml")
    assert profile.modality == modality and profile.conventions == BagConventions()
    bag = sim_bags[name.split("_")[0]]
    profile.check_bags([bag])  # every topic it names is in the scene's bags
    # Read through the profile, the bag gives exactly what the project's own reading gives.
    through_profile = read_episode(bag, modality, (32, 32), topics=profile.bag_topics(), conventions=profile.conventions)
    np.testing.assert_array_equal(through_profile.actions, read_episode(bag, modality, (32, 32)).actions)
    assert through_profile.camera_info == read_episode(bag, modality, (32, 32)).camera_info


# ------------------------------------------------------------------------------- the one-error rule
def test_every_missing_topic_of_every_bag_is_listed_in_one_error(sim_bags, foreign):
    profile = profile_from_dict({"modality": "twist", "topics": {"image": "/camera/image_raw", "twist": "/cmd_vel",
                                                                 "odom": "/odom", "camera_info": "/cam/info"}},
                                path="p.yaml")
    bags = [sim_bags["explore"], sim_bags["rover"], sim_bags["arm"]]
    with pytest.raises(ProfileError) as caught:
        profile.check_bags(bags)
    text = str(caught.value)
    assert text.startswith("profile p.yaml: 3 of 3 bags lack topics it names")
    # one line per bag, its topics in the profile's order
    assert text.splitlines()[1:] == [
        f"  {sim_bags['explore']}: /cam/info (camera_info), /odom (odom)",
        f"  {sim_bags['rover']}: /cam/info (camera_info)",
        f"  {sim_bags['arm']}: /cam/info (camera_info), /cmd_vel (twist), /odom (odom)",
    ]
    # A twist topic of the other type than twist_stamped says is a problem of the same list.
    folder, path = foreign
    unstamped = profile_from_dict({**FOREIGN_PROFILE, "twist_stamped": False})
    with pytest.raises(ProfileError, match="/base/twist is geometry_msgs/msg/TwistStamped but the profile says "
                                           "twist_stamped: false"):
        unstamped.check_bags(sorted(folder.iterdir()))
    load_profile(path).check_bags(sorted(folder.iterdir()))  # the right profile: no error


# ------------------------------------------------------------------------------------- conventions
def test_the_flipped_yaw_is_undone_and_the_foreign_bag_reads_as_the_original(sim_bags, foreign):
    folder, path = foreign
    profile = load_profile(path)
    original = read_episode(sim_bags["rover"], "twist", (32, 32))
    bag = folder / "drive_a"
    read = read_episode(bag, "twist", (32, 32), topics=profile.bag_topics(), conventions=profile.conventions)
    assert np.abs(original.actions[:, 5]).max() > 0.01  # the rover turns, so a wrong sign would show
    np.testing.assert_allclose(read.actions, original.actions, atol=1e-6)
    np.testing.assert_array_equal(read.frames, original.frames)  # bgr8 decoded to the same rgb
    unflipped = read_episode(bag, "twist", (32, 32), topics=profile.bag_topics())
    np.testing.assert_allclose(unflipped.actions[:, 5], -original.actions[:, 5], atol=1e-6)
    # keys read through the profile press the same turn keys as the original's
    keys = read_episode(bag, "keys", (32, 32), topics=profile.bag_topics(), conventions=profile.conventions)
    np.testing.assert_array_equal(keys.actions, read_episode(sim_bags["rover"], "keys", (32, 32)).actions)


def test_pose_frames_become_the_camera_optical_frame():
    # A camera body frame (x forward, y left, z up) yawed to look along world +y: its optical frame looks
    # along world +y (z = body x), with image right = -body y = world +x and image down = -body z.
    yaw90 = pose_to_matrix(np.array([[1.0, 2.0, 0.5]]), np.array([[0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)]]))
    optical = BagConventions(pose_frame="camera_link").camera_poses(yaw90)[0]
    np.testing.assert_allclose(optical[:3, 2], [0, 1, 0], atol=1e-12)  # viewing direction
    np.testing.assert_allclose(optical[:3, 0], [1, 0, 0], atol=1e-12)  # image right
    np.testing.assert_allclose(optical[:3, 1], [0, 0, -1], atol=1e-12)  # image down
    np.testing.assert_allclose(optical[:3, 3], [1, 2, 0.5])
    # A base pose with a camera 0.3 m ahead and 0.5 m up, looking forward: the same rotation, offset.
    forward = BagConventions(pose_frame="base", camera_in_base=(0.3, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5))
    camera = forward.camera_poses(yaw90)[0]
    np.testing.assert_allclose(camera[:3, :3], optical[:3, :3], atol=1e-12)
    np.testing.assert_allclose(camera[:3, 3], [1.0, 2.3, 1.0], atol=1e-12)
    np.testing.assert_array_equal(BagConventions().camera_poses(yaw90), yaw90)


def test_the_profiles_intrinsics_stand_in_for_a_missing_camera_info(foreign):
    folder, _ = foreign
    profile = profile_from_dict({**FOREIGN_PROFILE, "intrinsics": {"width": 64, "height": 64, "fx": 50.0, "fy": 50.0,
                                                                   "cx": 32.0, "cy": 32.0}})
    topics = profile.bag_topics()
    assert read_episode(folder / "drive_a", "twist", (32, 32), topics=topics).camera_info is None
    read = read_episode(folder / "drive_a", "twist", (32, 32), topics=topics, conventions=profile.conventions)
    assert read.camera_info == PinholeIntrinsics(64, 64, 50.0, 50.0, 32.0, 32.0).scaled((32, 32))
    assert (read.camera_info.width, read.camera_info.fx) == (32, 25.0)  # scaled to the frames read


# ------------------------------------------------------------------------------- train and eval
RECIPE = dict(preset="tiny", clip_frames=6, batch_size=2, steps=2, codec_steps=0, warmup_steps=1,
              checkpoint_every=10, log_every=1, num_threads=1)


def test_astra_train_mixes_a_foreign_robot_with_the_simulators_bags(sim_bags, foreign, tmp_path, caplog):
    from astra_ros.cli.train import main as train_main
    from astra_ros.data.clips import _load_episode

    folder, profile = foreign
    recipe = _write(tmp_path, RECIPE, "recipe.yaml")
    out = tmp_path / "run"
    argv = ["--config", str(recipe), "--data", str(folder), "--profile", str(profile),
            "--data", str(sim_bags["explore"]), "--profile", str(REPO / "config/robots/explore.yaml"),
            "--out", str(out), "--no-progress"]
    assert train_main(argv) == 0, caplog.text
    assert (out / "model.safetensors").is_file()
    # Each bag was read through its own profile: the foreign drives as the rover's twists (yaw undone).
    cached = {Path(_load_episode(p).bag_path).name: _load_episode(p) for p in (out / "cache").glob("*.npz")}
    assert sorted(cached) == sorted(["drive_a", "drive_b", sim_bags["explore"].name])
    original = read_episode(sim_bags["rover"], "twist", (32, 32))
    assert cached["drive_a"].modality == "twist" and cached[sim_bags["explore"].name].modality == "camera"
    np.testing.assert_allclose(cached["drive_a"].actions, original.actions, atol=1e-6)

    # The same through a data list, and without the profile the foreign bags are not understood.
    listing = _write(tmp_path, [{"data": str(folder), "profile": str(profile)},
                                {"data": [str(sim_bags["explore"])]}], "data.yaml")
    assert train_main(["--config", str(recipe), "--data-list", str(listing), "--out", str(tmp_path / "run2"),
                       "--no-progress", "--stop-after", "1"]) == 0, caplog.text
    caplog.clear()
    assert train_main(["--config", str(recipe), "--data", str(folder), "--out", str(tmp_path / "run3"),
                       "--no-progress"]) == 2
    assert "cannot tell the modality" in caplog.text


def test_astra_train_reports_every_missing_topic_of_every_source_at_once(sim_bags, foreign, tmp_path, caplog):
    from astra_ros.cli.train import main as train_main

    folder, profile = foreign
    recipe = _write(tmp_path, RECIPE, "recipe.yaml")
    # The foreign profile on the simulator's rover bag, the explore profile on the foreign bags: both wrong.
    argv = ["--config", str(recipe), "--data", str(sim_bags["rover"]), "--profile", str(profile),
            "--data", str(folder), "--profile", str(REPO / "config/robots/explore.yaml"),
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert train_main(argv) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert f"{sim_bags['rover']}: /front_cam/image (image), /base/twist (twist)" in text
    for bag in ("drive_a", "drive_b"):
        assert f"{folder / bag}: /camera/image_raw (image), /camera/camera_info (camera_info), /camera/pose (pose)" in text
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("argv, message", [
    (["--profile", "p.yaml"], "give the bags with --data"),
    (["--data", "a", "--data", "b", "--profile", "p.yaml", "--profile", "q.yaml", "--profile", "r.yaml"],
     "got 3 --profile for 2 --data"),
    (["--data-list", "d.yaml", "--profile", "p.yaml"], "--profile goes with --data"),
])
def test_astra_train_refuses_profiles_that_do_not_pair_with_the_data(tmp_path, argv, message, capsys, caplog):
    from astra_ros.cli.train import main as train_main

    for name in ("p.yaml", "q.yaml", "r.yaml"):
        _write(tmp_path, GOOD, name)
    recipe = _write(tmp_path, RECIPE, "recipe.yaml")
    argv = [str(tmp_path / a) if a.endswith(".yaml") else a for a in argv]
    try:
        code = train_main(["--config", str(recipe), "--out", str(tmp_path / "run"), *argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err + caplog.text


def test_astra_eval_reads_the_foreign_robot_through_its_profile(foreign, tmp_path, capsys):
    from astra_ros.cli.eval import main as eval_main
    from astra_ros.model import WorldModel, preset

    folder, profile = foreign
    torch.manual_seed(0)
    checkpoint = WorldModel(preset("tiny", resolution=(32, 32))).save_pretrained(tmp_path / "ckpt")
    fast = ["--checkpoint", str(checkpoint), "--horizon-s", "0.4", "--context-frames", "4", "--stride-s", "0.5",
            "--clips-per-bag", "2", "--quiet"]
    assert eval_main([str(folder), "--profile", str(profile), "--out", str(tmp_path / "out"), *fast]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["modality_per_bag"].values()) == {"twist"} and metrics["clips"] >= 2
    # A flag overrides the profile: as keys, and a topic renamed to one the bags lack fails in one line.
    assert eval_main([str(folder), "--profile", str(profile), "--modality", "keys", "--out", str(tmp_path / "k"),
                      *fast]) == 0
    assert set(json.loads((tmp_path / "k" / "metrics.json").read_text())["modality_per_bag"].values()) == {"keys"}
    capsys.readouterr()
    assert eval_main([str(folder), "--profile", str(profile), "--twist-topic", "/nope", "--image-topic", "/nada",
                      "--out", str(tmp_path / "x"), *fast]) == 2
    err = capsys.readouterr().err
    assert "2 of 2 bags lack topics" in err and err.count("/nope (twist)") == 2 and err.count("/nada (image)") == 2
    # Without the profile the sign is not undone: the actions differ in yaw only.
    from astra_ros.eval.replay import EvalOptions, evaluate_bags

    model = WorldModel.from_pretrained(checkpoint)
    loaded = load_profile(profile)
    options = dict(horizon_s=0.4, context_frames=4, clips_per_bag=1, progress=False, modality="twist",
                   topics=loaded.bag_topics())
    with_profile = evaluate_bags(model, [folder / "drive_a"], EvalOptions(**options, conventions=loaded.conventions))
    without = evaluate_bags(model, [folder / "drive_a"], EvalOptions(**options))
    a, b = with_profile.clips[0].actions, without.clips[0].actions
    np.testing.assert_allclose(a[:, :5], b[:, :5])
    np.testing.assert_allclose(a[:, 5], -b[:, 5])


def test_a_bag_given_through_two_profiles_is_refused(sim_bags, tmp_path):
    from astra_ros.model.config import ConfigError
    from astra_ros.training.data import DataSource, resolve_sources

    explore = load_profile(REPO / "config/robots/explore.yaml")
    rover = load_profile(REPO / "config/robots/rover.yaml")
    with pytest.raises(ConfigError, match="given twice, read through explore and through no profile"):
        resolve_sources([DataSource((sim_bags["explore"],), explore), DataSource((sim_bags["explore"],))])
    # The same bag twice through the same profile is read once; sources come out sorted by bag.
    pairs = resolve_sources([DataSource((sim_bags["rover"].parent,), rover), DataSource((sim_bags["rover"],), rover),
                             sim_bags["arm"]])
    assert pairs == sorted([(sim_bags["rover"], rover), (sim_bags["arm"], None)], key=lambda pair: pair[0])
    with pytest.raises(BagError):
        resolve_sources([tmp_path / "nothing"])


def test_resume_refuses_the_same_bags_read_through_another_profile(foreign, tmp_path, caplog):
    from astra_ros.cli.train import main as train_main

    folder, profile = foreign
    recipe = _write(tmp_path, {**RECIPE, "steps": 3}, "recipe.yaml")
    out = tmp_path / "run"
    assert train_main(["--config", str(recipe), "--data", str(folder), "--profile", str(profile), "--out", str(out),
                       "--no-progress", "--stop-after", "1"]) == 0, caplog.text
    unflipped = _write(tmp_path, {**FOREIGN_PROFILE, "twist_signs": {"angular": [1, 1, 1]}}, "unflipped.yaml")
    caplog.clear()
    assert train_main(["--config", str(recipe), "--data", str(folder), "--profile", str(unflipped), "--out", str(out),
                       "--no-progress", "--resume"]) == 2
    assert "--resume with 2 bags read through another profile" in caplog.text
    # The same reading under another file name resumes.
    renamed = _write(tmp_path, {**FOREIGN_PROFILE, "name": "other_name"}, "renamed.yaml")
    assert train_main(["--config", str(recipe), "--data", str(folder), "--profile", str(renamed), "--out", str(out),
                       "--no-progress", "--resume"]) == 0, caplog.text


def test_the_yard_world_is_read_back_through_its_profile_with_the_yaw_undone(tmp_path):
    yard = load_script("scripts/experiments/yard_world.py")
    bag = yard.record_yard_episode(5, tmp_path, seconds=2.0)
    profile = load_profile(REPO / "config" / "robots" / "yard_bot.yaml")
    profile.check_bags([bag])  # the script writes every topic the profile names, TwistStamped as it says
    episode = read_episode(bag, "twist", None, topics=profile.bag_topics(), conventions=profile.conventions)
    assert episode.frames.shape == (30, 60, 80, 3)  # 2 s of a 4:3 camera at 15 Hz
    assert np.abs(np.diff(episode.stamps_ns) - 1e9 / 15).max() <= 1  # [ns] rounding of a 1/15 s interval
    # Through the profile the commands agree with the wheel odometry (REP-103) on the direction of turns.
    odom = read_episode(bag, "twist", None, topics=BagTopics(image=profile.topics.image, twist=profile.topics.odom))
    turning = np.abs(odom.actions[:, 5]) > 1e-4
    assert turning.sum() > 5
    np.testing.assert_allclose(episode.actions[turning, 5], odom.actions[turning, 5], atol=1e-9)
    raw = read_episode(bag, "twist", None, topics=profile.bag_topics())
    np.testing.assert_allclose(raw.actions[turning, 5], -odom.actions[turning, 5], atol=1e-9)
