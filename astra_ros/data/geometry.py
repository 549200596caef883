"""Pose maths on numpy arrays: quaternions, slerp, 6D rotations and relative poses.

Conventions used throughout :mod:`astra_ros.data`:

* Quaternions are stored in ROS order ``[x, y, z, w]`` (as in ``geometry_msgs/Quaternion``),
  unit length, Hamilton product.
* Rotation matrices ``R`` map vectors of the child frame into the parent frame
  (``v_parent = R @ v_child``); homogeneous transforms ``T_parent_child`` are 4x4.
* All functions broadcast over leading batch dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this the two quaternions are treated as equal and slerp falls back to lerp, because
# sin(theta) in the denominator loses all precision.
_SLERP_LERP_THRESHOLD = 1e-6


def normalize_quaternions(quat_xyzw: np.ndarray) -> np.ndarray:
    """Return unit quaternions ``[..., 4]`` (x, y, z, w); NaN rows stay NaN."""
    quat_xyzw = np.asarray(quat_xyzw, dtype=np.float64)
    return quat_xyzw / np.linalg.norm(quat_xyzw, axis=-1, keepdims=True)


def quaternion_to_matrix(quat_xyzw: np.ndarray) -> np.ndarray:
    """Convert quaternions ``[..., 4]`` (x, y, z, w) to rotation matrices ``[..., 3, 3]``."""
    x, y, z, w = np.moveaxis(normalize_quaternions(quat_xyzw), -1, 0)
    rotation = np.empty(x.shape + (3, 3), dtype=np.float64)
    rotation[..., 0, 0] = 1.0 - 2.0 * (y * y + z * z)
    rotation[..., 0, 1] = 2.0 * (x * y - z * w)
    rotation[..., 0, 2] = 2.0 * (x * z + y * w)
    rotation[..., 1, 0] = 2.0 * (x * y + z * w)
    rotation[..., 1, 1] = 1.0 - 2.0 * (x * x + z * z)
    rotation[..., 1, 2] = 2.0 * (y * z - x * w)
    rotation[..., 2, 0] = 2.0 * (x * z - y * w)
    rotation[..., 2, 1] = 2.0 * (y * z + x * w)
    rotation[..., 2, 2] = 1.0 - 2.0 * (x * x + y * y)
    return rotation


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Convert rotation matrices ``[..., 3, 3]`` to unit quaternions ``[..., 4]`` (x, y, z, w), w >= 0.

    Uses the numerically stable branch per element (largest of w, x, y, z first).
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    batch_shape = rotation.shape[:-2]
    flat = rotation.reshape(-1, 3, 3)
    m = flat
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Candidates for 4*q_i^2 of each component; pick the largest to divide by.
    squares = np.stack(
        [
            1.0 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
            1.0 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
            1.0 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2],
            1.0 + trace,
        ],
        axis=-1,
    )
    largest = np.argmax(np.nan_to_num(squares, nan=-np.inf), axis=-1)
    scale = 2.0 * np.sqrt(np.maximum(np.take_along_axis(squares, largest[:, None], axis=-1)[:, 0], 0.0))
    scale = np.where(scale > 0.0, scale, 1.0)
    # One candidate quaternion per branch; each is exact where its component is the largest.
    branches = np.stack(
        [
            [0.25 * scale, (m[:, 0, 1] + m[:, 1, 0]) / scale, (m[:, 0, 2] + m[:, 2, 0]) / scale, (m[:, 2, 1] - m[:, 1, 2]) / scale],
            [(m[:, 0, 1] + m[:, 1, 0]) / scale, 0.25 * scale, (m[:, 1, 2] + m[:, 2, 1]) / scale, (m[:, 0, 2] - m[:, 2, 0]) / scale],
            [(m[:, 0, 2] + m[:, 2, 0]) / scale, (m[:, 1, 2] + m[:, 2, 1]) / scale, 0.25 * scale, (m[:, 1, 0] - m[:, 0, 1]) / scale],
            [(m[:, 2, 1] - m[:, 1, 2]) / scale, (m[:, 0, 2] - m[:, 2, 0]) / scale, (m[:, 1, 0] - m[:, 0, 1]) / scale, 0.25 * scale],
        ],
        axis=0,
    )  # (branch, component, N)
    quats = branches[largest, :, np.arange(flat.shape[0])]  # (N, 4)
    quats = np.where(np.isfinite(squares).all(axis=-1, keepdims=True), quats, np.nan)
    quats = normalize_quaternions(quats)
    quats *= np.where(quats[:, 3:4] < 0.0, -1.0, 1.0)
    return quats.reshape(batch_shape + (4,))


def axis_angle_to_matrix(axis: np.ndarray, angle_rad: float | np.ndarray) -> np.ndarray:
    """Rotation matrix ``[..., 3, 3]`` for a rotation of ``angle_rad`` [rad] about ``axis`` (any length)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    half = 0.5 * np.asarray(angle_rad, dtype=np.float64)[..., None]
    quat = np.concatenate([axis * np.sin(half), np.cos(half)], axis=-1)
    return quaternion_to_matrix(quat)


def matrix_to_axis_angle(rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(unit_axis [..., 3], angle_rad [...])`` of rotation matrices, angle in [0, pi] [rad]."""
    quat = matrix_to_quaternion(rotation)
    vector_norm = np.linalg.norm(quat[..., :3], axis=-1)
    angle = 2.0 * np.arctan2(vector_norm, quat[..., 3])
    safe_norm = np.where(vector_norm > 0.0, vector_norm, 1.0)[..., None]
    axis = np.where(vector_norm[..., None] > 0.0, quat[..., :3] / safe_norm, np.array([0.0, 0.0, 1.0]))
    return axis, angle


def quaternion_slerp(quat_start: np.ndarray, quat_end: np.ndarray, fraction: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions ``[..., 4]`` (x, y, z, w).

    ``fraction`` in [0, 1] (0 gives ``quat_start``); takes the shorter arc. NaN inputs give NaN.
    """
    q0 = normalize_quaternions(quat_start)
    q1 = normalize_quaternions(quat_end)
    fraction = np.asarray(fraction, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    # q and -q are the same rotation: flip to take the shorter arc.
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    nearly_equal = sin_theta < _SLERP_LERP_THRESHOLD
    safe_sin = np.where(nearly_equal, 1.0, sin_theta)
    weight_start = np.where(nearly_equal, 1.0 - fraction, np.sin((1.0 - fraction) * theta) / safe_sin)
    weight_end = np.where(nearly_equal, fraction, np.sin(fraction * theta) / safe_sin)
    return normalize_quaternions(weight_start * q0 + weight_end * q1)


def pose_to_matrix(position: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """Homogeneous transforms ``[..., 4, 4]`` from positions ``[..., 3]`` [m] and quaternions ``[..., 4]``."""
    position = np.asarray(position, dtype=np.float64)
    rotation = quaternion_to_matrix(quat_xyzw)
    transform = np.zeros(position.shape[:-1] + (4, 4), dtype=np.float64)
    transform[..., :3, :3] = rotation
    transform[..., :3, 3] = position
    transform[..., 3, 3] = 1.0
    return transform


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms ``[..., 4, 4]`` (uses R^T, exact for rotations)."""
    transform = np.asarray(transform, dtype=np.float64)
    rotation_t = np.swapaxes(transform[..., :3, :3], -1, -2)
    inverse = np.zeros_like(transform)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -np.einsum("...ij,...j->...i", rotation_t, transform[..., :3, 3])
    inverse[..., 3, 3] = 1.0
    return inverse


def interpolate_transform(start: np.ndarray, end: np.ndarray, fraction: float) -> np.ndarray:
    """The pose ``[4, 4]`` ``fraction`` of the way from ``start`` to ``end``: the position linearly, the
    rotation by slerp (the bag reader's pose interpolation, on transforms)."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    position = start[:3, 3] + fraction * (end[:3, 3] - start[:3, 3])
    quat = quaternion_slerp(matrix_to_quaternion(start[:3, :3]), matrix_to_quaternion(end[:3, :3]), fraction)
    return pose_to_matrix(position, quat)


def scale_motion(transform: np.ndarray, factor: float) -> np.ndarray:
    """The rigid motion ``[4, 4]`` that, at the same constant body twist, lasts ``factor`` times as long.

    ``exp(factor * log(transform))`` in SE(3), in closed form: the rotation angle and the twist's
    translation part scale together (a screw motion), so ``scale_motion(T, 0.5)`` applied twice is
    ``T`` and ``scale_motion(T, 2) == T @ T``. Rotations must be below pi (any frame-to-frame motion is).
    """
    transform = np.asarray(transform, dtype=np.float64)
    axis, angle = matrix_to_axis_angle(transform[:3, :3])
    angle = float(angle)
    skew = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])

    def left_jacobian(theta: float) -> np.ndarray:  # maps the twist's linear part to the translation
        if abs(theta) < 1e-6:  # series: (1 - cos t)/t ~ t/2, (t - sin t)/t ~ t^2/6
            a, b = theta / 2.0, theta * theta / 6.0
        else:
            a, b = (1.0 - np.cos(theta)) / theta, (theta - np.sin(theta)) / theta
        return np.eye(3) + a * skew + b * (skew @ skew)

    linear = np.linalg.solve(left_jacobian(angle), transform[:3, 3])
    scaled = np.eye(4)
    scaled[:3, :3] = axis_angle_to_matrix(axis, factor * angle)
    scaled[:3, 3] = left_jacobian(factor * angle) @ (factor * linear)
    return scaled


def relative_transforms(reference: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """``inv(reference) @ transforms``: poses ``[..., 4, 4]`` expressed in the reference frame ``[4, 4]``."""
    return np.einsum("ij,...jk->...ik", invert_transform(reference), np.asarray(transforms, dtype=np.float64))


def rotation_to_6d(rotation: np.ndarray) -> np.ndarray:
    """6D rotation (Zhou et al. 2019): first two columns of R, ``[r11, r21, r31, r12, r22, r32]``, shape ``[..., 6]``."""
    rotation = np.asarray(rotation, dtype=np.float64)
    return np.concatenate([rotation[..., :, 0], rotation[..., :, 1]], axis=-1)


def rotation_from_6d(rotation_6d: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` from 6D vectors ``[..., 6]`` by Gram-Schmidt (inverse of :func:`rotation_to_6d`)."""
    rotation_6d = np.asarray(rotation_6d, dtype=np.float64)
    first = rotation_6d[..., 0:3]
    second = rotation_6d[..., 3:6]
    column_x = first / np.linalg.norm(first, axis=-1, keepdims=True)
    second = second - np.sum(column_x * second, axis=-1, keepdims=True) * column_x
    column_y = second / np.linalg.norm(second, axis=-1, keepdims=True)
    column_z = np.cross(column_x, column_y)
    return np.stack([column_x, column_y, column_z], axis=-1)


def yaw_pitch_to_matrix(yaw_rad: np.ndarray | float, pitch_rad: np.ndarray | float) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch)`` ``[..., 3, 3]``: a level body (x forward, y left, z up) turned by yaw then pitch [rad].

    Positive pitch turns the forward axis downwards (right-handed about body y = left).
    """
    yaw = np.asarray(yaw_rad, dtype=np.float64)
    pitch = np.asarray(pitch_rad, dtype=np.float64)
    rotation_yaw = axis_angle_to_matrix(np.broadcast_to([0.0, 0.0, 1.0], yaw.shape + (3,)), yaw)
    rotation_pitch = axis_angle_to_matrix(np.broadcast_to([0.0, 1.0, 0.0], pitch.shape + (3,)), pitch)
    return rotation_yaw @ rotation_pitch


# Columns: the optical axes (x right, y down, z forward) expressed in a ROS body frame
# (x forward, y left, z up, REP-103).
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Pinhole camera intrinsics in pixels, as in ``sensor_msgs/CameraInfo`` (no distortion).

    Pixel centres are at integer coordinates, so the centre of a ``width`` x ``height`` image is at
    ``((width - 1) / 2, (height - 1) / 2)``.
    """

    width: int  # [px]
    height: int  # [px]
    fx: float  # focal length along x [px]
    fy: float  # focal length along y [px]
    cx: float  # principal point x [px]
    cy: float  # principal point y [px]

    @classmethod
    def from_vertical_fov(cls, fovy_deg: float, width: int, height: int) -> "PinholeIntrinsics":
        """Square-pixel intrinsics of a camera with vertical field of view ``fovy_deg`` [deg] (MuJoCo's ``fovy``)."""
        focal = 0.5 * height / np.tan(np.radians(fovy_deg) / 2.0)
        return cls(width, height, float(focal), float(focal), (width - 1) / 2.0, (height - 1) / 2.0)

    def scaled(self, resolution: tuple[int, int]) -> "PinholeIntrinsics":
        """Intrinsics of the same camera after resizing the image to ``resolution = (height, width)`` [px]."""
        height, width = resolution
        scale_x = width / self.width
        scale_y = height / self.height
        return PinholeIntrinsics(
            width,
            height,
            self.fx * scale_x,
            self.fy * scale_y,
            (self.cx + 0.5) * scale_x - 0.5,
            (self.cy + 0.5) * scale_y - 0.5,
        )

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
