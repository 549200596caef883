"""Bags that cannot be read give one clear error naming the bag, the topic and the stamp, raised from its cause."""

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer

import astra_ros.data.bags as bags_module
from astra_ros.data.bags import BagError, ReadStats, bag_topics, read_episode
from astra_ros.data.clips import ClipDataset
from astra_ros.data.images import ImageDecodeError

from bag_writing import (TYPESTORE, T, EPOCH_NS, WIDTH, HEIGHT, FRAME_NS, reference_frame, header,
                          image_message, camera_world_pose, pose_stamped, write_bag)


def test_commands_whose_stamps_cannot_place_them_are_an_error(tmp_path):
    # Held without a range limit, such commands gave every frame the bag's last command, silently.
    unset = write_bag(tmp_path / "unset", twist_type="TwistStamped", command_stamp_fixed_ns=0)
    with pytest.raises(BagError, match=r"all 36 messages on /cmd_vel carry the same stamp"):
        read_episode(unset, "twist")
    other_clock = write_bag(tmp_path / "clock", twist_type="TwistStamped", command_stamp_offset_ns=3600 * 10**9)
    with pytest.raises(BagError, match="do not overlap the images'.*another clock"):
        read_episode(other_clock, "keys")
    assert read_episode(write_bag(tmp_path / "fine", twist_type="TwistStamped"), "twist").valid.all()


def test_missing_topic_lists_the_topics_of_the_bag(tmp_path):
    bag = write_bag(tmp_path / "b")
    with pytest.raises(BagError) as error:
        read_episode(bag, "robot")
    message = str(error.value)
    assert str(bag) in message and "/robot/ee_pose" in message
    for topic in ("/camera/image_raw", "/camera/pose", "/cmd_vel"):
        assert topic in message


def test_empty_bag_is_an_error(tmp_path):
    bag = write_bag(tmp_path / "empty", write_messages=False)
    with pytest.raises(BagError, match="empty"):
        read_episode(bag, "camera")


def test_image_stamps_going_backwards_say_where(tmp_path):
    # Recorded 0.3 s late, image 6 is sorted into place, where it finds image 2's stamp: two frames, one time.
    bag = write_bag(tmp_path / "b", image_stamp_override={6: EPOCH_NS + 2 * FRAME_NS})
    with pytest.raises(BagError, match=r"messages 2 and 6 on /camera/image_raw carry the same stamp 1700000000\.200000000 s"):
        read_episode(bag, "camera")


def test_nan_pose_frames_are_skipped_and_counted(tmp_path):
    bag = write_bag(tmp_path / "b", nan_pose_ticks=(18,))  # tick 18 is the pose at image 6
    stats = ReadStats()
    episode = read_episode(bag, "camera", stats=stats)
    assert stats.nan_frames == 1 and not episode.valid[6] and episode.valid[[0, 5, 7]].all()
    clips = ClipDataset([bag], "camera", 4, (HEIGHT, WIDTH), None)
    assert clips.stats.nan_frames == 1
    assert clips.stats.windows == 9 and clips.stats.skipped_windows == 4  # starts 3, 4, 5, 6 contain frame 6
    assert len(clips) == 5
    for index in range(len(clips)):
        assert torch.isfinite(clips[index]["actions"]).all()


def test_a_damaged_record_or_an_empty_compressed_image_names_topic_and_stamp(tmp_path):
    path = tmp_path / "damaged"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        poses = writer.add_connection("/camera/pose", "geometry_msgs/msg/PoseStamped", typestore=TYPESTORE)
        for index in range(3):
            stamp = EPOCH_NS + index * FRAME_NS
            raw = TYPESTORE.serialize_cdr(image_message(stamp, reference_frame(index), "rgb8"), "sensor_msgs/msg/Image")
            writer.write(images, stamp, raw[:40] if index == 1 else raw)  # record 1 cut short
            pose = pose_stamped(stamp, *camera_world_pose(index * 0.1))
            writer.write(poses, stamp, TYPESTORE.serialize_cdr(pose, "geometry_msgs/msg/PoseStamped"))
    with pytest.raises(BagError, match=r"topic '/camera/image_raw', message recorded at 1700000000.1.*deserialise"):
        read_episode(path, "camera")
    empty = tmp_path / "empty_jpeg"
    with Writer(empty, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/CompressedImage", typestore=TYPESTORE)
        message = T["sensor_msgs/msg/CompressedImage"](header=header(EPOCH_NS), format="jpeg", data=np.zeros(0, np.uint8))
        writer.write(images, EPOCH_NS, TYPESTORE.serialize_cdr(message, "sensor_msgs/msg/CompressedImage"))
        poses = writer.add_connection("/camera/pose", "geometry_msgs/msg/PoseStamped", typestore=TYPESTORE)
        writer.write(poses, EPOCH_NS, TYPESTORE.serialize_cdr(pose_stamped(EPOCH_NS, *camera_world_pose(0.0)),
                                                             "geometry_msgs/msg/PoseStamped"))
    with pytest.raises(BagError, match="at 1700000000.0.*compressed image of format 'jpeg' has no data"):
        read_episode(empty, "camera")


def test_corrupt_bag_file_is_an_error(tmp_path):
    bag = write_bag(tmp_path / "b")
    mcap_file = next(bag.glob("*.mcap"))
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match=f"cannot read bag {bag}"):
        read_episode(bag, "camera")
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"this is not a bag" * 10)
    with pytest.raises(BagError, match="garbage.mcap"):
        read_episode(garbage, "camera")
    with pytest.raises(BagError, match="cannot open bag"):
        bag_topics(garbage)


def test_missing_bag_path_is_an_error(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        read_episode(tmp_path / "nowhere", "camera")


def test_unsupported_encoding_in_bag_names_topic_stamp_and_supported(tmp_path):
    bag = write_bag(tmp_path / "b", encoding="yuv422")
    with pytest.raises(BagError, match=r"/camera/image_raw.*1700000000\.000000000 s.*supported: rgb8"):
        read_episode(bag, "camera")


def test_bag_errors_are_value_errors_raised_from_the_cause(tmp_path):
    bag = write_bag(tmp_path / "b", encoding="yuv422")
    with pytest.raises(ValueError) as error:
        read_episode(bag, "camera")
    assert isinstance(error.value.__cause__, ImageDecodeError)
    assert bags_module.BagError is BagError


def test_a_latched_state_published_before_the_recording_is_not_on_another_clock():
    """A gripper published once (transient local) 20 s before `ros2 bag record` started is received at the
    start: its delay of 20 s refused the whole bag as 'on another clock' although it holds for every frame."""
    from astra_ros.data.sampling import _check_clock, _ImageClock

    image_stamps = EPOCH_NS + np.arange(30) * FRAME_NS
    images = _ImageClock("/camera/image_raw", image_stamps, image_stamps + 30_000_000)
    before = np.array([EPOCH_NS - 20 * 10**9])
    _check_clock("b", "/robot/gripper", before, np.array([EPOCH_NS]), images, "latched")  # no error
    # Later messages on that topic are still checked: one stamped an hour off the images' clock is refused.
    stamps = np.concatenate([before, [EPOCH_NS + 5 * FRAME_NS]])
    with pytest.raises(BagError, match="'/robot/gripper' is on another clock"):
        _check_clock("b", "/robot/gripper", stamps, np.concatenate([[EPOCH_NS], stamps[1:] + 3600 * 10**9]), images,
                     "latched")
    with pytest.raises(BagError, match="on another clock"):  # a state sampled every frame is checked as before
        _check_clock("b", "/camera/pose", before, np.array([EPOCH_NS]), images, "interpolated")


def test_a_joint_state_of_several_joints_without_the_gripper_joint_is_refused_by_name():
    """/joint_states of an arm, or a gripper's two finger joints, read its first joint as the opening [m]."""
    from types import SimpleNamespace

    from astra_ros.data.bag_messages import GRIPPER_JOINT, JOINT_STATE_MSGTYPE, _numeric_value

    def joints(names, positions):
        return SimpleNamespace(name=names, position=positions)

    arm = joints(["shoulder_pan_joint", "elbow_joint"], [1.2, -0.4])
    with pytest.raises(ValueError, match=r"\['shoulder_pan_joint', 'elbow_joint'\] has no 'gripper_joint'"):
        _numeric_value(arm, JOINT_STATE_MSGTYPE)
    assert _numeric_value(joints(["finger", GRIPPER_JOINT], [0.01, 0.04]), JOINT_STATE_MSGTYPE).tolist() == [0.04]
    assert _numeric_value(joints(["finger"], [0.03]), JOINT_STATE_MSGTYPE).tolist() == [0.03]  # one joint: it
