"""A robot's own conventions, undone while its bags are read: axis signs of its commands, the frame its
pose topic describes, and the intrinsics of a camera that publishes no camera_info.

The model's actions follow REP-103 (body x forward, y left, z up; positive yaw rate turns left) and
camera poses are those of the optical frame (z forward, x right, y down) in the world. A robot whose
driver flips a sign, or whose pose topic gives the camera body or the robot base instead, is read
through a :class:`BagConventions` so that its actions mean what the model's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astra_ros.data.geometry import PinholeIntrinsics, quaternion_to_matrix

# What a pose topic's pose is the pose of (in the world).
POSE_FRAMES = ("camera_optical", "camera_link", "base")

# The optical frame's axes in a camera body frame (x forward, y left, z up): optical z = body x,
# optical x = -body y, optical y = -body z. Columns are the optical axes.
LINK_TO_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class BagConventions:
    """How one robot's bags differ from the model's conventions (the defaults: they do not)."""

    # Multiplied into each twist as read, (linear x, y, z, angular x, y, z): -1 flips an axis whose
    # sign the robot's driver defines the other way (e.g. angular z = -1 where positive turns right).
    twist_signs: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    # What the camera-pose topic gives: the optical frame, the camera body frame (camera_link), or the
    # robot base (then camera_in_base places the camera on it).
    pose_frame: str = "camera_optical"
    # The camera optical frame in the base frame, (x, y, z [m], qx, qy, qz, qw), as /tf_static would give
    # it; needed for pose_frame "base".
    camera_in_base: tuple[float, ...] | None = None
    # The camera's intrinsics when the bag has no usable camera_info (scaled to the frames' size).
    intrinsics: PinholeIntrinsics | None = None

    def __post_init__(self) -> None:
        if len(self.twist_signs) != 6 or any(s not in (1.0, -1.0) for s in self.twist_signs):
            raise ValueError(f"twist_signs must be six of 1 or -1, got {self.twist_signs}")
        if self.pose_frame not in POSE_FRAMES:
            raise ValueError(f"pose_frame must be one of {', '.join(POSE_FRAMES)}, got {self.pose_frame!r}")
        if (self.pose_frame == "base") != (self.camera_in_base is not None):
            raise ValueError("camera_in_base is needed with pose_frame 'base', and only then")
        if self.camera_in_base is not None and len(self.camera_in_base) != 7:
            raise ValueError(f"camera_in_base must be (x, y, z, qx, qy, qz, qw), got {self.camera_in_base}")

    def twist(self, values: np.ndarray) -> np.ndarray:
        """``values [N, 6]`` (linear, angular) in the model's axis signs."""
        return values * np.asarray(self.twist_signs, dtype=values.dtype)

    def camera_transform(self) -> np.ndarray:
        """float64 ``[4, 4]``: the optical frame in the frame the pose topic gives; poses @ this = camera poses."""
        transform = np.eye(4)
        if self.pose_frame == "camera_link":
            transform[:3, :3] = LINK_TO_OPTICAL
        elif self.pose_frame == "base":
            assert self.camera_in_base is not None
            transform[:3, :3] = quaternion_to_matrix(np.asarray(self.camera_in_base[3:], dtype=np.float64))
            transform[:3, 3] = self.camera_in_base[:3]
        return transform

    def camera_poses(self, poses: np.ndarray) -> np.ndarray:
        """World poses ``[N, 4, 4]`` of what the pose topic describes -> of the camera optical frame."""
        if self.pose_frame == "camera_optical":
            return poses
        return poses @ self.camera_transform()
