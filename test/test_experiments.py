"""The experiment scripts under scripts/experiments do what their results rest on."""


import numpy as np

from astra_ros.data.bags import read_episode
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings
from repo_scripts import load_script



def test_the_converted_arm_pose_projects_onto_the_gripper(tmp_path):
    converter = load_script("scripts/experiments/ee_pose_in_camera_frame.py")
    bag = record_episode("arm", 5, tmp_path / "in", settings=SimSettings(seconds=1.0, image_width=64, image_height=64),
                         progress=False)
    assert converter.main([str(bag), "--out", str(tmp_path / "out")]) == 0
    original, converted = read_episode(bag, "robot"), read_episode(tmp_path / "out" / bag.name, "robot")
    np.testing.assert_array_equal(converted.frames, original.frames)
    np.testing.assert_array_equal(converted.actions[:, 9], original.actions[:, 9])  # the gripper is untouched
    # In the camera's optical frame the end effector is in front of the camera and inside the image.
    info = converted.camera_info
    x, y, z = converted.actions[:, :3].T
    u, v = info.fx * x / z + info.cx, info.fy * y / z + info.cy
    assert (z > 0.2).all() and (u > 0).all() and (u < info.width).all() and (v > 0).all() and (v < info.height).all()
    # And the transform is rigid: distances between poses are those of the base frame.
    np.testing.assert_allclose(np.linalg.norm(np.diff(converted.actions[:, :3], axis=0), axis=1),
                               np.linalg.norm(np.diff(original.actions[:, :3], axis=0), axis=1), atol=1e-5)
