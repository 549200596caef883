"""End-effector maps: the arm's commanded position drawn where the camera sees it (model/arm_map.py), the
camera's pose in the arm's base frame read from bags (data/arm_camera.py), and the model using both."""

import numpy as np
import pytest
import torch

from astra_ros.data.arm_camera import LEGACY_SIM_ARM_BASE_Z_M, camera_in_base, chain_transform
from astra_ros.data.bags import read_episode
from astra_ros.data.geometry import invert_transform
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings
from astra_ros.data.scenes.arm import ArmScenario
from astra_ros.model import WorldModel
from astra_ros.model.arm_map import arm_token_maps, projection_matrix
from astra_ros.model.config import ConfigError, preset

K64 = np.array([[64.0, 0.0, 32.0], [0.0, 64.0, 32.0], [0.0, 0.0, 1.0]])


def _translation(x, y, z):
    transform = np.eye(4)
    transform[:3, 3] = (x, y, z)
    return transform


def test_a_point_on_the_optical_axis_lands_in_the_middle_and_its_blob_peaks_in_the_right_token():
    projection = projection_matrix(K64, np.eye(4))[None]  # camera at the base origin, looking along base z
    # (0, 0, 2) m -> pixel (32, 32): the corner of the four middle tokens of a 4x4 grid; (0.6, -0.6, 2) ->
    # pixel (51.2, 12.8): token row 0, col 3.
    positions = torch.tensor([[[0.0, 0.0, 2.0], [0.6, -0.6, 2.0], [0.0, 0.0, -1.0]]])
    maps = arm_token_maps(positions, projection, (64, 64), (4, 4), 4)
    assert maps.shape == (1, 3, 16, 16)
    peak = maps[0, 0].amax(dim=1)
    assert set(peak.topk(4).indices.tolist()) == {5, 6, 9, 10}  # the middle four share the blob
    token = maps[0, 1].amax(dim=1).argmax().item()
    assert token == 3  # row 0, col 3
    assert maps[0, 1].max() > 0.9 and maps[0, 1].max() <= 1.0
    assert maps[0, 2].abs().max() == 0  # behind the camera: nothing drawn


def test_an_unknown_camera_draws_nothing():
    projection = torch.full((1, 3, 4), float("nan"), dtype=torch.float64)
    maps = arm_token_maps(torch.zeros(1, 2, 3), projection, (64, 64), (4, 4), 2)
    assert maps.shape == (1, 2, 16, 4) and maps.abs().max() == 0


def test_static_transforms_chain_through_a_tree_and_fall_back_only_for_the_old_simulator_frames():
    base_in_odom = _translation(0, 0, 0.4)
    link_in_base = _translation(1.0, 0.2, 0.5)
    optical_in_link = np.eye(4)
    optical_in_link[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    static = [("odom", "base_link", base_in_odom), ("base_link", "camera_link", link_in_base),
              ("camera_link", "camera_optical_frame", optical_in_link)]
    expected = link_in_base @ optical_in_link
    assert np.allclose(chain_transform(static, "base_link", "camera_optical_frame"), expected)
    assert np.allclose(chain_transform(static, "camera_optical_frame", "base_link"), invert_transform(expected))
    assert chain_transform(static, "base_link", "elsewhere") is None
    assert np.allclose(camera_in_base(static, "base_link", "camera_optical_frame"), expected)
    # Without /tf_static: only the simulator's old frame names take its known base position.
    camera_world = _translation(1.0, 0.0, 1.0)
    legacy = camera_in_base([], "base", "camera_optical", camera_world, "world")
    assert np.allclose(legacy, _translation(1.0, 0.0, 1.0 - LEGACY_SIM_ARM_BASE_Z_M))
    assert camera_in_base([], "base_link", "camera_optical_frame", camera_world, "odom") is None
    assert LEGACY_SIM_ARM_BASE_Z_M == ArmScenario.table_height_m


@pytest.fixture(scope="module")
def arm_bag(tmp_path_factory):
    settings = SimSettings(seconds=2.0, image_width=64, image_height=64)
    return record_episode("arm", 3, tmp_path_factory.mktemp("arm"), settings=settings, progress=False)


def test_a_recorded_arm_bag_places_its_camera_so_that_the_end_effector_projects_onto_the_arm(arm_bag):
    episode = read_episode(arm_bag)
    assert episode.camera_in_base is not None
    projection = projection_matrix(episode.camera_info.matrix(), episode.camera_in_base).numpy()
    points = np.c_[episode.actions[:, :3], np.ones(len(episode.actions))]
    uvw = points @ projection.T
    assert (uvw[:, 2] > 0).all()
    uv = uvw[:, :2] / uvw[:, 2:]
    inside = (uv >= 0).all(axis=1) & (uv < 64).all(axis=1)
    assert inside.sum() >= 6  # in view for a while (this seed then reaches out of the picture, to the left)
    # The gripper is drawn where the image differs from the scene without the arm: the pixels around
    # the projected end effector change more between frames than the image does on average.
    frames = episode.frames.astype(np.float32)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=-1)  # (T-1, H, W)
    near, overall = [], []
    for t in range(len(change)):
        if not inside[t + 1] or change[t].mean() == 0:
            continue
        u, v = np.clip(uv[t + 1].round().astype(int), 4, 59)
        near.append(change[t][v - 4:v + 5, u - 4:u + 5].mean())
        overall.append(change[t].mean())
    assert len(near) > 5 and np.mean(near) > 3 * np.mean(overall)


def test_arm_maps_start_as_the_model_without_them_and_then_steer_it(arm_bag):
    config = preset("tiny")
    plain = WorldModel(config).eval()
    with torch.no_grad():  # a fresh model's actions enter through zero: give them a way in first
        for block in plain.transformer.blocks:
            block.action_proj.weight.normal_(0.0, 0.5)
    mapped = WorldModel(preset("tiny", arm_map_cells=2)).eval()
    mapped.load_state_dict(plain.state_dict(), strict=False)
    episode = read_episode(arm_bag, resolution=plain.resolution)
    frames, actions = episode.frames, episode.actions
    outputs = []
    for model in (plain, mapped):
        model.set_intrinsics(episode.camera_info.matrix())
        model.start(frames[:4], actions[:4], modality="robot")
        outputs.append(model.imagine(actions[None, 4:8], seed=0)[0])
    mapped.set_camera_in_base(episode.camera_in_base)
    mapped.start(frames[:4], actions[:4], modality="robot")
    assert np.array_equal(outputs[0], mapped.imagine(actions[None, 4:8], seed=0)[0])  # zero projector: unchanged
    with torch.no_grad():
        mapped.transformer.arm_map.weight.normal_(0.0, 1.0)
    mapped.start(frames[:4], actions[:4], modality="robot")
    steered = mapped.imagine(actions[None, 4:8], seed=0)[0]
    assert not np.array_equal(steered, outputs[0])
    mapped.set_camera_in_base(None)  # unknown camera: the vector alone, as without maps
    mapped.start(frames[:4], actions[:4], modality="robot")
    assert np.array_equal(mapped.imagine(actions[None, 4:8], seed=0)[0], outputs[0])
    assert mapped.twin().camera_in_base is None


def test_bad_camera_poses_and_configs_are_refused():
    model = WorldModel(preset("tiny", arm_map_cells=2))
    with pytest.raises(ValueError, match="rigid transform"):
        model.set_camera_in_base(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="rigid transform"):
        model.set_camera_in_base(2 * np.eye(4))
    with pytest.raises(ConfigError, match="arm_map_cells must be in 0..16"):
        preset("tiny", arm_map_cells=-1)
