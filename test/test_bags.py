"""Reading bags written by hand into episodes and clips: topics, encodings, message types, storage, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

import astra_ros.data.bags as bags_module
from astra_ros.data.actions import rebase_camera_actions
from astra_ros.data.bags import BagError, BagTopics, ReadStats, bag_topics, modality_from_topics, read_episode
from astra_ros.data.clips import ClipDataset
from astra_ros.data.geometry import (
    BODY_FROM_OPTICAL,
    matrix_to_quaternion,
    pose_to_matrix,
    relative_transforms,
    yaw_pitch_to_matrix,
)
from astra_ros.data.images import ImageDecodeError, image_to_rgb, resize_rgb

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
EPOCH_NS = 1_700_000_000 * 1_000_000_000
WIDTH, HEIGHT = 40, 32
FRAME_NS = 100_000_000  # 10 Hz images
STATE_NS = 1_000_000_000 // 30  # ~30 Hz poses and commands
YAW_RATE = 0.4  # [rad/s]
SPEED = 0.5  # [m/s]
CUSTOM_TOPICS = BagTopics(image="/front/color", camera_pose="/tracker/pose", twist="/base/cmd", camera_info="/front/info")


def reference_frame(index: int) -> np.ndarray:
    """A structured rgb test frame that changes with the index."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    red = (rows * 7 + index * 11) % 256
    green = (cols * 5 + index * 3) % 256
    blue = ((rows + cols) * 3) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def header(stamp_ns: int, frame_id: str = "camera_optical"):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame_id,
    )


def image_message(stamp_ns: int, rgb: np.ndarray, encoding: str, row_padding: int = 0):
    pixels = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2),
        "mono8": rgb[:, :, :1],
        "yuv422": rgb[:, :, :2],
    }[encoding]
    rows = pixels.reshape(rgb.shape[0], -1)
    rows = np.concatenate([rows, np.full((rows.shape[0], row_padding), 99, np.uint8)], axis=1)
    return T["sensor_msgs/msg/Image"](
        header=header(stamp_ns), height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0,
        step=rows.shape[1], data=rows.reshape(-1).copy(),
    )


def camera_world_pose(t_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera moving forward at SPEED while turning left at YAW_RATE (optical frame in the world)."""
    yaw = YAW_RATE * t_s
    position = np.array([SPEED * t_s, 0.2 * t_s, 1.0])
    rotation = yaw_pitch_to_matrix(yaw, 0.0) @ BODY_FROM_OPTICAL
    return position, matrix_to_quaternion(rotation)


def command_at(t_s: float) -> tuple[list[float], list[float]]:
    return [SPEED if t_s < 0.6 else 0.0, 0.0, 0.0], [0.0, 0.0, YAW_RATE if t_s < 0.9 else -YAW_RATE]


def pose_stamped(stamp_ns: int, position, quat, frame_id="world"):
    return T["geometry_msgs/msg/PoseStamped"](
        header=header(stamp_ns, frame_id),
        pose=T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](*map(float, position)),
            orientation=T["geometry_msgs/msg/Quaternion"](*map(float, quat)),
        ),
    )


def twist_message(linear, angular):
    vector = T["geometry_msgs/msg/Vector3"]
    return T["geometry_msgs/msg/Twist"](linear=vector(*map(float, linear)), angular=vector(*map(float, angular)))


def odometry_message(stamp_ns: int, position, quat, linear, angular):
    covariance = np.zeros(36)
    return T["nav_msgs/msg/Odometry"](
        header=header(stamp_ns, "odom"), child_frame_id="base_link",
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose_stamped(stamp_ns, position, quat).pose, covariance=covariance),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist_message(linear, angular), covariance=covariance),
    )


def write_bag(
    path: Path,
    *,
    topics: BagTopics = BagTopics(),
    encoding: str = "rgb8",
    twist_type: str = "Twist",
    storage: str = "mcap",
    frames: int = 12,
    row_padding: int = 0,
    image_offset_ns: int = 0,
    image_stamp_override: dict[int, int] | None = None,
    nan_pose_ticks: tuple[int, ...] = (),
    write_messages: bool = True,
    camera_info: tuple[int, int, list[float]] | None = None,
    command_stamp_offset_ns: int = 0,
    command_stamp_fixed_ns: int | None = None,
    pose_type: str = "PoseStamped",
    pose_stamp_offset_ns: int = 0,
    command_ticks: int | None = None,
    record_delays_ns: dict[tuple[str, int], int] | None = None,
    pose_stamp_override: dict[int, int] | None = None,
) -> Path:
    """Write a small bag: images at 10 Hz, camera poses and commands at 30 Hz, a camera info.

    ``pose_stamp_offset_ns`` shifts the camera poses' header stamps (not their bag time), as a publisher on
    another clock would; ``command_ticks`` stops the commands after that many ticks; ``record_delays_ns``
    records ``("pose", tick)`` / ``("image", index)`` later than stamped, as jitter in transport would.
    """
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    twist_msgtype = {
        "Twist": "geometry_msgs/msg/Twist",
        "TwistStamped": "geometry_msgs/msg/TwistStamped",
        "Odometry": "nav_msgs/msg/Odometry",
    }[twist_type]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_connection = writer.add_connection(topics.image, "sensor_msgs/msg/Image", typestore=TYPESTORE)
        pose_msgtype = {"PoseStamped": "geometry_msgs/msg/PoseStamped", "Odometry": "nav_msgs/msg/Odometry"}[pose_type]
        pose_connection = writer.add_connection(topics.camera_pose, pose_msgtype, typestore=TYPESTORE)
        twist_connection = writer.add_connection(topics.twist, twist_msgtype, typestore=TYPESTORE)
        info_connection = (writer.add_connection(topics.camera_info, "sensor_msgs/msg/CameraInfo", typestore=TYPESTORE)
                           if camera_info is not None else None)
        if not write_messages:
            return path
        entries = []
        for tick in range(frames * 3):
            stamp = EPOCH_NS + tick * STATE_NS
            t_s = tick * STATE_NS * 1e-9
            position, quat = camera_world_pose(t_s)
            if tick in nan_pose_ticks:
                position = np.full(3, np.nan)
            pose_stamp = (pose_stamp_override or {}).get(tick, stamp + pose_stamp_offset_ns)
            pose = pose_stamped(pose_stamp, position, quat)
            if pose_type == "Odometry":
                pose = odometry_message(pose_stamp, position, quat, [0.0] * 3, [0.0] * 3)
            delay = (record_delays_ns or {}).get(("pose", tick), 0)
            entries.append((stamp + delay, pose_connection, pose, pose_msgtype))
            if command_ticks is not None and tick >= command_ticks:
                continue
            linear, angular = command_at(t_s)
            twist = twist_message(linear, angular)
            if twist_type == "TwistStamped":
                command_stamp = stamp + command_stamp_offset_ns if command_stamp_fixed_ns is None else command_stamp_fixed_ns
                twist = T["geometry_msgs/msg/TwistStamped"](header=header(command_stamp, "base_link"), twist=twist)
            elif twist_type == "Odometry":
                covariance = np.zeros(36)
                twist = T["nav_msgs/msg/Odometry"](
                    header=header(stamp, "odom"), child_frame_id="base_link",
                    pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose_stamped(stamp, position, quat).pose, covariance=covariance),
                    twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=covariance),
                )
            entries.append((stamp, twist_connection, twist, twist_msgtype))
        for index in range(frames):
            stamp = EPOCH_NS + index * FRAME_NS + image_offset_ns
            if image_stamp_override and index in image_stamp_override:
                stamp = image_stamp_override[index]
            message = image_message(stamp, reference_frame(index), encoding, row_padding)
            # Bag order follows the writing order: images at their nominal time.
            delay = (record_delays_ns or {}).get(("image", index), 0)
            entries.append((EPOCH_NS + index * FRAME_NS + image_offset_ns + delay, image_connection, message,
                            "sensor_msgs/msg/Image"))
        if camera_info is not None:  # (width, height, K row-major)
            width, height, k = camera_info
            roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            info = T["sensor_msgs/msg/CameraInfo"](
                header=header(EPOCH_NS), height=height, width=width, distortion_model="", d=np.zeros(0),
                k=np.asarray(k, dtype=np.float64), r=np.zeros(9), p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)
            entries.append((EPOCH_NS, info_connection, info, "sensor_msgs/msg/CameraInfo"))
        for stamp, connection, message, msgtype in sorted(entries, key=lambda entry: entry[0]):
            writer.write(connection, stamp, TYPESTORE.serialize_cdr(message, msgtype))
    return path


# --- images ---------------------------------------------------------------------------------------


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


# --- episodes -----------------------------------------------------------------------------------


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


# --- cache ----------------------------------------------------------------------------------------


def test_clip_cache_avoids_decoding_again(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "b")
    cache = tmp_path / "cache"
    first = ClipDataset([bag], "camera", 4, (16, 20), cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def must_not_decode(*args, **kwargs):
        raise AssertionError("bag decoded although it is cached")

    monkeypatch.setattr("astra_ros.data.clips.read_episode", must_not_decode)
    second = ClipDataset([bag], "camera", 4, (16, 20), cache)
    assert torch.equal(first[2]["frames"], second[2]["frames"])
    assert torch.equal(first[2]["actions"], second[2]["actions"])
    monkeypatch.undo()
    ClipDataset([bag], "camera", 4, (8, 10), cache)  # other options: a new entry
    assert len(list(cache.glob("*.npz"))) == 2



def test_a_bag_reached_by_a_relative_path_uses_the_same_cache_entry(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "b")
    cache = tmp_path / "cache"
    ClipDataset([bag.resolve()], "camera", 4, (16, 20), cache)
    monkeypatch.chdir(tmp_path)
    ClipDataset([Path("b")], "camera", 4, (16, 20), cache)
    assert len(list(cache.glob("*.npz"))) == 1

def test_another_window_length_shares_the_decoded_episodes(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "b")
    short = ClipDataset([bag], "camera", 4, (16, 20), None)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("bag decoded again for a second window length")

    monkeypatch.setattr("astra_ros.data.clips.read_episode", must_not_decode)
    long = short.with_clip_frames(7)
    assert long._episodes is short._episodes  # one copy of the frames in memory
    assert len(long) == len(short) - 3 and long.stats.windows == len(long)
    assert short.clip_frames == 4 and len(short) == 9  # the original is left as it was
    monkeypatch.undo()
    reference = ClipDataset([bag], "camera", 7, (16, 20), None)
    for index in (0, len(long) - 1):
        assert torch.equal(long[index]["frames"], reference[index]["frames"])
        assert torch.equal(long[index]["actions"], reference[index]["actions"])
    with pytest.raises(ValueError, match="clip_frames"):
        short.with_clip_frames(0)


def test_a_damaged_cache_entry_is_decoded_again_with_a_warning(tmp_path, caplog):
    bag = write_bag(tmp_path / "b")
    cache = tmp_path / "cache"
    first = ClipDataset([bag], "camera", 4, (16, 20), cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # a copy killed halfway
    with caplog.at_level("WARNING"):
        again = ClipDataset([bag], "camera", 4, (16, 20), cache)
    assert str(entry) in caplog.text and "decoding" in caplog.text
    assert torch.equal(first[2]["frames"], again[2]["frames"])
    assert ClipDataset([bag], "camera", 4, (16, 20), cache)[2]["frames"].equal(first[2]["frames"])  # rewritten


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

# --- errors ---------------------------------------------------------------------------------------


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



# --- stamps, clocks, types, held signals ----------------------------------------------------------


def header_stamps_in_bag_order(path: Path, topic: str) -> list[int]:
    with AnyReader([path]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [bags_module._stamp_ns(reader.deserialize(raw, c.msgtype).header)
                for c, _, raw in reader.messages(connections=connections)]


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


def write_robot_bag(path: Path, gripper: list[tuple[int, float]], *, ee_stamp_offset_ns: int = 0, ticks: int = 36) -> Path:
    """Images at 10 Hz, ee poses at 30 Hz, and the gripper only when it changes: ``[(offset_ns, opening_m)]``."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        poses = writer.add_connection("/robot/ee_pose", "geometry_msgs/msg/PoseStamped", typestore=TYPESTORE)
        grippers = writer.add_connection("/robot/gripper", "std_msgs/msg/Float32", typestore=TYPESTORE)
        entries = []
        for tick in range(ticks):
            stamp = EPOCH_NS + tick * STATE_NS
            pose = pose_stamped(stamp + ee_stamp_offset_ns, [0.3 + 0.1 * tick * STATE_NS * 1e-9, 0, 0.2], [0, 0, 0, 1], "base")
            entries.append((stamp, poses, pose, "geometry_msgs/msg/PoseStamped"))
        for index in range(ticks // 3):
            stamp = EPOCH_NS + index * FRAME_NS
            entries.append((stamp, images, image_message(stamp, reference_frame(index), "rgb8"), "sensor_msgs/msg/Image"))
        for offset_ns, opening in gripper:
            entries.append((EPOCH_NS + offset_ns, grippers, T["std_msgs/msg/Float32"](data=opening), "std_msgs/msg/Float32"))
        for stamp, connection, message, msgtype in sorted(entries, key=lambda entry: entry[0]):
            writer.write(connection, stamp, TYPESTORE.serialize_cdr(message, msgtype))
    return path


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


def test_two_writers_of_one_cache_entry_do_not_share_a_temporary_file(tmp_path, monkeypatch):
    # Two processes filling one cache: the second finishes between the first's write and its rename.
    from astra_ros.data import clips as clips_module

    episode = read_episode(write_bag(tmp_path / "b"), "camera")
    entry = tmp_path / "cache" / "b-key.npz"
    entry.parent.mkdir()
    real_savez = np.savez
    nested = []

    def savez_then_let_the_other_writer_finish(file, **arrays):
        real_savez(file, **arrays)
        if not nested:
            nested.append(True)
            clips_module._save_episode(entry, episode)

    monkeypatch.setattr(np, "savez", savez_then_let_the_other_writer_finish)
    clips_module._save_episode(entry, episode)
    monkeypatch.undo()
    assert nested and sorted(p.name for p in entry.parent.iterdir()) == ["b-key.npz"]
    np.testing.assert_array_equal(clips_module._load_episode(entry).frames, episode.frames)


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
