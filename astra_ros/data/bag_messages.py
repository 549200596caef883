"""ROS messages of a bag to numbers: images to RGB, poses, twists and gripper states to vectors.

What :mod:`astra_ros.data.bags` reads each message with; the message types it accepts are listed here.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from astra_ros.data.images import ImageDecodeError, image_to_rgb

POSE_MSGTYPES = (
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/PoseWithCovarianceStamped",
    "nav_msgs/msg/Odometry",
)
TWIST_MSGTYPES = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped", "nav_msgs/msg/Odometry")
SCALAR_MSGTYPES = ("std_msgs/msg/Float32", "std_msgs/msg/Float64")
JOINT_STATE_MSGTYPE = "sensor_msgs/msg/JointState"
# The gripper: a JointState (astra-sim record, astra_sim), or a bare scalar (bags recorded before).
GRIPPER_MSGTYPES = (JOINT_STATE_MSGTYPE, *SCALAR_MSGTYPES)
GRIPPER_JOINT = "gripper_joint"  # the opening [m] in a JointState of several joints (one joint: that one)
IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _pose_of(message: Any, msgtype: str) -> Any:
    if msgtype == "geometry_msgs/msg/PoseStamped":
        return message.pose
    return message.pose.pose  # PoseWithCovarianceStamped and Odometry


def _twist_of(message: Any, msgtype: str) -> Any:
    if msgtype == "geometry_msgs/msg/Twist":
        return message
    if msgtype == "geometry_msgs/msg/TwistStamped":
        return message.twist
    return message.twist.twist  # Odometry: twist in child_frame_id, i.e. the body frame


def _decode_image(message: Any, msgtype: str) -> np.ndarray:
    if msgtype == "sensor_msgs/msg/CompressedImage":
        if len(message.data) == 0:  # OpenCV asserts on an empty buffer instead of returning None
            raise ImageDecodeError(f"compressed image of format {message.format!r} has no data")
        decoded = cv2.imdecode(np.frombuffer(message.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ImageDecodeError(f"cannot decode compressed image of format {message.format!r}")
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return image_to_rgb(
        message.data,
        height=int(message.height),
        width=int(message.width),
        encoding=message.encoding,
        step=int(message.step),
        is_bigendian=bool(message.is_bigendian),
    )


def _numeric_value(message: Any, msgtype: str) -> np.ndarray:
    """Pose -> [x, y, z, qx, qy, qz, qw]; twist -> [vx, vy, vz, wx, wy, wz]; scalar -> [value]."""
    if msgtype in SCALAR_MSGTYPES:
        return np.array([float(message.data)])
    if msgtype == JOINT_STATE_MSGTYPE:  # a gripper: its joint position; NaN (a skipped frame) when missing
        names, positions = list(message.name), np.asarray(message.position, dtype=np.float64)
        if GRIPPER_JOINT not in names and len(names) > 1:  # which one is the opening [m]? An arm angle is not
            raise ValueError(f"a JointState of joints {names} has no {GRIPPER_JOINT!r}: publish the gripper's "
                             f"opening [m] as {GRIPPER_JOINT!r}, or on a topic of its own")
        index = names.index(GRIPPER_JOINT) if GRIPPER_JOINT in names else 0
        return np.array([positions[index] if index < len(positions) else np.nan])
    if msgtype == "nav_msgs/msg/Odometry":
        # Odometry serves as a pose and as a twist source: keep both.
        return np.concatenate([_pose_vector(message.pose.pose), _twist_vector(message.twist.twist)])
    if msgtype in POSE_MSGTYPES:
        return _pose_vector(_pose_of(message, msgtype))
    return _twist_vector(_twist_of(message, msgtype))


def _pose_vector(pose: Any) -> np.ndarray:
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)


def _twist_vector(twist: Any) -> np.ndarray:
    return np.array(
        [twist.linear.x, twist.linear.y, twist.linear.z, twist.angular.x, twist.angular.y, twist.angular.z],
        dtype=np.float64,
    )
