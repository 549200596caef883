"""The camera rotation implied by actions, the view it predicts, and the rotation reference built on it."""

import math

import numpy as np
import pytest
import torch

from astra_ros.data.actions import camera_actions
from astra_ros.data.geometry import axis_angle_to_matrix
from astra_ros.model import WorldModel, preset
from astra_ros.model.config import ConfigError
from astra_ros.model.flow import flow_matching_loss
from astra_ros.model.view_rotation import (
    axis_angle_matrix,
    chain_rotations,
    intrinsics_from_fov,
    rotate_view,
)
from synthetic_inputs import smooth_frames, twist_actions


def _dot_image(size=33, row=16, col=16):
    image = -torch.ones(1, 3, size, size)
    image[:, :, row, col] = 1.0
    return image


def _brightest(image):
    flat = image[0].mean(dim=0)
    index = int(torch.argmax(flat))
    return divmod(index, flat.shape[1])  # (row, col)


def test_axis_angle_matrix_matches_the_data_geometry():
    rotvec = torch.tensor([0.1, -0.3, 0.25], dtype=torch.float64)
    angle = float(rotvec.norm())
    expected = axis_angle_to_matrix((rotvec / angle).numpy(), angle)
    assert np.allclose(axis_angle_matrix(rotvec).numpy(), expected, atol=1e-12)
    assert torch.allclose(axis_angle_matrix(torch.zeros(3, dtype=torch.float64)), torch.eye(3, dtype=torch.float64))


def test_identity_rotation_keeps_the_view():
    image = torch.rand(2, 3, 16, 20) * 2 - 1
    K = intrinsics_from_fov(60.0, 16, 20)
    out = rotate_view(image, K, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    assert torch.allclose(out, image, atol=1e-5)


def test_a_camera_turning_right_sees_a_point_move_left_by_f_tan_angle():
    size = 33
    K = intrinsics_from_fov(60.0, size, size)
    focal = float(K[0, 0])
    angle = math.atan(6 / focal)  # the centre point lands 6 px left
    # Turning right (clockwise seen from above) is a rotation about the optical y axis (down) by +angle.
    R = torch.tensor(axis_angle_to_matrix(np.array([0.0, 1.0, 0.0]), angle))[None]
    row, col = _brightest(rotate_view(_dot_image(size), K, R))
    assert (row, col) == (16, 10)


def test_twist_yaw_left_turns_the_view_so_the_scene_moves_right():
    size = 33
    K = intrinsics_from_fov(60.0, size, size)
    yaw = math.atan(5 / float(K[0, 0])) / 2  # two frames of this yaw: the point moves 5 px
    twist = torch.zeros(1, 2, 6, dtype=torch.float64)
    twist[..., 5] = yaw  # REP-103: +yaw turns left
    rotations = chain_rotations("twist", twist, twist[:, 0])  # the anchor commanded the same
    assert torch.allclose(rotations[0, 0], axis_angle_matrix(torch.tensor([0.0, -yaw, 0.0], dtype=torch.float64)))
    row, col = _brightest(rotate_view(_dot_image(size), K, rotations[0, 1:]))
    assert (row, col) == (16, 21)


def test_camera_rotations_are_each_frame_relative_to_the_anchor():
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (6, 1, 1))
    for i in range(6):
        poses[i, :3, :3] = axis_angle_to_matrix(rng.normal(size=3), 0.1 * i)
        poses[i, :3, 3] = rng.normal(size=3)
    actions = torch.from_numpy(camera_actions(poses)).double()[None]  # relative to frame 0
    anchor = 2
    rotations = chain_rotations("camera", actions[:, anchor + 1:], actions[0, anchor])
    for k in range(anchor + 1, 6):
        expected = poses[anchor, :3, :3].T @ poses[k, :3, :3]
        assert np.allclose(rotations[0, k - anchor - 1].numpy(), expected, atol=1e-5)
    # Continuing from a known rotation gives the same chain as one call.
    first = chain_rotations("camera", actions[:, 3:4], actions[0, 2])
    rest = chain_rotations("camera", actions[:, 4:], actions[0, 3], first[0, -1])
    assert torch.allclose(torch.cat([first, rest], dim=1), rotations, atol=1e-9)


@pytest.mark.parametrize("modality", ["robot", "keys"])
def test_modalities_that_do_not_turn_the_camera_give_identity(modality):
    actions = torch.randn(2, 3, 10 if modality == "robot" else 7)
    rotations = chain_rotations(modality, actions, actions[:, 0])
    assert torch.equal(rotations, torch.eye(3, dtype=torch.float64).expand(2, 3, 3, 3))


def test_unknown_or_non_finite_actions_turn_nothing():
    twist = torch.zeros(1, 3, 6, dtype=torch.float64)
    twist[..., 5] = 0.2
    assert torch.equal(chain_rotations("twist", twist, None), torch.eye(3, dtype=torch.float64).expand(1, 3, 3, 3))
    twist[0, 1, 5] = float("nan")
    rotations = chain_rotations("twist", twist, twist[:, 0])
    assert torch.isfinite(rotations).all()
    assert torch.allclose(rotations[0, 1], rotations[0, 2])  # the NaN command's step is identity


def test_rotation_reference_needs_latent_deltas():
    with pytest.raises(ConfigError, match="latent_delta"):
        preset("tiny", rotation_reference=True)
    with pytest.raises(ConfigError, match="reference_fovy_deg"):
        preset("tiny", latent_delta=True, rotation_reference=True, reference_fovy_deg=0.0)


def _turning_model():
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", latent_delta=True, prediction="x0", residual_decoding=True,
                             rotation_reference=True))
    model.transformer.zero_output_head()  # predictions are the reference itself: the turned anchor
    return model


def test_a_zero_output_predicts_the_newest_frame_turned_by_the_commanded_rotation():
    model = _turning_model()
    frames = smooth_frames(4)
    model.start(frames, twist_actions(4, 0.05), modality="twist")
    future = twist_actions(6, 0.04)
    predicted = model.imagine(future[None], seed=0)[0]
    anchor = torch.from_numpy(frames[-1]).permute(2, 0, 1)[None].float() / 127.5 - 1
    rotations = chain_rotations("twist", torch.from_numpy(future)[None].double(), torch.tensor(twist_actions(1, 0.05)[0]))
    expected = rotate_view(anchor.expand(6, -1, -1, -1), model.intrinsics, rotations[0])
    expected = ((expected + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy().astype(int)
    # The first chunk is the observed frame turned, exactly; later chunks turn the newest predicted frame
    # on (a second interpolation), so they stay close to one turn of the observed frame, away from the edges.
    assert np.abs(predicted[:2].astype(int) - expected[:2]).max() <= 1
    assert np.abs(predicted[2:, 3:-3, 3:-3].astype(int) - expected[2:, 3:-3, 3:-3]).mean() < 2.0
    assert np.abs(predicted[-1].astype(int) - frames[-1].astype(int)).mean() > 5  # it did turn
    # The same future through step(), one chunk at a time: the second chunk continues the first's turn.
    steps = np.concatenate([model.step(future[i:i + 2], seed=0) for i in range(0, 6, 2)])
    assert np.abs(steps.astype(int) - predicted.astype(int)).max() <= 1


def test_the_codec_ceiling_of_a_turning_model_is_decoded_from_the_turned_frame():
    """``reconstruct(frames, actions)`` decodes as predictions are: from the newest observed frame turned by the
    frames' own actions. The turned frame itself then comes back (its codec error cancels); decoded from the
    unturned frame, it keeps the codec's error of the turn."""
    model = _turning_model()
    frames = smooth_frames(4)
    model.start(frames, twist_actions(4, 0.05), modality="twist")
    future = twist_actions(2, 0.3)
    anchor = torch.from_numpy(frames[-1]).permute(2, 0, 1)[None].float() / 127.5 - 1
    rotations = chain_rotations("twist", torch.from_numpy(future)[None].double(), torch.tensor(twist_actions(1, 0.05)[0]))
    turned = rotate_view(anchor.expand(2, -1, -1, -1), model.intrinsics, rotations[0])
    turned = ((turned + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    along = model.reconstruct(turned, future).astype(int)
    unturned = model.reconstruct(turned).astype(int)
    assert np.abs(along - turned).max() <= 2
    assert np.abs(unturned - turned).mean() > 2 * max(np.abs(along - turned).mean(), 0.5)
    with pytest.raises(ValueError, match="one row per frame"):
        model.reconstruct(turned, future[:1])


def test_intrinsics_change_the_turn_and_are_checked():
    model = _turning_model()
    frames = np.random.default_rng(2).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    model.start(frames, twist_actions(4, 0.1), modality="twist")
    wide = model.imagine(twist_actions(2, 0.1)[None], seed=0)
    model.set_intrinsics(np.array([[40.0, 0, 7.5], [0, 40.0, 7.5], [0, 0, 1]]))  # a long lens: pixels move more
    narrow = model.imagine(twist_actions(2, 0.1)[None], seed=0)
    assert not np.array_equal(wide, narrow)
    for bad in (np.zeros((3, 3)), np.full((3, 3), np.nan), np.eye(2)):
        with pytest.raises(ValueError, match="intrinsics"):
            model.set_intrinsics(bad)
    model.set_intrinsics(None)
    assert np.array_equal(model.imagine(twist_actions(2, 0.1)[None], seed=0), wide)


def test_latents_alone_cannot_be_rolled_out_with_a_rotation_reference():
    model = _turning_model()
    with pytest.raises(ValueError, match="rotation_reference"):
        model.roll_out_latents(torch.zeros(1, 4, 2, 2, 2), torch.zeros(1, 4, 6), "twist", torch.Generator())


def test_the_loss_measures_change_from_the_given_references():
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", latent_delta=True, prediction="x0"))
    model.transformer.zero_output_head()
    latents = torch.randn(2, 4, 6, *model.config.latent_size)
    actions = torch.zeros(2, 6, model.transformer.action_encoder.max_action_size)
    ids = torch.zeros(2, dtype=torch.long)
    exact = flow_matching_loss(model.transformer, latents, actions, ids, generator=torch.Generator().manual_seed(0),
                               references=latents.clone())
    assert float(exact.flow.detach()) == 0.0  # a zero output is exactly right when the references are the frames
    default = flow_matching_loss(model.transformer, latents, actions, ids, generator=torch.Generator().manual_seed(0))
    assert float(default.flow.detach()) > 0.1
    with pytest.raises(ValueError, match="references"):
        flow_matching_loss(model.transformer, latents, actions, ids, references=latents[:, :, :2])


def test_a_trained_rotation_reference_model_streams_as_it_imagines():
    torch.manual_seed(3)
    model = WorldModel(preset("tiny", latent_delta=True, prediction="x0", residual_decoding=True,
                             rotation_reference=True))
    with torch.no_grad():  # an output head that is not zero, so each chunk leaves a residual to carry
        model.transformer.proj_out.weight.normal_(0, 0.05)
    frames = np.random.default_rng(4).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    model.start(frames, twist_actions(4, 0.05), modality="twist", seed=0)
    future = twist_actions(6, 0.1)
    whole = model.imagine(future[None], seed=5, shared_noise=True)[0]
    gen = torch.Generator().manual_seed(5)
    # imagine draws each chunk's prediction noise and history noise from one generator; step() the same way
    chunks = [model.step(future[i:i + 2], generator=gen) for i in range(0, 6, 2)]
    assert np.abs(np.concatenate(chunks).astype(int) - whole.astype(int)).max() <= 1


def test_delta_scale_shrinks_each_predicted_change_towards_its_reference():
    torch.manual_seed(5)
    config = dict(latent_delta=True, prediction="x0", residual_decoding=True, rotation_reference=True)
    full = WorldModel(preset("tiny", **config))
    half = WorldModel(preset("tiny", **config, delta_scale=0.5))
    half.load_state_dict(full.state_dict())
    frames = smooth_frames(4)
    for model in (full, half):
        model.start(frames, twist_actions(4, 0.05), modality="twist", seed=0)
    captured = {}
    for name, model in (("full", full), ("half", half)):
        original = model._predict

        def spy(*args, _original=original, _name=name, **kwargs):
            out = _original(*args, **kwargs)
            captured[_name] = (out, kwargs["reference"])
            return out
        model._predict = spy
        model.imagine(twist_actions(2, 0.1)[None], seed=3)
    (z_full, ref_full), (z_half, ref_half) = captured["full"], captured["half"]
    assert torch.allclose(ref_full, ref_half)
    assert torch.allclose(z_half - ref_half, 0.5 * (z_full - ref_full), atol=1e-5)
    assert (z_full - ref_full).abs().max() > 1e-3  # a change to shrink
    with pytest.raises(ConfigError, match="delta_scale"):
        preset("tiny", delta_scale=0.5)
    with pytest.raises(ConfigError, match="delta_scale"):
        preset("tiny", latent_delta=True, delta_scale=0.0)


def test_without_a_turn_each_chunk_refers_to_the_newest_predicted_latents():
    torch.manual_seed(6)
    model = WorldModel(preset("tiny", latent_delta=True, prediction="x0", residual_decoding=True,
                             rotation_reference=True))
    with torch.no_grad():
        model.transformer.proj_out.weight.normal_(0, 0.05)
    frames = smooth_frames(4)
    robot = np.random.default_rng(0).normal(0, 0.1, size=(10, 10)).astype(np.float32)
    model.start(frames, robot[:4], modality="robot", seed=0)
    seen = []
    original = model._predict

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append((kwargs["reference"], out))
        return out
    model._predict = spy
    model.imagine(robot[None, 4:], seed=1)
    for (_, before), (reference, _) in zip(seen, seen[1:]):
        assert torch.allclose(reference, before[:, :, -1:].expand_as(reference))  # stage 8's reference exactly
