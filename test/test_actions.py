"""Action vectors and pose maths checked against motions with known answers."""

import numpy as np
import pytest

from astra_ros.data.actions import (
    KEY_NAMES,
    MODALITY_DIMS,
    camera_actions,
    check_modality,
    frame_intervals,
    keys_from_twist,
    rebase_camera_actions,
    robot_actions,
    twist_actions,
)
from astra_ros.data.geometry import (
    BODY_FROM_OPTICAL,
    PinholeIntrinsics,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    pose_to_matrix,
    quaternion_slerp,
    quaternion_to_matrix,
    rotation_from_6d,
    rotation_to_6d,
    yaw_pitch_to_matrix,
)


def camera_pose(position, yaw_deg=0.0, pitch_deg=0.0):
    """World pose of a camera's optical frame on a body at ``position`` turned by yaw/pitch."""
    transform = np.eye(4)
    transform[:3, :3] = yaw_pitch_to_matrix(np.radians(yaw_deg), np.radians(pitch_deg)) @ BODY_FROM_OPTICAL
    transform[:3, 3] = position
    return transform


def as_transform(action_row):
    transform = np.eye(4)
    transform[:3, :4] = np.asarray(action_row, dtype=np.float64).reshape(3, 4)
    return transform


def test_pure_yaw_gives_rotation_about_optical_minus_y():
    start_yaw = 40.0  # the answer must not depend on where the camera starts
    poses = np.stack([camera_pose([1.0, 2.0, 1.5], start_yaw), camera_pose([1.0, 2.0, 1.5], start_yaw + 30.0)])
    actions = camera_actions(poses)
    assert actions.shape == (2, 12) and actions.dtype == np.float32
    np.testing.assert_allclose(actions[0], np.eye(4)[:3].reshape(-1), atol=1e-6)
    relative = as_transform(actions[1])
    # Turning left (+yaw about world up) is a rotation about the optical frame's up axis, which is -y.
    np.testing.assert_allclose(relative[:3, :3], axis_angle_to_matrix([0.0, -1.0, 0.0], np.radians(30.0)), atol=1e-6)
    np.testing.assert_allclose(relative[:3, 3], 0.0, atol=1e-6)
    # The new viewing direction points left of the old one: negative optical x.
    assert relative[0, 2] < -0.4


def test_forward_move_is_plus_z_in_first_optical_frame():
    yaw = 123.0
    forward_world = yaw_pitch_to_matrix(np.radians(yaw), 0.0) @ np.array([1.0, 0.0, 0.0])
    start = np.array([0.5, -1.0, 1.2])
    poses = np.stack([camera_pose(start + k * 0.25 * forward_world, yaw) for k in range(4)])
    actions = camera_actions(poses)
    translations = actions[:, [3, 7, 11]]
    np.testing.assert_allclose(translations, [[0, 0, 0], [0, 0, 0.25], [0, 0, 0.5], [0, 0, 0.75]], atol=1e-6)
    for row in actions:
        np.testing.assert_allclose(row.reshape(3, 4)[:, :3], np.eye(3), atol=1e-6)


def test_camera_actions_are_row_major_3x4():
    rotation = axis_angle_to_matrix([0.3, -0.5, 0.8], 0.7)
    second = np.eye(4)
    second[:3, :3] = rotation
    second[:3, 3] = [1.0, 2.0, 3.0]
    actions = camera_actions(np.stack([np.eye(4), second]))
    np.testing.assert_allclose(actions[1], np.concatenate([rotation[0], [1.0], rotation[1], [2.0], rotation[2], [3.0]]), atol=1e-6)


def test_rebase_camera_actions_matches_direct_computation():
    rng = np.random.default_rng(0)
    poses = np.stack(
        [pose_to_matrix(rng.normal(size=3), rng.normal(size=4)) for _ in range(6)]
    )
    rebased = rebase_camera_actions(camera_actions(poses)[2:])
    np.testing.assert_allclose(rebased, camera_actions(poses[2:]), atol=1e-5)


def test_slerp_midpoint_of_identity_and_90_deg_about_z_is_45_deg():
    quarter_turn = matrix_to_quaternion(axis_angle_to_matrix([0.0, 0.0, 1.0], np.pi / 2))
    middle = quaternion_slerp(np.array([0.0, 0.0, 0.0, 1.0]), quarter_turn, 0.5)
    axis, angle = matrix_to_axis_angle(quaternion_to_matrix(middle))
    np.testing.assert_allclose(axis, [0.0, 0.0, 1.0], atol=1e-9)
    assert np.degrees(angle) == pytest.approx(45.0)
    # Ends are reproduced and the short arc is taken for q and -q alike.
    np.testing.assert_allclose(quaternion_slerp(np.array([0, 0, 0, 1.0]), quarter_turn, 1.0), quarter_turn, atol=1e-12)
    np.testing.assert_allclose(quaternion_slerp(np.array([0, 0, 0, 1.0]), -quarter_turn, 0.5), middle, atol=1e-12)


def test_quaternion_matrix_round_trip_and_nan():
    rng = np.random.default_rng(1)
    quats = rng.normal(size=(200, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    back = matrix_to_quaternion(quaternion_to_matrix(quats))
    np.testing.assert_allclose(np.abs(np.sum(back * quats, axis=1)), 1.0, atol=1e-12)
    assert np.isnan(matrix_to_quaternion(np.full((3, 3), np.nan))).all()


def test_6d_rotation_round_trip_and_order():
    rng = np.random.default_rng(2)
    rotations = quaternion_to_matrix(rng.normal(size=(50, 4)))
    six = rotation_to_6d(rotations)
    np.testing.assert_allclose(rotation_from_6d(six), rotations, atol=1e-12)
    rotation = rotations[0]
    np.testing.assert_allclose(six[0], [rotation[0, 0], rotation[1, 0], rotation[2, 0], rotation[0, 1], rotation[1, 1], rotation[2, 1]])
    # Gram-Schmidt repairs slightly perturbed 6D vectors into a proper rotation.
    repaired = rotation_from_6d(six + 0.01 * rng.normal(size=six.shape))
    np.testing.assert_allclose(repaired @ np.swapaxes(repaired, 1, 2), np.broadcast_to(np.eye(3), repaired.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(repaired), 1.0)


def test_robot_actions_layout():
    rotation = axis_angle_to_matrix([0.0, 1.0, 0.0], np.pi)  # gripper pointing down
    actions = robot_actions(np.array([[0.4, -0.1, 0.05]]), matrix_to_quaternion(rotation)[None], np.array([0.03]))
    assert actions.shape == (1, MODALITY_DIMS["robot"])
    np.testing.assert_allclose(actions[0, :3], [0.4, -0.1, 0.05], atol=1e-6)
    np.testing.assert_allclose(actions[0, 3:9], rotation_to_6d(rotation), atol=1e-6)
    assert actions[0, 9] == pytest.approx(0.03)


def test_twist_actions_scale_by_frame_interval():
    stamps = np.array([0, 100_000_000, 200_000_000, 350_000_000], dtype=np.int64)
    intervals = frame_intervals(stamps)
    np.testing.assert_allclose(intervals, [0.1, 0.1, 0.15, 0.15])
    linear = np.tile([1.0, 0.0, 0.0], (4, 1))
    angular = np.tile([0.0, 0.0, 2.0], (4, 1))
    actions = twist_actions(linear, angular, intervals)
    np.testing.assert_allclose(actions[:, 0], [0.1, 0.1, 0.15, 0.15], atol=1e-7)
    np.testing.assert_allclose(actions[:, 5], [0.2, 0.2, 0.3, 0.3], atol=1e-7)


@pytest.mark.parametrize(
    "linear, angular, key",
    [
        ([0.5, 0.0, 0.0], [0.0, 0.0, 0.0], "forward"),
        ([-0.3, 0.0, 0.0], [0.0, 0.0, 0.0], "back"),
        ([0.0, 0.2, 0.0], [0.0, 0.0, 0.0], "left"),
        ([0.0, -0.2, 0.0], [0.0, 0.0, 0.0], "right"),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.8], "turn_left"),
        ([0.0, 0.0, 0.0], [0.0, 0.0, -0.8], "turn_right"),
        ([0.01, 0.01, 0.0], [0.0, 0.0, 0.05], "stop"),
        ([0.1, 0.0, 0.0], [0.0, 0.0, 0.6], "turn_left"),  # 2x vs 4x its threshold: the turn dominates
        ([0.6, 0.0, 0.0], [0.0, 0.0, 0.3], "forward"),  # 12x vs 2x: forward dominates
    ],
)
def test_keys_from_thresholded_twist(linear, angular, key):
    keys = keys_from_twist(np.array([linear]), np.array([angular]))
    assert keys.shape == (1, 7)
    assert keys.sum() == 1.0
    assert KEY_NAMES[int(np.argmax(keys[0]))] == key


def test_keys_nan_twist_gives_nan_row():
    keys = keys_from_twist(np.array([[np.nan, 0.0, 0.0]]), np.zeros((1, 3)))
    assert np.isnan(keys).all()


def test_check_modality_names_the_known_ones():
    with pytest.raises(ValueError, match="camera, robot, twist, keys"):
        check_modality("joystick")


def test_intrinsics_from_fovy_and_scaling():
    intrinsics = PinholeIntrinsics.from_vertical_fov(90.0, 128, 96)
    assert intrinsics.fy == pytest.approx(48.0)
    assert (intrinsics.cx, intrinsics.cy) == (63.5, 47.5)
    half = intrinsics.scaled((48, 64))
    assert half.fx == pytest.approx(24.0) and half.cx == pytest.approx(31.5) and half.cy == pytest.approx(23.5)
