"""Bags written by hand for the bag-reading tests: 10 Hz images of a known pattern, poses and commands at 30 Hz,
robot bags with a held gripper."""

from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

import astra_ros.data.bags as bags_module
from astra_ros.data.bags import BagTopics
from astra_ros.data.geometry import (
    BODY_FROM_OPTICAL,
    matrix_to_quaternion,
    yaw_pitch_to_matrix,
)

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
    camera_info: tuple[int, int, list[float]] | list[tuple[int, int, list[float]]] | None = None,
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
        # (width, height, K row-major), or a list of them sent one frame apart
        infos = camera_info if isinstance(camera_info, list) else [camera_info] if camera_info is not None else []
        for index, (width, height, k) in enumerate(infos):
            stamp = EPOCH_NS + index * FRAME_NS
            roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            info = T["sensor_msgs/msg/CameraInfo"](
                header=header(stamp), height=height, width=width, distortion_model="", d=np.zeros(0),
                k=np.asarray(k, dtype=np.float64), r=np.zeros(9), p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)
            entries.append((stamp, info_connection, info, "sensor_msgs/msg/CameraInfo"))
        for stamp, connection, message, msgtype in sorted(entries, key=lambda entry: entry[0]):
            writer.write(connection, stamp, TYPESTORE.serialize_cdr(message, msgtype))
    return path


def header_stamps_in_bag_order(path: Path, topic: str) -> list[int]:
    with AnyReader([path]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [bags_module._stamp_ns(reader.deserialize(raw, c.msgtype).header)
                for c, _, raw in reader.messages(connections=connections)]


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
