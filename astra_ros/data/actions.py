"""Action vectors per modality (DESIGN.md §2, MoAE), computed from per-frame poses and twists.

Modalities (contract names and sizes):

* ``camera`` (12): the 3x4 ``[R|t]`` of the camera at frame i relative to the clip's first frame,
  ``T_rel = inv(T_world_cam0) @ T_world_cami``, flattened row-major. Camera poses are those of the
  *optical* frame (z forward, x right, y down), so a straight forward move is +z translation.
* ``robot`` (10): end-effector position [m] (3) + 6D rotation (first two columns of R, order
  ``[r11, r21, r31, r12, r22, r32]``) + gripper opening [m] (1), all in the robot's base frame.
* ``twist`` (6): body-frame linear xyz [m/s] and angular xyz [rad/s] velocity times the frame
  interval [s], i.e. the displacement [m] and rotation [rad] the command asks for until the next frame.
* ``keys`` (7): one-hot ``[forward, back, left, right, turn_left, turn_right, stop]`` from a
  thresholded twist (see :class:`KeyThresholds`).

Body frames follow REP-103: x forward, y left, z up; a positive yaw rate turns left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astra_ros.data.geometry import quaternion_to_matrix, relative_transforms, rotation_to_6d

MODALITY_DIMS: dict[str, int] = {"camera": 12, "robot": 10, "twist": 6, "keys": 7}
MODALITIES: tuple[str, ...] = tuple(MODALITY_DIMS)
KEY_NAMES: tuple[str, ...] = ("forward", "back", "left", "right", "turn_left", "turn_right", "stop")

# Which modality each simulator scenario is recorded for.
scenario_modality: dict[str, str] = {"explore": "camera", "arm": "robot", "rover": "twist"}


def check_modality(modality: str) -> str:
    """Return ``modality`` if it is a known modality name, else raise ``ValueError`` naming the known ones."""
    if modality not in MODALITY_DIMS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return modality


def camera_actions(camera_poses_world: np.ndarray) -> np.ndarray:
    """Camera actions ``float32 [T, 12]`` from camera (optical frame) poses ``[T, 4, 4]`` in any fixed world frame.

    Row i is ``[R|t]`` (row-major) of frame i in frame 0's optical frame; translation in [m].
    Frames with a NaN pose give NaN rows; if frame 0 is NaN every row is NaN.
    """
    poses = np.asarray(camera_poses_world, dtype=np.float64)
    relative = relative_transforms(poses[0], poses)
    return relative[:, :3, :4].reshape(len(poses), 12).astype(np.float32)


def rebase_camera_actions(actions: np.ndarray, reference_index: int = 0) -> np.ndarray:
    """Re-express camera actions ``[T, 12]`` relative to frame ``reference_index`` instead of the original first frame.

    Because every row is ``inv(T0) @ Ti``, ``inv(row_ref) @ row_i = inv(T_ref) @ T_i``: windows of a long
    episode get clip-relative actions without the absolute poses.
    """
    actions = np.asarray(actions, dtype=np.float64)
    transforms = np.zeros((len(actions), 4, 4))
    transforms[:, :3, :4] = actions.reshape(-1, 3, 4)
    transforms[:, 3, 3] = 1.0
    relative = relative_transforms(transforms[reference_index], transforms)
    return relative[:, :3, :4].reshape(-1, 12).astype(np.float32)


def robot_actions(ee_positions: np.ndarray, ee_quats_xyzw: np.ndarray, gripper_openings: np.ndarray) -> np.ndarray:
    """Robot actions ``float32 [T, 10]``: position [m] (3), 6D rotation (6), gripper opening [m] (1).

    ``ee_positions [T, 3]`` and ``ee_quats_xyzw [T, 4]`` are the end-effector pose in the robot's base frame,
    ``gripper_openings [T]`` the distance between the fingers.
    """
    rotation = quaternion_to_matrix(np.asarray(ee_quats_xyzw, dtype=np.float64))
    return np.concatenate(
        [
            np.asarray(ee_positions, dtype=np.float64),
            rotation_to_6d(rotation),
            np.asarray(gripper_openings, dtype=np.float64)[:, None],
        ],
        axis=-1,
    ).astype(np.float32)


def frame_intervals(stamps_ns: np.ndarray) -> np.ndarray:
    """Interval [s] from each frame to the next ``[T]``; the last frame repeats the previous interval.

    A single frame has interval 0 (there is no next frame to reach).
    """
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    if len(stamps) < 2:
        return np.zeros(len(stamps), dtype=np.float64)
    intervals = np.diff(stamps).astype(np.float64) * 1e-9
    return np.concatenate([intervals, intervals[-1:]])


def twist_actions(linear_velocity: np.ndarray, angular_velocity: np.ndarray, intervals_s: np.ndarray) -> np.ndarray:
    """Twist actions ``float32 [T, 6]``: body-frame velocities times the frame intervals.

    ``linear_velocity [T, 3]`` [m/s], ``angular_velocity [T, 3]`` [rad/s], ``intervals_s [T]`` [s].
    """
    twist = np.concatenate([np.asarray(linear_velocity, np.float64), np.asarray(angular_velocity, np.float64)], axis=-1)
    return (twist * np.asarray(intervals_s, dtype=np.float64)[:, None]).astype(np.float32)


@dataclass(frozen=True)
class KeyThresholds:
    """Speeds below which a twist component does not press its key.

    Each component is divided by its threshold and the largest ratio wins if it is >= 1;
    otherwise the key is ``stop``. Linear x gives forward/back, linear y left/right (strafe),
    angular z turn_left/turn_right (positive yaw rate = turn left).
    """

    linear_mps: float = 0.05  # [m/s] forward/back and strafe speed that counts as a key press
    angular_radps: float = 0.15  # [rad/s] yaw rate that counts as a turn key press


def keys_from_twist(
    linear_velocity: np.ndarray, angular_velocity: np.ndarray, thresholds: KeyThresholds = KeyThresholds()
) -> np.ndarray:
    """One-hot keys ``float32 [T, 7]`` (order :data:`KEY_NAMES`) from body-frame velocities ``[T, 3]`` [m/s], [rad/s].

    The dominant component (largest speed relative to its threshold) wins; ``stop`` when every
    component is below its threshold. NaN velocities give NaN rows.
    """
    linear = np.asarray(linear_velocity, dtype=np.float64)
    angular = np.asarray(angular_velocity, dtype=np.float64)
    ratios = np.stack(
        [
            linear[:, 0] / thresholds.linear_mps,
            linear[:, 1] / thresholds.linear_mps,
            angular[:, 2] / thresholds.angular_radps,
        ],
        axis=-1,
    )  # (T, 3): signed ratio per axis
    dominant_axis = np.argmax(np.abs(np.nan_to_num(ratios)), axis=-1)
    dominant_ratio = ratios[np.arange(len(ratios)), dominant_axis]
    # Key index for (axis, positive sign): forward/back, left/right, turn_left/turn_right.
    positive_key = np.array([0, 2, 4])[dominant_axis]
    key = np.where(dominant_ratio >= 0.0, positive_key, positive_key + 1)
    key = np.where(np.abs(dominant_ratio) >= 1.0, key, KEY_NAMES.index("stop"))
    keys = np.zeros((len(ratios), len(KEY_NAMES)), dtype=np.float32)
    keys[np.arange(len(ratios)), key] = 1.0
    keys[~np.isfinite(ratios).all(axis=-1)] = np.nan
    return keys
