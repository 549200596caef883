"""Message <-> numpy conversions for the nodes (no cv_bridge: see docs in astra_ros.data.images).

Readers take any object with the message's fields (rclpy messages, rosbags messages, test doubles);
writers build rclpy messages and import their types lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from astra_ros.data.geometry import matrix_to_quaternion, pose_to_matrix
from astra_ros.data.images import image_to_rgb


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` -> integer [ns]."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Any:
    """Integer [ns] -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    stamp_ns = int(stamp_ns)
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8 [H, W, 3]`` RGB (rgb8, bgr8, rgba8, bgra8, mono8, mono16; honours step).

    Raises :class:`astra_ros.data.images.ImageDecodeError` on an unsupported encoding or a short buffer.
    """
    return image_to_rgb(
        bytes(msg.data) if isinstance(msg.data, list) else msg.data,
        height=int(msg.height),
        width=int(msg.width),
        encoding=str(msg.encoding),
        step=int(msg.step),
        is_bigendian=bool(msg.is_bigendian),
    )


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg or png, as image_transport's compressed plugin sends it:
    ``format`` "jpeg", "png" or "rgb8; jpeg compressed bgr8") -> ``uint8 [H, W, 3]`` RGB.

    Raises :class:`astra_ros.data.images.ImageDecodeError` for another format or bytes that do not decode.
    """
    import cv2

    from astra_ros.data.images import ImageDecodeError

    fmt = str(msg.format).lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise ImageDecodeError(f"unsupported compressed image format {msg.format!r}; supported: jpeg, png")
    data = np.frombuffer(bytes(msg.data) if isinstance(msg.data, list) else msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageDecodeError(f"{len(data)} bytes of {msg.format!r} that do not decode as an image")
    return np.ascontiguousarray(bgr[..., ::-1])


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``uint8 [H, W, 3]`` RGB -> ``sensor_msgs/Image`` rgb8 (data assigned as bytes: fast)."""
    from sensor_msgs.msg import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = rgb.tobytes()
    return msg


def pose_msg_to_matrix(pose: Any) -> np.ndarray:
    """``geometry_msgs/Pose`` -> 4x4 transform (NaN entries stay NaN; the caller checks)."""
    position = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    o = pose.orientation
    quat = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    if not np.isfinite(quat).all() or np.linalg.norm(quat) < 1e-9:
        return np.full((4, 4), np.nan)
    return pose_to_matrix(position, quat)


def matrix_to_pose_fields(transform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 transform -> (position [3], quaternion xyzw [4])."""
    return transform[:3, 3].copy(), matrix_to_quaternion(transform[:3, :3])


def twist_msg_to_vector(twist: Any) -> np.ndarray:
    """``geometry_msgs/Twist`` -> ``[vx, vy, vz, wx, wy, wz]`` [m/s, rad/s]."""
    return np.array(
        [twist.linear.x, twist.linear.y, twist.linear.z, twist.angular.x, twist.angular.y, twist.angular.z],
        dtype=np.float64,
    )
