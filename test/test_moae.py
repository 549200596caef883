"""MoAE: one expert per frame, a balance loss that means something, and routing that specialises."""

import torch

from astra_ros.model.moae import MixtureOfActionExperts, load_balance_loss


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
