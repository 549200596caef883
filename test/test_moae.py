"""MoAE: one expert per frame, a balance loss that means something, and routing that specialises."""

import numpy as np
import torch

from astra_ros.model.moae import ACTION_STD_FLOOR, MixtureOfActionExperts, load_balance_loss


def test_each_frame_goes_to_exactly_one_expert_weighted_by_its_score():
    torch.manual_seed(0)
    moae = MixtureOfActionExperts({"camera": 12, "twist": 6}, action_dim=8, num_experts=3, expert_hidden_dim=16)
    actions = torch.randn(4, 5, 12)
    ids = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        out, info = moae(actions, ids)
        for b in range(4):
            name = moae.modality_names[int(ids[b])]
            shared = moae.projectors[int(ids[b])](actions[b, :, : moae.modality_dims[name]])
            probs = moae.router(shared).softmax(-1)
            for f in range(5):
                e = int(info.expert_index[b, f])
                assert e == int(probs[f].argmax())
                expected = probs[f, e] * moae.experts[e](shared[f])
                torch.testing.assert_close(out[b, f], expected)


def test_dropped_frames_get_the_null_action_and_are_not_routed():
    torch.manual_seed(0)
    moae = MixtureOfActionExperts({"keys": 7}, action_dim=8, num_experts=2, expert_hidden_dim=8)
    with torch.no_grad():
        moae.null_action.copy_(torch.arange(8.0))
    dropped = torch.tensor([[True, False, True]])
    out, info = moae(torch.randn(1, 3, 7), torch.tensor([0]), dropped)
    torch.testing.assert_close(out[0, 0], torch.arange(8.0))
    torch.testing.assert_close(out[0, 2], torch.arange(8.0))
    assert info.expert_index[0].tolist()[0] == -1 and info.expert_index[0, 1] >= 0


def test_load_balance_loss_is_positive_and_lowest_when_routing_is_uniform():
    uniform_probs = torch.full((8, 4), 0.25)
    spread = torch.arange(8) % 4
    assert abs(float(load_balance_loss(uniform_probs, spread, 4)) - 1.0) < 1e-6
    collapsed_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    collapsed = torch.zeros(8, dtype=torch.long)
    loss_collapsed = float(load_balance_loss(collapsed_probs, collapsed, 4))
    assert loss_collapsed > 3.5  # close to its maximum, num_experts
    confident_spread = torch.eye(4).repeat(2, 1) * 0.97 + 0.01
    assert float(load_balance_loss(confident_spread, spread, 4)) < 1.01
    assert float(load_balance_loss(torch.rand(8, 4).softmax(-1), torch.randint(0, 4, (8,)), 4)) > 0


def test_different_modalities_reach_different_experts_after_training():
    torch.manual_seed(0)
    moae = MixtureOfActionExperts({"camera": 12, "twist": 6}, action_dim=8, num_experts=2, expert_hidden_dim=16)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(moae.parameters(), lr=1e-2)
    ids = torch.tensor([0] * 16 + [1] * 16)
    for _ in range(300):
        a = torch.zeros(32, 2, 12)
        a[:16] = torch.randn(16, 2, 12, generator=g)
        a[16:, :, :6] = torch.randn(16, 2, 6, generator=g)
        # Opposite targets from inputs of the same statistics: one expert cannot serve both.
        target = torch.cat([a[:16, :, :8].abs(), -a[16:, :, :6].abs().repeat(1, 1, 2)[..., :8]])
        out, info = moae(a, ids)
        loss = ((out - target) ** 2).mean() + 0.1 * info.load_balance_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    moae.expert_counts.zero_()
    with torch.no_grad():
        moae(a, ids)
    usage = moae.expert_usage()
    cam, twist = usage["camera"], usage["twist"]
    assert max(cam) > 0.8 and max(twist) > 0.8
    assert cam.index(max(cam)) != twist.index(max(twist)), usage


def _rover_like_twists(rng, n):
    """Twist actions at a rover's scale: ~0.02 m forward and ~0.05 rad of yaw per frame, the rest zero."""
    twist = np.zeros((n, 6))
    twist[:, 0] = rng.normal(0.02, 0.02, n)
    twist[:, 5] = rng.normal(0.0, 0.05, n)
    return twist


def test_action_statistics_standardise_the_projector_input_and_keep_the_function():
    torch.manual_seed(0)
    moae = MixtureOfActionExperts({"camera": 12, "twist": 6}, action_dim=8, num_experts=3, expert_hidden_dim=16)
    rng = np.random.default_rng(0)
    twist, camera = _rover_like_twists(rng, 400), rng.normal(1.0, 0.3, (400, 12))
    probe = torch.zeros(2, 5, 12)
    probe[0] = torch.as_tensor(camera[:5], dtype=torch.float32)
    probe[1, :, :6] = torch.as_tensor(twist[:5], dtype=torch.float32)
    ids = torch.tensor([0, 1])
    with torch.no_grad():
        before, info_before = moae(probe, ids)
        moae.set_action_statistics({"camera": camera, "twist": twist})
        after, info_after = moae(probe, ids)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)  # a trained model is unchanged
    assert (info_after.expert_index == info_before.expert_index).all()
    # The twist projector now sees standardised inputs; never-varying dimensions are divided by the floor.
    seen = []
    hook = moae.projectors[1].register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    batch = torch.zeros(1, 400, 12)
    batch[0, :, :6] = torch.as_tensor(twist, dtype=torch.float32)
    with torch.no_grad():
        moae(batch, torch.tensor([1]))
    hook.remove()
    standardised = seen[0].reshape(-1, 6)
    for dim in (0, 5):
        assert abs(float(standardised[:, dim].mean())) < 1e-4 and abs(float(standardised[:, dim].std()) - 1) < 0.01
    assert (standardised[:, 1:5] == 0).all()
    assert moae.action_std[1, 1] == ACTION_STD_FLOOR and moae.action_std[1, 6:].eq(1).all()
    # Measuring again (other data) still keeps the function.
    with torch.no_grad():
        moae.set_action_statistics({"twist": _rover_like_twists(np.random.default_rng(1), 300) * 3})
        again, _ = moae(probe, ids)
    torch.testing.assert_close(again, before, atol=1e-5, rtol=1e-4)


def test_standardised_small_actions_are_learned_much_faster_than_raw_ones():
    """Why the statistics exist: the feature of a 0.05 rad yaw must move before a model can use it."""
    rng = np.random.default_rng(0)
    twist = _rover_like_twists(rng, 256)
    actions = torch.zeros(256, 1, 6)
    actions[:, 0] = torch.as_tensor(twist, dtype=torch.float32)
    target = (actions[:, :, 5:6] / 0.05).expand(-1, -1, 4)  # the yaw in units of its spread
    losses = {}
    for standardise in (False, True):
        torch.manual_seed(0)
        moae = MixtureOfActionExperts({"twist": 6}, action_dim=4, num_experts=1, expert_hidden_dim=16)
        if standardise:
            with torch.no_grad():
                moae.set_action_statistics({"twist": twist})
        opt = torch.optim.Adam(moae.parameters(), lr=1e-3)
        for _ in range(300):
            out, _ = moae(actions, torch.zeros(256, dtype=torch.long))
            loss = ((out - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[standardise] = float(loss.detach())
    assert losses[True] < 0.1 * losses[False], losses  # about 0.006 against 0.64


def _camera_poses(rng: np.random.Generator, frames: int) -> np.ndarray:
    """A camera drifting and turning a little per frame: world poses (frames, 4, 4)."""
    from astra_ros.data.geometry import quaternion_to_matrix

    poses = np.tile(np.eye(4), (frames, 1, 1))
    yaw = np.cumsum(rng.normal(0.0, 0.05, frames))
    pitch = np.cumsum(rng.normal(0.0, 0.02, frames))
    quats = np.stack([np.sin(pitch / 2), np.sin(yaw / 2) * np.cos(pitch / 2), np.zeros(frames),
                      np.cos(yaw / 2) * np.cos(pitch / 2)], axis=-1)
    poses[:, :3, :3] = quaternion_to_matrix(quats / np.linalg.norm(quats, axis=-1, keepdims=True))
    poses[:, :3, 3] = np.cumsum(rng.normal(0.0, 0.03, (frames, 3)), axis=0) + [1.0, -2.0, 0.5]
    return poses


def test_camera_motion_is_the_step_since_the_frame_before_whatever_the_reference():
    from astra_ros.data.actions import camera_actions, rebase_camera_actions
    from astra_ros.data.geometry import relative_transforms

    moae = MixtureOfActionExperts({"camera": 12, "twist": 6}, action_dim=8, num_experts=2, expert_hidden_dim=8, motion=True)
    poses = _camera_poses(np.random.default_rng(0), 8)
    actions = camera_actions(poses)  # relative to frame 0
    rebased = rebase_camera_actions(actions, reference_index=5)  # relative to frame 5
    ids = torch.tensor([0, 0])
    motion = moae.motion(torch.as_tensor(np.stack([actions, rebased])), ids).double()
    expected = np.stack([relative_transforms(poses[i - 1], poses[i:i + 1])[0] for i in range(1, 8)])
    expected[:, :3, :3] -= np.eye(3)
    np.testing.assert_allclose(motion[0, 1:].numpy(), expected[:, :3, :4].reshape(7, 12), atol=1e-5)
    torch.testing.assert_close(motion[1], motion[0], atol=1e-5, rtol=0)  # the reference frame does not matter
    assert motion[:, 0].eq(0).all()  # nothing before frame 0: unknown, zero
    # With the frame before given, frame 0 gets its motion too; a camera standing still has none.
    with_previous = moae.motion(torch.as_tensor(actions[None, 1:]), ids[:1], torch.as_tensor(actions[None, 0]))
    torch.testing.assert_close(with_previous[0], motion[0, 1:].float(), atol=1e-5, rtol=0)
    still = moae.motion(torch.as_tensor(np.repeat(actions[None, 3:4], 4, axis=1)), ids[:1])
    assert still.abs().max() < 1e-6
    # Other modalities: the change of the vector.
    twist = torch.randn(1, 5, 12)
    twist[..., 6:] = 0
    torch.testing.assert_close(moae.motion(twist, torch.tensor([1]))[0, 1:], twist[0, 1:] - twist[0, :-1])


def test_motion_inputs_start_at_zero_and_their_statistics_keep_the_function():
    torch.manual_seed(0)
    plain = MixtureOfActionExperts({"camera": 12, "twist": 6}, action_dim=8, num_experts=3, expert_hidden_dim=16)
    moving = MixtureOfActionExperts({"camera": 12, "twist": 6}, action_dim=8, num_experts=3, expert_hidden_dim=16,
                                    motion=True)
    moving.load_state_dict(plain.state_dict(), strict=False)
    rng = np.random.default_rng(1)
    windows = np.cumsum(rng.normal(0.0, 0.02, (40, 10, 6)), axis=1)  # twist-like windows [N, T, D]
    probe = torch.zeros(2, 10, 12)
    probe[:, :, :6] = torch.as_tensor(windows[:2], dtype=torch.float32)
    ids = torch.tensor([1, 1])
    with torch.no_grad():
        motion = moving.motion(probe, ids)
        torch.testing.assert_close(moving(probe, ids, motion=motion)[0], plain(probe, ids)[0])  # zero at init
        for proj in moving.motion_projectors:  # as after training
            proj.weight.normal_(0, 1.0)
        before, _ = moving(probe, ids, motion=motion)
        moving.set_action_statistics({"twist": windows})
        after, _ = moving(probe, ids, motion=moving.motion(probe, ids))
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    measured = np.diff(windows, axis=1).reshape(-1, 6).std(axis=0)
    np.testing.assert_allclose(moving.motion_std[1, :6].numpy(), measured, rtol=1e-4)
    assert moving.motion_std[0].eq(1).all()  # no camera windows: unchanged


def test_statistics_measured_on_the_cpu_apply_to_a_module_on_another_device():
    # "meta" stands in for an accelerator: like CUDA, it refuses to mix with non-scalar CPU tensors,
    # which is how the trainer's statistics pass (after model.to(cuda)) once failed for motion inputs.
    enc = MixtureOfActionExperts({"camera": 12, "twist": 6}, action_dim=8, num_experts=3, expert_hidden_dim=16,
                                 motion=True).to("meta")
    windows = np.cumsum(np.random.default_rng(2).normal(0.0, 0.02, (20, 6, 6)), axis=1)
    measured = enc.set_action_statistics({"twist": windows})
    np.testing.assert_allclose(measured["twist"][0], windows.reshape(-1, 6).mean(axis=0), rtol=1e-5)
    assert enc.motion_std.device.type == "meta" and enc.motion_projectors[1].weight.device.type == "meta"
