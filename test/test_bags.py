"""Reading bags written by hand into episodes and clips: encodings, topics, message types, storage, stamps and
clocks, held signals."""

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer

import astra_ros.data.bags as bags_module
from astra_ros.data.actions import rebase_camera_actions
from astra_ros.data.bags import BagError, BagTopics, modality_from_topics, read_episode
from astra_ros.data.clips import ClipDataset
from astra_ros.data.geometry import pose_to_matrix, relative_transforms
from astra_ros.data.images import ImageDecodeError, image_to_rgb, resize_rgb

from bag_writing import (TYPESTORE, EPOCH_NS, WIDTH, HEIGHT, FRAME_NS, STATE_NS, YAW_RATE, SPEED, CUSTOM_TOPICS,
                          reference_frame, image_message, camera_world_pose, twist_message, odometry_message,
                          write_bag, header_stamps_in_bag_order, write_robot_bag)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_decode_with_row_padding(encoding):
    rgb = reference_frame(3)
    message = image_message(0, rgb, encoding, row_padding=5)
    decoded = image_to_rgb(message.data, height=message.height, width=message.width, encoding=encoding, step=message.step)
    np.testing.assert_array_equal(decoded, rgb)


def test_mono8_decodes_to_grey_rgb():
    rgb = reference_frame(1)
    message = image_message(0, rgb, "mono8", row_padding=3)
    decoded = image_to_rgb(message.data, height=HEIGHT, width=WIDTH, encoding="mono8", step=message.step)
    np.testing.assert_array_equal(decoded, np.repeat(rgb[:, :, :1], 3, axis=2))


def test_mono16_honours_endianness():
    values = np.array([[0x1234, 0xABCD]], dtype=">u2")
    decoded = image_to_rgb(values.tobytes(), height=1, width=2, encoding="mono16", step=4, is_bigendian=True)
    np.testing.assert_array_equal(decoded[0, :, 0], [0x12, 0xAB])


def test_unsupported_encoding_names_the_supported_ones():
    with pytest.raises(ImageDecodeError, match="yuv422.*rgb8, bgr8, rgba8, bgra8, mono8"):
        image_to_rgb(bytes(8), height=2, width=2, encoding="yuv422", step=4)


def test_short_image_buffer_is_an_error():
    with pytest.raises(ImageDecodeError, match="needs"):
        image_to_rgb(bytes(10), height=2, width=2, encoding="rgb8", step=6)


def test_a_huge_step_without_last_row_padding_decodes_without_allocating_it():
    # step is a uint32 on the wire: a corrupt one of hundreds of MB must not be allocated per message.
    import tracemalloc

    two_rows = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    step = 300_000_000
    data = np.zeros(step + 12, dtype=np.uint8)  # row 0, its padding, then row 1 without padding
    data[:12], data[step:] = two_rows[0].ravel(), two_rows[1].ravel()
    tracemalloc.start()
    try:
        decoded = image_to_rgb(data, height=2, width=4, encoding="rgb8", step=step)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(decoded, two_rows)
    assert peak < 10_000_000


def test_resize_uses_requested_height_width():
    resized = resize_rgb(reference_frame(0), (16, 20))
    assert resized.shape == (16, 20, 3) and resized.dtype == np.uint8


def test_bgr8_twiststamped_custom_topics_give_the_same_clips_as_rgb8_twist(tmp_path):
    contract = write_bag(tmp_path / "contract")
    custom = write_bag(tmp_path / "custom", topics=CUSTOM_TOPICS, encoding="bgr8", twist_type="TwistStamped", row_padding=4)
    for modality in ("twist", "camera", "keys"):
        expected = read_episode(contract, modality, (HEIGHT, WIDTH))
        got = read_episode(custom, modality, (HEIGHT, WIDTH), topics=CUSTOM_TOPICS)
        np.testing.assert_array_equal(got.frames, expected.frames)
        np.testing.assert_array_equal(got.actions, expected.actions)
        np.testing.assert_array_equal(got.stamps_ns, expected.stamps_ns)
    np.testing.assert_array_equal(expected.frames[4], reference_frame(4))
    clips_contract = ClipDataset([contract], "twist", 4, (16, 20), None)
    clips_custom = ClipDataset([custom], "twist", 4, (16, 20), None, topics=CUSTOM_TOPICS)
    assert len(clips_contract) == len(clips_custom) == 9
    for index in (0, 5):
        a, b = clips_contract[index], clips_custom[index]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["actions"], b["actions"])


@pytest.mark.parametrize("encoding", ["mono8", "rgba8"])
def test_mono8_and_rgba8_bags_decode(tmp_path, encoding):
    bag = write_bag(tmp_path / encoding, encoding=encoding)
    episode = read_episode(bag, "camera")
    expected = reference_frame(2) if encoding == "rgba8" else np.repeat(reference_frame(2)[:, :, :1], 3, axis=2)
    np.testing.assert_array_equal(episode.frames[2], expected)


def test_sqlite3_storage_reads_like_mcap(tmp_path):
    mcap = read_episode(write_bag(tmp_path / "m"), "camera")
    sqlite = read_episode(write_bag(tmp_path / "s", storage="sqlite3"), "camera")
    np.testing.assert_array_equal(sqlite.frames, mcap.frames)
    np.testing.assert_array_equal(sqlite.actions, mcap.actions)


def test_odometry_works_as_twist_source(tmp_path):
    topics = BagTopics(twist="/odom")
    via_odom = read_episode(write_bag(tmp_path / "o", topics=topics, twist_type="Odometry"), "twist", topics=topics)
    via_twist = read_episode(write_bag(tmp_path / "t"), "twist")
    np.testing.assert_allclose(via_odom.actions, via_twist.actions)


def test_twist_actions_hold_the_command_and_scale_by_frame_interval(tmp_path):
    episode = read_episode(write_bag(tmp_path / "b"), "twist")
    assert episode.actions.shape == (12, 6)
    # Command at 0.5 s is forward SPEED and turn YAW_RATE; at 1.0 s forward stopped and the turn reversed.
    np.testing.assert_allclose(episode.actions[5], [SPEED * 0.1, 0, 0, 0, 0, YAW_RATE * 0.1], atol=1e-6)
    np.testing.assert_allclose(episode.actions[10], [0, 0, 0, 0, 0, -YAW_RATE * 0.1], atol=1e-6)
    keys = read_episode(write_bag(tmp_path / "k"), "keys").actions
    assert keys[5].argmax() == 0  # forward: 10x its threshold beats the 2.7x turn
    assert keys[10].argmax() == 5  # turn_right


def test_camera_poses_are_interpolated_between_pose_messages(tmp_path):
    """Images halfway between pose messages get the lerped position and the slerped rotation."""
    offset = STATE_NS // 2
    episode = read_episode(write_bag(tmp_path / "b", image_offset_ns=offset), "camera")
    for index in (1, 4, 7):
        t0 = offset * 1e-9
        t1 = (index * FRAME_NS + offset) * 1e-9
        p0, q0 = camera_world_pose(t0)
        p1, q1 = camera_world_pose(t1)
        # Motion at constant speed and yaw rate is exactly linear / slerp between samples.
        expected = relative_transforms(pose_to_matrix(p0, q0), pose_to_matrix(p1, q1)[None])[0]
        np.testing.assert_allclose(episode.actions[index].reshape(3, 4), expected[:3], atol=2e-5)


def test_camera_windows_are_relative_to_their_first_frame(tmp_path):
    bag = write_bag(tmp_path / "b")
    episode = read_episode(bag, "camera", (16, 20))
    clips = ClipDataset([bag], "camera", 5, (16, 20), None, frame_format="uint8")
    item = clips[3]
    assert item["start"] == 3 and item["frames"].shape == (5, 16, 20, 3) and item["frames"].dtype == torch.uint8
    np.testing.assert_allclose(item["actions"][0].numpy(), np.eye(4)[:3].reshape(-1), atol=1e-6)
    np.testing.assert_allclose(item["actions"].numpy(), rebase_camera_actions(episode.actions[3:8]), atol=1e-6)
    # Forward motion with a left turn: the camera moves along +z of the window's first frame.
    assert item["actions"][4, 11] > 0.1
    float_item = ClipDataset([bag], "camera", 5, (16, 20), None)[0]
    assert float_item["frames"].shape == (5, 3, 16, 20) and float_item["frames"].dtype == torch.float32
    assert float_item["frames"].min() >= -1.0 and float_item["frames"].max() <= 1.0


def test_modality_is_picked_from_topics(tmp_path, caplog):
    assert modality_from_topics(["/camera/image_raw", "/camera/pose", "/cmd_vel"]) == "camera"
    assert modality_from_topics(["/camera/image_raw", "/camera/pose", "/cmd_vel", "/odom"]) == "twist"
    assert modality_from_topics(["/camera/image_raw", "/robot/ee_pose"]) == "robot"
    assert "read as camera actions" not in caplog.text
    # A mobile robot's bag recorded without its commands is read as camera poses, and says so.
    assert modality_from_topics(["/camera/image_raw", "/camera/pose", "/odom"], bag_path="drive_3") == "camera"
    assert "bag drive_3 has /odom but no /cmd_vel: read as camera actions" in caplog.text
    with pytest.raises(BagError, match="cannot tell the modality of bag drive_7: .* --modality"):
        modality_from_topics(["/camera/image_raw"], bag_path="drive_7")
    assert read_episode(write_bag(tmp_path / "b")).modality == "camera"


def test_jittered_pose_and_image_messages_are_read_in_stamp_order(tmp_path):
    # Pose tick 10 and image 4 reach the recorder after later-stamped messages of their topic.
    clean = read_episode(write_bag(tmp_path / "clean"), "camera")
    jittered = write_bag(tmp_path / "jitter", record_delays_ns={("pose", 10): 50_000_000, ("image", 4): 150_000_000})
    image_stamps = header_stamps_in_bag_order(jittered, "/camera/image_raw")
    pose_stamps = header_stamps_in_bag_order(jittered, "/camera/pose")
    assert image_stamps.index(EPOCH_NS + 4 * FRAME_NS) == 5 and pose_stamps.index(EPOCH_NS + 10 * STATE_NS) == 11
    episode = read_episode(jittered, "camera")
    np.testing.assert_array_equal(episode.stamps_ns, EPOCH_NS + np.arange(12) * FRAME_NS)
    np.testing.assert_array_equal(episode.frames[4], reference_frame(4))
    np.testing.assert_array_equal(episode.frames[5], reference_frame(5))
    np.testing.assert_array_equal(episode.frames, clean.frames)
    np.testing.assert_allclose(episode.actions, clean.actions, atol=1e-7)
    # A pose stamped half a tick off, between its neighbours, is interpolated in stamp order too.
    assert episode.valid.all()


def test_stamps_that_sorting_cannot_fix_are_an_error(tmp_path):
    # Image 9 stamped 0.75 s before image 8: more reordering than any transport jitter, a clock that jumped.
    jumped = write_bag(tmp_path / "jump", image_stamp_override={9: EPOCH_NS + 150_000_000})
    with pytest.raises(BagError, match=r"/camera/image_raw go backwards at message 9: 1700000000\.150000000 s "
                                       r"recorded after 1700000000\.800000000 s"):
        read_episode(jumped, "camera")
    # Two pose messages with one stamp and different poses: which one holds at that stamp cannot be told.
    duplicated = write_bag(tmp_path / "dup", pose_stamp_override={5: EPOCH_NS + 4 * STATE_NS})
    with pytest.raises(BagError, match=r"messages 4 and 5 on /camera/pose carry the same stamp 1700000000\.133333332 s "
                                       r"but different values"):
        read_episode(duplicated, "camera")


def test_a_pose_topic_on_another_clock_is_an_error_naming_topic_and_offset(tmp_path):
    # Poses stamped 1.5 s later than recorded overlap the images' stamps, so nothing used to notice:
    # frames were paired with the pose of 1.5 s earlier and the first 15 frames silently became NaN.
    for pose_type in ("PoseStamped", "Odometry"):
        bag = write_bag(tmp_path / pose_type, frames=40, pose_type=pose_type, pose_stamp_offset_ns=1_500_000_000)
        with pytest.raises(BagError, match=r"'/camera/pose' is on another clock than '/camera/image_raw'.*"
                                           r"\+1\.500 s"):
            read_episode(bag, "camera")
    on_one_clock = read_episode(write_bag(tmp_path / "odom_fine", pose_type="Odometry"), "camera")
    np.testing.assert_allclose(on_one_clock.actions, read_episode(write_bag(tmp_path / "fine"), "camera").actions)


def test_an_ee_pose_on_another_clock_is_an_error(tmp_path):
    bag = write_robot_bag(tmp_path / "b", [(0, 0.08)], ee_stamp_offset_ns=-2_000_000_000, ticks=120)
    with pytest.raises(BagError, match=r"'/robot/ee_pose' is on another clock.*-2\.000 s"):
        read_episode(bag, "robot")


def test_a_topic_with_two_message_types_names_them(tmp_path):
    bag = write_bag(tmp_path / "b")
    mixed = tmp_path / "mixed"
    with Writer(mixed, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        twist = writer.add_connection("/cmd_vel", "geometry_msgs/msg/Twist", typestore=TYPESTORE)
        odometry = writer.add_connection("/cmd_vel", "nav_msgs/msg/Odometry", typestore=TYPESTORE)
        for index in range(4):
            stamp = EPOCH_NS + index * FRAME_NS
            writer.write(images, stamp, TYPESTORE.serialize_cdr(image_message(stamp, reference_frame(index), "rgb8"),
                                                                "sensor_msgs/msg/Image"))
            writer.write(twist, stamp, TYPESTORE.serialize_cdr(twist_message([SPEED, 0, 0], [0, 0, 0]),
                                                               "geometry_msgs/msg/Twist"))
            writer.write(odometry, stamp + 1, TYPESTORE.serialize_cdr(
                odometry_message(stamp + 1, [0, 0, 0], [0, 0, 0, 1], [SPEED, 0, 0], [0, 0, 0]), "nav_msgs/msg/Odometry"))
    with pytest.raises(BagError) as error:
        read_episode(mixed, "twist")
    message = str(error.value)
    assert "'/cmd_vel'" in message and "geometry_msgs/msg/Twist and nav_msgs/msg/Odometry" in message
    assert "geometry_msgs/msg/TwistStamped" in message  # the expected types are listed
    # A requested topic of the wrong type names what it found and what it expected.
    with pytest.raises(BagError, match=r"'/cmd_vel' has type geometry_msgs/msg/Twist; expected for the camera pose: "
                                       r"geometry_msgs/msg/PoseStamped"):
        read_episode(bag, "camera", topics=BagTopics(camera_pose="/cmd_vel"))
    # Twist in one bag and Odometry in another on the same topic give the same actions.
    odometry_bag = write_bag(tmp_path / "odom", twist_type="Odometry")
    clips = [ClipDataset([path], "twist", 4, (HEIGHT, WIDTH), None) for path in (bag, odometry_bag)]
    assert torch.allclose(clips[0][3]["actions"], clips[1][3]["actions"])


def test_the_gripper_state_is_held_not_interpolated(tmp_path):
    # Published on change only (latched): open 0.08 m at 0 s, closed at 0.55 s.
    bag = write_robot_bag(tmp_path / "b", [(0, 0.08), (550_000_000, 0.0)])
    gripper = read_episode(bag, "robot").actions[:, 9]
    np.testing.assert_array_equal(gripper, np.float32([0.08] * 6 + [0.0] * 6))


def test_commands_are_zero_once_the_topic_goes_stale(tmp_path):
    # Commands stop after tick 12 (0.4 s); the robot's controller stops it COMMAND_TIMEOUT_NS later.
    assert bags_module.COMMAND_TIMEOUT_NS == 500_000_000
    episode = read_episode(write_bag(tmp_path / "b", command_ticks=13), "twist")
    moving = [SPEED * 0.1, 0, 0, 0, 0, YAW_RATE * 0.1]
    np.testing.assert_allclose(episode.actions[:9], np.tile(moving, (9, 1)), atol=1e-6)  # up to 0.8 s
    np.testing.assert_array_equal(episode.actions[9:], np.zeros((3, 6)))  # 0.9 s: 0.500000004 s after the last
    keys = read_episode(write_bag(tmp_path / "k", command_ticks=13), "keys").actions
    assert keys[8].argmax() == 0 and keys[10].argmax() != 0 and keys[10].sum() == keys[0].sum()


def test_frames_are_filled_into_one_array_without_a_second_copy(tmp_path):
    import tracemalloc

    bag = write_bag(tmp_path / "b", frames=30)
    read_episode(bag, "camera", (240, 320))  # warm up imports and caches
    tracemalloc.start()
    try:
        episode = read_episode(bag, "camera", (240, 320))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert episode.frames.shape == (30, 240, 320, 3)
    np.testing.assert_array_equal(episode.frames[7], resize_rgb(reference_frame(7), (240, 320)))
    assert peak < 1.4 * episode.frames.nbytes, f"peak {peak / 1e6:.1f} MB for {episode.frames.nbytes / 1e6:.1f} MB of frames"


def test_an_uncalibrated_camera_info_gives_no_intrinsics_and_a_warning(tmp_path, caplog):
    calibrated = write_bag(tmp_path / "good", camera_info=(WIDTH, HEIGHT, [50, 0, 15, 0, 50, 10, 0, 0, 1]))
    episode = read_episode(calibrated, "camera", (HEIGHT // 2, WIDTH // 2))
    assert episode.camera_info.fx == pytest.approx(25) and episode.camera_info.width == WIDTH // 2
    uncalibrated = write_bag(tmp_path / "zeros", camera_info=(0, 0, [0.0] * 9))  # drivers before calibration
    for resolution in (None, (HEIGHT // 2, WIDTH // 2)):
        with caplog.at_level("WARNING"):
            episode = read_episode(uncalibrated, "camera", resolution)
        assert episode.camera_info is None and len(episode.frames) == 12
        assert "/camera/camera_info has no usable calibration" in caplog.text
    # Zeros first, then the calibration (a driver that loads it late): the calibration was ignored too.
    late = write_bag(tmp_path / "late", camera_info=[(0, 0, [0.0] * 9), (WIDTH, HEIGHT, [50, 0, 15, 0, 50, 10, 0, 0, 1])])
    caplog.clear()
    with caplog.at_level("WARNING"):
        episode = read_episode(late, "camera", None)
    assert episode.camera_info is not None and episode.camera_info.fx == pytest.approx(50)
    assert caplog.text.count("no usable calibration") == 1
