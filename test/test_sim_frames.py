"""The recorded bags' tf tree (REP-105 names) agrees with their pose topics, and bags in the old format
(Float32 gripper, frames world/base/camera_optical, no tf) read exactly as the new ones do."""

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from astra_ros.data.bags import read_episode
from astra_ros.data.geometry import invert_transform, pose_to_matrix, quaternion_to_matrix
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings

SETTINGS = SimSettings(seconds=1.0, image_width=48, image_height=48)
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    out = tmp_path_factory.mktemp("frames")
    return {scenario: record_episode(scenario, 5, out, settings=SETTINGS, progress=False)
            for scenario in ("explore", "arm", "rover")}


def _messages(bag):
    with AnyReader([bag]) as reader:
        return [(c.topic, c.msgtype, stamp, reader.deserialize(raw, c.msgtype), raw)
                for c, stamp, raw in reader.messages()]


def _matrix(translation, rotation) -> np.ndarray:
    return pose_to_matrix(np.array([translation.x, translation.y, translation.z]),
                          np.array([rotation.x, rotation.y, rotation.z, rotation.w]))


def _pose_matrix(pose) -> np.ndarray:
    return _matrix(pose.position, pose.orientation)


def _lookup(edges: dict, target: str, source: str = "odom") -> np.ndarray:
    """``target`` in ``source`` by walking parents up from ``target`` (a tree, as tf2 keeps it)."""
    transform = np.eye(4)
    frame = target
    while frame != source:
        assert frame in edges, f"no transform to {frame!r} (have {sorted(edges)})"
        parent, child_in_parent = edges[frame]
        transform = child_in_parent @ transform
        frame = parent
    return transform


@pytest.mark.parametrize("scenario", ["explore", "arm", "rover"])
def test_tf_tree_is_rep105_and_matches_the_pose_topics(bags, scenario):
    messages = _messages(bags[scenario])
    static = [m for topic, _, _, m, _ in messages if topic == "/tf_static"]
    assert len(static) == 1
    edges = {t.child_frame_id: (t.header.frame_id, _matrix(t.transform.translation, t.transform.rotation))
             for t in static[0].transforms}
    expected_static = {"camera_link": "base_link", "camera_optical_frame": "camera_link"}
    if scenario == "arm":
        expected_static["base_link"] = "odom"
    assert {child: parent for child, (parent, _) in edges.items()} == expected_static
    # camera_link -> optical frame: z forward = camera_link x, x right = -y, y down = -z (REP-103)
    np.testing.assert_allclose(edges["camera_optical_frame"][1][:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    checked = 0
    camera_poses = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for topic, _, _, m, _ in messages
                    if topic == "/camera/pose"}
    ee_poses = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for topic, _, _, m, _ in messages
                if topic == "/robot/ee_pose"}
    for topic, _, stamp, message, _ in messages:
        if topic != "/tf":
            continue
        dynamic = dict(edges)
        for t in message.transforms:
            assert t.header.stamp.sec * 10**9 + t.header.stamp.nanosec == stamp
            dynamic[t.child_frame_id] = (t.header.frame_id, _matrix(t.transform.translation, t.transform.rotation))
        camera = camera_poses[stamp]
        assert camera.header.frame_id == "odom"
        np.testing.assert_allclose(_lookup(dynamic, "camera_optical_frame"), _pose_matrix(camera.pose), atol=1e-9)
        if scenario == "arm":
            ee = ee_poses[stamp]
            assert ee.header.frame_id == "base_link"
            np.testing.assert_allclose(_lookup(dynamic, "ee_link", "base_link"), _pose_matrix(ee.pose), atol=1e-9)
        checked += 1
    assert checked == int(SETTINGS.seconds * SETTINGS.state_rate_hz)
    if scenario == "rover":  # the dynamic part is /odom's base_link
        odom = [m for topic, _, _, m, _ in messages if topic == "/odom"][-1]
        assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
        np.testing.assert_allclose(dynamic["base_link"][1], _pose_matrix(odom.pose.pose), atol=1e-9)
    if scenario == "explore":  # base_link is the rig: the camera looks along its x axis
        base_in_odom = _lookup(dynamic, "base_link")
        optical_in_odom = _lookup(dynamic, "camera_optical_frame")
        np.testing.assert_allclose(optical_in_odom[:3, 2], base_in_odom[:3, 0], atol=1e-9)


def _write_old_format(source, destination) -> None:
    """``source`` as bags were before: the gripper a std_msgs/Float32, frames world/base/camera_optical, no tf."""
    old_frames = {"odom": "world", "base_link": "base", "camera_optical_frame": "camera_optical"}
    messages = _messages(source)
    with Writer(destination, version=9) as writer:
        connections = {}
        for topic, msgtype, stamp, message, raw in messages:
            if topic in ("/tf", "/tf_static"):
                continue
            if topic == "/robot/gripper":
                assert msgtype == "sensor_msgs/msg/JointState"
                message, msgtype = TYPESTORE.types["std_msgs/msg/Float32"](data=float(message.position[0])), "std_msgs/msg/Float32"
            elif hasattr(message, "header") and message.header.frame_id in old_frames:
                message.header.frame_id = old_frames[message.header.frame_id]
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(connections[topic], stamp, TYPESTORE.serialize_cdr(message, msgtype))


@pytest.mark.parametrize("scenario", ["arm", "rover"])
def test_old_format_bags_read_as_the_new_ones(bags, scenario, tmp_path):
    old = tmp_path / f"old_{scenario}"
    _write_old_format(bags[scenario], old)
    new_episode, old_episode = read_episode(bags[scenario]), read_episode(old)
    assert new_episode.modality == old_episode.modality
    np.testing.assert_array_equal(new_episode.frames, old_episode.frames)
    np.testing.assert_allclose(new_episode.actions, old_episode.actions, atol=1e-6)  # Float32 vs float64 gripper
    if scenario == "arm":  # the gripper column comes from the JointState
        gripper = new_episode.actions[:, -1]
        assert np.isfinite(gripper).all() and gripper.max() > 0.0


def test_optical_rotation_matches_rep103():
    from astra_ros.data.frames import OPTICAL_IN_LINK

    rotation = quaternion_to_matrix(OPTICAL_IN_LINK.quat_xyzw)
    np.testing.assert_allclose(rotation @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical z = camera_link x
    np.testing.assert_allclose(invert_transform(pose_to_matrix(np.zeros(3), OPTICAL_IN_LINK.quat_xyzw))[:3, :3],
                               rotation.T, atol=1e-12)
