"""Reading any ROS 2 bag (mcap or sqlite3) into aligned frames and per-frame action vectors.

Uses rosbags' ``AnyReader`` (pure Python, no rclpy), so a robot's own recordings are read exactly like
simulated ones. Each image is paired with the pose/twist at its header stamp:

* poses (PoseStamped, PoseWithCovarianceStamped, Odometry): positions interpolated linearly, rotations
  with slerp; an image up to ``max_extrapolation_ns`` before the first / after the last pose takes the
  edge pose, further out its action is NaN;
* commands (Twist, TwistStamped, Odometry's twist): zero-order hold, i.e. the latest command at or
  before the image, and zero before the first command (the robot was not commanded yet) or once the
  latest is older than :data:`COMMAND_TIMEOUT_NS` (the controller has stopped the robot);
* the gripper opening (sensor_msgs/JointState, or std_msgs/Float32 or Float64 as older bags have it):
  held, since grippers publish their state on change:
  the latest value at or before the image (the first one up to ``max_extrapolation_ns`` before it).

Messages without a header (Twist, Float32) are timed by their bag timestamp, everything else by its
header stamp. Each topic is sorted by those stamps (messages recorded out of order by transport jitter
are put back in place), and must be on the images' clock. Problems with a bag raise :class:`BagError`
naming the bag, topic and stamp; frames whose pose is NaN keep NaN actions and are counted in
:class:`ReadStats` so that clip sampling skips them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from astra_ros.data import arm_camera
from astra_ros.data.actions import (
    KeyThresholds,
    camera_actions,
    check_modality,
    frame_intervals,
    keys_from_twist,
    robot_actions,
    twist_actions,
)
# Bag discovery and the stamp/sampling helpers live in their own modules; imported here too, so that
# ``astra_ros.data.bags`` stays the one place callers import bag reading from.
from astra_ros.data.bag_files import (  # noqa: F401
    BAG_FILE_SUFFIXES,
    PARTIAL_SUFFIX,
    BagError,
    bag_topics,
    find_bags,
)
from astra_ros.data.bag_messages import (  # noqa: F401  (the message types are part of this module's interface)
    GRIPPER_JOINT,
    GRIPPER_MSGTYPES,
    IMAGE_MSGTYPES,
    JOINT_STATE_MSGTYPE,
    POSE_MSGTYPES,
    SCALAR_MSGTYPES,
    TWIST_MSGTYPES,
    _decode_image,
    _numeric_value,
)
from astra_ros.data.conventions import BagConventions
from astra_ros.data.frame_grid import grid_indices
from astra_ros.data.geometry import PinholeIntrinsics, pose_to_matrix
from astra_ros.data.images import ImageDecodeError, resize_rgb
from astra_ros.data.sampling import (  # noqa: F401
    CLOCK_TOLERANCE_NS,
    MAX_REORDER_NS,
    _check_clock,
    _check_duplicates,
    _format_stamp,
    _ImageClock,
    _permute_in_place,
    _stamp_order,
    _Timing,
    hold_latest,
    interpolate_poses,
    zero_order_hold,
)

logger = logging.getLogger(__name__)

# [ns] A command older than this is no longer applied: velocity controllers stop the robot when their
# command stream goes silent (the simulator rig's COMMAND_TIMEOUT_S in astra_ros.ros.sim_node is the same).
COMMAND_TIMEOUT_NS = 500_000_000


@dataclass(frozen=True)
class BagTopics:
    """Topic names to read; the defaults are the contract topics the simulator records (DESIGN.md §3)."""

    image: str = "/camera/image_raw"  # sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) or CompressedImage
    camera_info: str = "/camera/camera_info"  # sensor_msgs/CameraInfo; optional
    camera_pose: str = "/camera/pose"  # camera optical frame in the world: PoseStamped, PoseWithCovarianceStamped or Odometry
    ee_pose: str = "/robot/ee_pose"  # end-effector in the robot base frame: PoseStamped (or the other pose types)
    gripper: str = "/robot/gripper"  # JointState (or Float32/Float64) gripper opening [m]; optional (0 when absent)
    twist: str = "/cmd_vel"  # body-frame velocity command: Twist, TwistStamped or Odometry
    odom: str = "/odom"  # nav_msgs/Odometry; only used to recognise a mobile-robot bag
    tf_static: str = "/tf_static"  # tf2_msgs/TFMessage; optional: where an arm's camera is (data/arm_camera.py)


@dataclass
class ReadStats:
    """Counts of what was read and what was left out, so nothing is dropped silently."""

    episodes: int = 0  # bags read
    frames: int = 0  # images read
    nan_frames: int = 0  # frames whose action is NaN (NaN or missing pose); never used for training
    thinned_frames: int = 0  # frames of a camera faster than the model's frame grid, left out (frame_grid.py)
    windows: int = 0  # clip windows offered by a ClipDataset
    skipped_windows: int = 0  # windows left out because they contain a NaN frame
    short_episodes: int = 0  # episodes with fewer frames than one clip
    skipped_bags: list[str] = field(default_factory=list)  # bags with no usable window

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.episodes} episodes, {self.frames} frames ({self.nan_frames} with NaN actions"
            + (f", {self.thinned_frames} more left out to thin a faster camera onto the model's frame grid"
               if self.thinned_frames else "")
            + f"), {self.windows} windows ({self.skipped_windows} skipped for NaN), {self.short_episodes} too short"
        )


@dataclass(frozen=True)
class Episode:
    """One bag decoded: frames and the chosen modality's actions, one row per image."""

    frames: np.ndarray  # uint8 [T, H, W, 3] rgb
    actions: np.ndarray  # float32 [T, D]; camera actions are relative to the first frame with a valid pose
    stamps_ns: np.ndarray  # int64 [T] image header stamps [ns]
    modality: str  # camera | robot | twist | keys
    camera_info: PinholeIntrinsics | None  # intrinsics scaled to the frames' size, None when the bag has none
    bag_path: str
    # robot bags: the camera optical frame in the robot base frame (4, 4) when the bag says (arm_camera.py)
    camera_in_base: np.ndarray | None = None
    thinned_frames: int = 0  # camera frames left out to thin a faster camera onto the model's frame grid
    camera_period_ns: int | None = None  # such a camera's own median frame interval [ns] (None: not thinned)

    @property
    def valid(self) -> np.ndarray:
        """bool [T]: frames whose action is finite."""
        return np.isfinite(self.actions).all(axis=1)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def modality_from_topics(topic_names: dict[str, str] | list[str], topics: BagTopics = BagTopics(),
                         bag_path: Path | str | None = None) -> str:
    """Pick the modality a bag was recorded for from the topics it has.

    An end-effector pose means ``robot``; odometry means a mobile robot (``twist``); otherwise a camera pose
    means ``camera`` and a velocity command alone ``twist``. Raises :class:`BagError` if none apply.
    """
    names = set(topic_names)
    bag = f"bag {bag_path}" if bag_path is not None else "the bag"
    if topics.ee_pose in names:
        return "robot"
    if topics.odom in names and topics.twist in names:
        return "twist"
    if topics.camera_pose in names:
        if topics.odom in names:  # a mobile robot's bag without its commands: say what it is read as
            logger.warning("%s has %s but no %s: read as camera actions from %s", bag, topics.odom, topics.twist,
                           topics.camera_pose)
        return "camera"
    if topics.twist in names:
        return "twist"
    raise BagError(
        f"cannot tell the modality of {bag}: none of {topics.ee_pose}, {topics.camera_pose}, {topics.twist} in its "
        f"topics {sorted(names)}; name its topics and modality in a robot profile (--profile, "
        "docs/ROBOT_PROFILE.md; astra-eval also takes --pose-topic, --twist-topic, ... and --modality)"
    )


@dataclass
class _Series:
    """Messages of one topic converted to arrays, in bag order."""

    topic: str
    stamps_ns: list[int] = field(default_factory=list)  # header stamps (bag timestamps for headerless types)
    received_ns: list[int] = field(default_factory=list)  # bag timestamps: when the recorder got them
    values: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.stamps_ns, dtype=np.int64), np.asarray(self.received_ns, dtype=np.int64),
                np.asarray(self.values, dtype=np.float64))


class _FrameBuffer:
    """Decoded frames written straight into one array sized from the bag's message count.

    Collecting a list of frames and stacking it would hold every frame twice at the end of a bag.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 1)
        self.array: np.ndarray | None = None  # uint8 [capacity, H, W, 3]
        self.count = 0

    @property
    def frame_shape(self) -> tuple[int, ...] | None:
        return None if self.array is None else self.array.shape[1:]

    def append(self, rgb: np.ndarray) -> None:
        if self.array is None:
            self.array = np.empty((self.capacity, *rgb.shape), dtype=np.uint8)
        elif self.count == len(self.array):  # more messages than the bag's metadata counted: grow (rare)
            self.array = np.concatenate([self.array, np.empty_like(self.array)])
        self.array[self.count] = rgb
        self.count += 1

    def frames(self) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` of the frames appended, in bag order."""
        assert self.array is not None
        # A shorter bag than counted keeps only its frames (a copy, so the unused rows are freed).
        return self.array if self.count == len(self.array) else self.array[:self.count].copy()


@dataclass(frozen=True)
class _ReadPlan:
    """Which topics one modality needs, and which of them may be missing."""

    required: tuple[str, ...]
    optional: tuple[str, ...]


def _read_plan(modality: str, topics: BagTopics) -> _ReadPlan:
    if modality == "camera":
        return _ReadPlan((topics.image, topics.camera_pose), (topics.camera_info,))
    if modality == "robot":
        return _ReadPlan((topics.image, topics.ee_pose),
                         (topics.camera_info, topics.gripper, topics.camera_pose, topics.tf_static))
    return _ReadPlan((topics.image, topics.twist), (topics.camera_info,))


def read_episode(
    bag_path: Path | str,
    modality: str | None = None,
    resolution: tuple[int, int] | None = None,
    *,
    topics: BagTopics = BagTopics(),
    key_thresholds: KeyThresholds = KeyThresholds(),
    max_extrapolation_ns: int = 100_000_000,
    stats: ReadStats | None = None,
    conventions: BagConventions = BagConventions(),
    frame_interval_s: float | None = None,
) -> Episode:
    """Decode a bag into an :class:`Episode` of frames and ``modality`` actions (see :mod:`astra_ros.data.actions`).

    ``bag_path``: a bag directory or a bare ``.mcap`` / ``.db3`` file. ``modality``: ``camera``, ``robot``,
    ``twist``, ``keys`` or None to pick it from the topics (:func:`modality_from_topics`).
    ``resolution = (height, width)`` [px] resizes frames with area interpolation (None keeps the bag's size,
    which must then be constant). ``max_extrapolation_ns`` [ns]: how far outside the pose stream an image may
    be and still take the edge pose. Frames with NaN actions are kept and counted in ``stats.nan_frames``.
    ``conventions``: the robot's own axis signs, pose frame and fallback intrinsics, undone as the bag is read.
    ``frame_interval_s`` [s]: the model's frame interval; a faster camera's frames are thinned onto that grid
    by stamp exactly as the live node does (:mod:`astra_ros.data.frame_grid`); None keeps every frame.
    Messages are put in stamp order (see :func:`_stamp_order`). Raises :class:`BagError` for a missing, empty
    or corrupt bag, stamps that sorting cannot order (a clock jumping back, two images at one stamp), a topic
    on another clock than the images, a topic of an unexpected message type, or an unsupported encoding.
    """
    path = Path(bag_path)
    stats = stats if stats is not None else ReadStats()
    if modality is not None:
        check_modality(modality)  # the caller's argument, not the bag: a ValueError of its own
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        with AnyReader([path]) as reader:
            available = {connection.topic: connection.msgtype for connection in reader.connections}
            if modality is None:
                modality = modality_from_topics(available, topics, bag_path=path)
            if reader.message_count == 0:
                raise BagError(f"bag {path} is empty: it has no messages (topics: {_list_topics(available)})")
            plan = _read_plan(modality, topics)
            for topic in plan.required:
                if topic not in available:
                    raise BagError(
                        f"bag {path} has no topic {topic!r}, needed for modality {modality!r}; "
                        f"topics in the bag: {_list_topics(available)}"
                    )
            _check_msgtypes(path, reader.connections, modality, topics)
            wanted = [c for c in reader.connections if c.topic in plan.required + plan.optional
                      and _readable_extra(c.topic, c.msgtype, modality, topics)]
            series, images, camera_info, frames_of = _collect(reader, wanted, path, topics, resolution)
    except BagError:
        raise
    except Exception as error:  # rosbags and the storage backends raise many types for damaged files
        raise BagError(f"cannot read bag {path}: {type(error).__name__}: {error}") from error

    if images.count == 0:
        raise BagError(f"bag {path}: topic {topics.image!r} has no messages")
    image_stamps, image_received = images.arrays()
    order = _stamp_order(path, topics.image, image_stamps)
    _check_duplicates(path, topics.image, image_stamps, order, None)
    frames = images.frames()
    if (order != np.arange(len(order))).any():
        _permute_in_place(frames, order)
    image_stamps, image_received = image_stamps[order], image_received[order]
    thinned, camera_period_ns = 0, None
    if frame_interval_s is not None:
        keep = grid_indices(image_stamps, frame_interval_s)
        if len(keep) < len(image_stamps):
            camera_period_ns = int(np.median(np.diff(image_stamps)))
            frames, image_stamps, image_received = frames[keep], image_stamps[keep], image_received[keep]
            thinned = len(order) - len(keep)
            stats.thinned_frames += thinned
    image_clock = _ImageClock(topics.image, image_stamps, image_received)
    image_stamps = image_clock.stamps_ns
    actions = _actions_for(modality, path, series, topics, image_clock, key_thresholds, max_extrapolation_ns,
                           conventions)
    if camera_info is None and conventions.intrinsics is not None:  # the profile's, for a camera without camera_info
        camera_info = conventions.intrinsics
    if camera_info is not None and (camera_info.height, camera_info.width) != frames.shape[1:3]:
        camera_info = camera_info.scaled(frames.shape[1:3])
    camera_in_base = _arm_camera(series, topics, frames_of) if modality == "robot" else None
    episode = Episode(frames, actions, image_stamps, modality, camera_info, str(path), camera_in_base,
                      thinned, camera_period_ns)
    stats.episodes += 1
    stats.frames += len(frames)
    nan_frames = int((~episode.valid).sum())
    stats.nan_frames += nan_frames
    if nan_frames:
        logger.warning(
            "bag %s: %d of %d frames have NaN %s actions and will be skipped", path, nan_frames, len(frames), modality
        )
    return episode


def _list_topics(available: dict[str, str]) -> str:
    return ", ".join(f"{topic} ({msgtype})" for topic, msgtype in sorted(available.items())) or "none"


def _check_msgtypes(path: Path, connections: list, modality: str, topics: BagTopics) -> None:
    """Each topic the modality reads has one message type, of those its role accepts.

    One topic may hold several connections (publishers, or bags merged); two types on one topic would mix
    rows of different layouts, so it is refused rather than read.
    """
    expectations = [
        (topics.image, "the images", IMAGE_MSGTYPES),
        (topics.camera_info, "the camera info", ("sensor_msgs/msg/CameraInfo",)),
    ]
    if modality == "camera":
        expectations.append((topics.camera_pose, "the camera pose", POSE_MSGTYPES))
    elif modality == "robot":
        expectations += [(topics.ee_pose, "the end-effector pose", POSE_MSGTYPES),
                         (topics.gripper, "the gripper opening", GRIPPER_MSGTYPES)]
    else:
        expectations.append((topics.twist, "the velocity command", TWIST_MSGTYPES))
    found: dict[str, set[str]] = {}
    for connection in connections:
        found.setdefault(connection.topic, set()).add(connection.msgtype)
    for topic, role, allowed in expectations:
        types = sorted(found.get(topic, ()))
        if len(types) > 1:
            raise BagError(
                f"bag {path}: topic {topic!r} carries {' and '.join(types)} (two publishers, or bags merged?); "
                f"expected one type for {role}, of: {', '.join(allowed)}"
            )
        if types and types[0] not in allowed:
            raise BagError(f"bag {path}: topic {topic!r} has type {types[0]}; expected for {role}: {', '.join(allowed)}")


@dataclass
class _Images:
    """Decoded images of one bag, in bag order."""

    buffer: _FrameBuffer
    stamps_ns: list[int] = field(default_factory=list)  # header stamps
    received_ns: list[int] = field(default_factory=list)  # bag timestamps

    @property
    def count(self) -> int:
        return self.buffer.count

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.stamps_ns, dtype=np.int64), np.asarray(self.received_ns, dtype=np.int64)

    def frames(self) -> np.ndarray:
        return self.buffer.frames()


@dataclass
class _Frames:
    """Frame ids of each topic's first message and the bag's static transforms."""

    ids: dict[str, str] = field(default_factory=dict)
    static: list = field(default_factory=list)  # arm_camera.StaticTransform


def _arm_camera(series: dict[str, _Series], topics: BagTopics, frames_of: _Frames) -> np.ndarray | None:
    """The camera optical frame in the end effector's base frame (4, 4), if the bag says (arm_camera.py)."""
    first_pose = None
    if topics.camera_pose in series and series[topics.camera_pose].values:
        vector = series[topics.camera_pose].values[0]
        first_pose = pose_to_matrix(vector[:3], vector[3:7])
    return arm_camera.camera_in_base(frames_of.static, frames_of.ids.get(topics.ee_pose),
                                     frames_of.ids.get(topics.image), first_pose, frames_of.ids.get(topics.camera_pose))


def _readable_extra(topic: str, msgtype: str, modality: str, topics: BagTopics) -> bool:
    """A robot bag's camera pose and /tf_static only help place its camera: read them only when they have
    the types that can (a bag that has them as something else reads as it did without them)."""
    if modality != "robot":
        return True
    if topic == topics.camera_pose:
        return msgtype in POSE_MSGTYPES
    if topic == topics.tf_static:
        return msgtype == "tf2_msgs/msg/TFMessage"
    return True


def _collect(
    reader: AnyReader, connections: list, path: Path, topics: BagTopics, resolution: tuple[int, int] | None
) -> tuple[dict[str, _Series], _Images, PinholeIntrinsics | None, _Frames]:
    """One pass over the bag: decoded images, numeric series per topic, the first camera info, frame ids
    and static transforms."""
    series: dict[str, _Series] = {}
    frames_of = _Frames()
    image_count = sum(c.msgcount for c in connections if c.topic == topics.image)
    images = _Images(_FrameBuffer(image_count))
    camera_info: PinholeIntrinsics | None = None
    camera_info_unusable = False  # an uncalibrated driver's CameraInfo (zeros): warned about once, ignored
    for connection, bag_stamp_ns, rawdata in reader.messages(connections=connections):
        topic, msgtype = connection.topic, connection.msgtype
        try:
            message = reader.deserialize(rawdata, msgtype)
        except Exception as error:  # a truncated or damaged record: say where it is
            raise BagError(f"bag {path}: topic {topic!r}, message recorded at {_format_stamp(int(bag_stamp_ns))}: "
                           f"cannot deserialise {msgtype} ({type(error).__name__}: {error})") from error
        header = getattr(message, "header", None)
        stamp_ns = _stamp_ns(header) if header is not None else int(bag_stamp_ns)
        if header is not None:
            frames_of.ids.setdefault(topic, str(header.frame_id))
        if topic == topics.tf_static:
            frames_of.static += arm_camera.static_transforms_of(message)
        elif topic == topics.image:
            try:
                rgb = _decode_image(message, msgtype)
            except ImageDecodeError as error:
                raise BagError(f"bag {path}: topic {topic!r} at {_format_stamp(stamp_ns)}: {error}") from error
            if resolution is not None:
                rgb = resize_rgb(rgb, resolution)
            first_shape = images.buffer.frame_shape
            if first_shape is not None and rgb.shape != first_shape:
                raise BagError(
                    f"bag {path}: topic {topic!r} at {_format_stamp(stamp_ns)}: image size {rgb.shape[1]}x{rgb.shape[0]} "
                    f"differs from the first image's {first_shape[1]}x{first_shape[0]}; pass a resolution"
                )
            images.buffer.append(rgb)
            images.stamps_ns.append(stamp_ns)
            images.received_ns.append(int(bag_stamp_ns))
        elif topic == topics.camera_info:
            if camera_info is None:  # the first usable one: a driver may send zeros before its calibration loads
                k = np.asarray(message.k, dtype=np.float64)
                size_ok = int(message.width) > 0 and int(message.height) > 0
                if not (size_ok and np.isfinite(k).all() and k[0] > 0 and k[4] > 0):
                    if not camera_info_unusable:
                        camera_info_unusable = True
                        logger.warning("bag %s: %s has no usable calibration (%dx%d, fx=%g, fy=%g): skipped; the "
                                       "episode gets no intrinsics unless a later one is usable",
                                       path, topic, message.width, message.height, k[0], k[4])
                    continue
                camera_info = PinholeIntrinsics(int(message.width), int(message.height), k[0], k[4], k[2], k[5])
                if resolution is not None:
                    camera_info = camera_info.scaled(resolution)
        else:
            values = series.setdefault(topic, _Series(topic))
            values.stamps_ns.append(stamp_ns)
            values.received_ns.append(int(bag_stamp_ns))
            try:
                values.values.append(_numeric_value(message, msgtype))
            except ValueError as error:
                raise BagError(f"bag {path}: topic {topic!r}: {error}") from error
    return series, images, camera_info, frames_of


def _series_arrays(
    path: Path, series: dict[str, _Series], topic: str, images: _ImageClock, timing: _Timing
) -> tuple[np.ndarray, np.ndarray]:
    """Stamps ``int64 [N]`` and values ``float64 [N, D]`` of one topic, sorted by stamp and checked
    against the images' clock. Commands may repeat a stamp (the later-recorded one then holds)."""
    if topic not in series or not series[topic].stamps_ns:
        raise BagError(f"bag {path}: topic {topic!r} has no messages")
    stamps, received, values = series[topic].arrays()
    order = _stamp_order(path, topic, stamps)
    if timing != "command":
        _check_duplicates(path, topic, stamps, order, values)
    stamps, received, values = stamps[order], received[order], values[order]
    _check_clock(path, topic, stamps, received, images, timing)
    return stamps, values


def _actions_for(
    modality: str,
    path: Path,
    series: dict[str, _Series],
    topics: BagTopics,
    images: _ImageClock,
    key_thresholds: KeyThresholds,
    max_extrapolation_ns: int,
    conventions: BagConventions,
) -> np.ndarray:
    image_stamps = images.stamps_ns
    if modality == "camera":
        stamps, values = _series_arrays(path, series, topics.camera_pose, images, "interpolated")
        positions, quats = interpolate_poses(stamps, values[:, :3], values[:, 3:7], image_stamps, max_extrapolation_ns)
        poses = conventions.camera_poses(pose_to_matrix(positions, quats))
        valid = np.isfinite(poses).all(axis=(1, 2))
        if not valid.any():
            raise BagError(f"bag {path}: no image has a finite pose on {topics.camera_pose!r}")
        # Relative to the first frame with a valid pose, so one NaN pose does not spoil the whole episode.
        first = int(np.argmax(valid))
        actions = camera_actions(np.concatenate([poses[first:first + 1], poses]))[1:]
        return actions
    if modality == "robot":
        stamps, values = _series_arrays(path, series, topics.ee_pose, images, "interpolated")
        positions, quats = interpolate_poses(stamps, values[:, :3], values[:, 3:7], image_stamps, max_extrapolation_ns)
        if topics.gripper in series:
            gripper_stamps, gripper_values = _series_arrays(path, series, topics.gripper, images, "latched")
            gripper = hold_latest(gripper_stamps, gripper_values[:, 0], image_stamps, max_extrapolation_ns)
        else:
            logger.warning("bag %s has no %s topic: gripper opening set to 0", path, topics.gripper)
            gripper = np.zeros(len(image_stamps))
        return robot_actions(positions, quats, gripper)
    stamps, values = _series_arrays(path, series, topics.twist, images, "command")
    twist = conventions.twist(values[:, -6:])  # Odometry rows hold the pose first
    held = zero_order_hold(stamps, twist, image_stamps, max_age_ns=COMMAND_TIMEOUT_NS)
    if modality == "keys":
        return keys_from_twist(held[:, :3], held[:, 3:], key_thresholds)
    return twist_actions(held[:, :3], held[:, 3:], frame_intervals(image_stamps))
