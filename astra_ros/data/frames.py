"""The simulator's coordinate frames and transform tree, as REP-103/105 name them (no rclpy).

One tree per scenario, rooted at ``odom`` (the simulated world; nothing drifts, so ``odom`` = world):

* ``explore``: odom -> base_link (the free-flying rig, x forward, y left, z up; dynamic)
  -> camera_link (identity) -> camera_optical_frame (z forward, x right, y down);
* ``rover``:   odom -> base_link (dynamic, as /odom) -> camera_link -> camera_optical_frame;
* ``arm``:     odom -> base_link (the arm's base, static) -> camera_link -> camera_optical_frame
  (the camera is fixed in the world), and base_link -> ee_link (the end effector, dynamic).

:func:`static_transforms` are sent once on ``/tf_static``; :func:`dynamic_transforms` on ``/tf`` every tick.
``/camera/pose`` is the camera optical frame in ``odom``, ``/robot/ee_pose`` the end effector in ``base_link``.
Bags recorded before these names (``world``, ``base``, ``camera_optical``) read the same: the bag reader
does not depend on frame names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astra_ros.data.bag_messages import GRIPPER_JOINT  # noqa: F401  (sensor_msgs/JointState name: finger opening [m])
from astra_ros.data.geometry import invert_transform, matrix_to_quaternion, pose_to_matrix
from astra_ros.data.scenes import Pose, SimTick

ODOM_FRAME_ID = "odom"
BASE_FRAME_ID = "base_link"
CAMERA_LINK_FRAME_ID = "camera_link"
CAMERA_FRAME_ID = "camera_optical_frame"
EE_FRAME_ID = "ee_link"
LEGACY_FRAME_IDS = {"world": ODOM_FRAME_ID, "base": BASE_FRAME_ID, "camera_optical": CAMERA_FRAME_ID}

# camera_link (x forward, y left, z up) -> optical frame (z forward, x right, y down), REP-103.
OPTICAL_IN_LINK = Pose(np.zeros(3), np.array([-0.5, 0.5, -0.5, 0.5]))


@dataclass(frozen=True)
class Transform:
    """``child`` frame's pose in ``parent`` (geometry_msgs/TransformStamped without the stamp)."""

    parent: str
    child: str
    pose: Pose


def _matrix(pose: Pose) -> np.ndarray:
    return pose_to_matrix(pose.position, pose.quat_xyzw)


def _pose(matrix: np.ndarray) -> Pose:
    return Pose(np.array(matrix[:3, 3], dtype=np.float64), matrix_to_quaternion(matrix[:3, :3]))


def _link_of_optical(camera_pose: np.ndarray) -> np.ndarray:
    """camera_link in the frame ``camera_pose`` (the optical frame's pose) is given in."""
    return camera_pose @ invert_transform(_matrix(OPTICAL_IN_LINK))


def static_transforms(scenario: str, first: SimTick, arm_base: Pose | None = None) -> list[Transform]:
    """The fixed transforms of ``scenario``, from its first tick (and, for ``arm``, the base in the world)."""
    camera_link = _link_of_optical(_matrix(first.camera_pose))  # in odom
    if scenario == "explore":
        base_from_camera_link = np.eye(4)
    elif scenario == "rover":
        if first.odom_pose is None:
            raise ValueError("the rover's first tick has no odom pose")
        base_from_camera_link = invert_transform(_matrix(first.odom_pose)) @ camera_link
    elif scenario == "arm":
        if arm_base is None:
            raise ValueError("the arm's tf tree needs the arm base's pose in the world")
        base_from_camera_link = invert_transform(_matrix(arm_base)) @ camera_link
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    transforms = [Transform(BASE_FRAME_ID, CAMERA_LINK_FRAME_ID, _pose(base_from_camera_link)),
                  Transform(CAMERA_LINK_FRAME_ID, CAMERA_FRAME_ID, OPTICAL_IN_LINK)]
    if scenario == "arm":
        transforms.insert(0, Transform(ODOM_FRAME_ID, BASE_FRAME_ID, arm_base))
    return transforms


def dynamic_transforms(scenario: str, tick: SimTick) -> list[Transform]:
    """The transforms of ``scenario`` that move, at ``tick``."""
    if scenario == "explore":
        return [Transform(ODOM_FRAME_ID, BASE_FRAME_ID, _pose(_link_of_optical(_matrix(tick.camera_pose))))]
    if scenario == "rover":
        return [Transform(ODOM_FRAME_ID, BASE_FRAME_ID, tick.odom_pose)]
    if scenario == "arm":
        return [Transform(BASE_FRAME_ID, EE_FRAME_ID, tick.ee_pose)]
    raise ValueError(f"unknown scenario {scenario!r}")
