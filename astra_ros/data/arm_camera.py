"""Where an arm's camera is: its optical frame in the robot's base frame, read from a bag.

The end-effector maps (``astra_ros.model.arm_map``) project each commanded end-effector position into
the image, which needs the camera's pose in the frame the end-effector pose is given in. A bag gives it
through ``/tf_static`` (the chain from the end-effector pose's frame to the image's frame, as any ROS
robot publishes it). The simulator's arm bags recorded before it wrote ``/tf_static`` (frame ids
``world`` / ``base``) give the camera's world pose, and their arm base stands at a known place.
The camera is taken as fixed (its first pose): a camera riding on the arm is not handled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from astra_ros.data.geometry import invert_transform, pose_to_matrix

# The simulator's arm base in its world for bags written before /tf_static (frame ids "world" and "base"):
# on the table top, unrotated (astra_ros.data.scenes.arm.ArmScenario.table_height_m, tested).
LEGACY_SIM_ARM_BASE_Z_M = 0.4
LEGACY_WORLD_FRAME, LEGACY_BASE_FRAME = "world", "base"

StaticTransform = tuple[str, str, np.ndarray]  # parent, child, child's pose in parent (4, 4)


def static_transforms_of(message: Any) -> list[StaticTransform]:
    """A tf2_msgs/TFMessage (from a bag or a subscription) as (parent, child, child-in-parent (4, 4)) triples."""
    result = []
    for t in message.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        result.append((t.header.frame_id, t.child_frame_id,
                       pose_to_matrix(np.array([tr.x, tr.y, tr.z]), np.array([q.x, q.y, q.z, q.w]))))
    return result


def _pose_in_root(frame: str, parents: dict[str, tuple[str, np.ndarray]]) -> tuple[str, np.ndarray]:
    """``frame``'s root in the tree and its pose there (cycles end the walk)."""
    pose = np.eye(4)
    seen = {frame}
    while frame in parents:
        parent, transform = parents[frame]
        pose = transform @ pose
        frame = parent
        if frame in seen:
            break
        seen.add(frame)
    return frame, pose


def chain_transform(static: list[StaticTransform], parent: str, child: str) -> np.ndarray | None:
    """Pose (4, 4) of ``child`` in ``parent`` through a tree of static transforms; None if not connected."""
    parents = {c: (p, t) for p, c, t in static}
    root_parent, parent_pose = _pose_in_root(parent, parents)
    root_child, child_pose = _pose_in_root(child, parents)
    if root_parent != root_child:
        return None
    return invert_transform(parent_pose) @ child_pose


def camera_in_base(static: list[StaticTransform], base_frame: str | None, camera_frame: str | None,
                   camera_pose: np.ndarray | None = None, camera_pose_frame: str | None = None) -> np.ndarray | None:
    """The camera optical frame in the robot base frame (4, 4), or None when the bag does not say.

    ``static``: the bag's ``/tf_static``; ``base_frame``: the end-effector pose's frame id; ``camera_frame``:
    the image's frame id; ``camera_pose`` (4, 4): the camera's first pose on the camera-pose topic, in
    ``camera_pose_frame`` (the legacy simulator fallback).
    """
    if base_frame and camera_frame:
        transform = chain_transform(static, base_frame, camera_frame)
        if transform is not None:
            return transform
    if (camera_pose is not None and base_frame == LEGACY_BASE_FRAME and camera_pose_frame == LEGACY_WORLD_FRAME
            and np.isfinite(camera_pose).all()):
        base_in_world = np.eye(4)
        base_in_world[2, 3] = LEGACY_SIM_ARM_BASE_Z_M
        return invert_transform(base_in_world) @ camera_pose
    return None
