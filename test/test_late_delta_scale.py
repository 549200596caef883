"""A smaller change scale for frames far from the newest observed one (``delta_scale_late``)."""

import json

import numpy as np
import pytest
import torch

from astra_ros.model import WorldModel, preset
from astra_ros.model.config import AstraConfig, ConfigError
from synthetic_inputs import smooth_frames, twist_actions

DELTA = dict(latent_delta=True, prediction="x0", residual_decoding=True, rotation_reference=True, delta_scale=0.75)


def test_each_frame_gets_the_scale_of_its_time_after_the_newest_observed_frame():
    cfg = preset("tiny", **DELTA, delta_scale_late=0.5, delta_scale_late_after_s=0.3)  # 2 frames a chunk, 0.1 s apart
    assert cfg.delta_scales(1) == 0.75  # frames 0.1 and 0.2 s ahead
    assert cfg.delta_scales(3) == (0.75, 0.5)  # 0.3 s is not past the limit, 0.4 s is
    assert cfg.delta_scales(5) == (0.5, 0.5)
    assert preset("tiny", **DELTA).delta_scales(99) == 0.75  # off: delta_scale throughout


def test_the_late_scale_is_checked_and_survives_json(tmp_path):
    for bad, match in ((dict(delta_scale_late=0.0), "delta_scale_late must be in"),
                       (dict(delta_scale_late=2.5), "delta_scale_late must be in"),
                       (dict(delta_scale_late_after_s=-1.0), "delta_scale_late_after_s must be >= 0")):
        with pytest.raises(ConfigError, match=match):
            preset("tiny", **{**DELTA, **bad})
    with pytest.raises(ConfigError, match="latent_delta"):
        preset("tiny", delta_scale_late=0.5)
    for late in (None, 0.5):
        cfg = preset("tiny", **DELTA, delta_scale_late=late, delta_scale_late_after_s=1.5)
        cfg.to_json(tmp_path / "config.json")
        assert json.loads((tmp_path / "config.json").read_text())["delta_scale_late"] == late
        again = AstraConfig.from_json(tmp_path / "config.json")
        assert again.delta_scale_late == late and again.delta_scale_late_after_s == 1.5
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "delta_scale_late": "half"}))
    with pytest.raises(ConfigError, match="delta_scale_late' must be a finite number, got 'half' .or null."):
        AstraConfig.from_json(tmp_path / "config.json")


def _pair(after_s):
    torch.manual_seed(7)
    plain = WorldModel(preset("tiny", **DELTA))
    late = WorldModel(preset("tiny", **DELTA, delta_scale_late=0.5, delta_scale_late_after_s=after_s))
    late.load_state_dict(plain.state_dict())
    for model in (plain, late):
        model.start(smooth_frames(4), twist_actions(4, 0.05, forward=0.2), modality="twist", seed=0)
    return plain, late


def _spy_changes(model):
    """Each predicted chunk's change from its reference, as _predict returns it."""
    changes = []
    original = model._predict

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        changes.append(out - kwargs["reference"])
        return out
    model._predict = spy
    return changes


def test_frames_within_the_limit_are_unchanged_and_later_ones_shrink():
    plain, late = _pair(after_s=0.3)
    changes = {name: _spy_changes(model) for name, model in (("plain", plain), ("late", late))}
    future = twist_actions(6, 0.1, forward=0.2)[None]
    a, b = plain.imagine(future, seed=3, shared_noise=True), late.imagine(future, seed=3, shared_noise=True)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])  # 0.1-0.3 s: bit for bit
    assert np.abs(a[:, 3:].astype(int) - b[:, 3:].astype(int)).max() > 0
    # The second chunk (0.3 and 0.4 s) shares its history with the plain model's: 0.3 s keeps its change,
    # 0.4 s gets 0.5 / 0.75 of it.
    plain_change, late_change = changes["plain"][1], changes["late"][1]
    assert torch.equal(late_change[:, :, 0], plain_change[:, :, 0])
    torch.testing.assert_close(late_change[:, :, 1], plain_change[:, :, 1] * (0.5 / 0.75), atol=1e-6, rtol=1e-5)
    assert plain_change[:, :, 1].abs().max() > 1e-3  # a change to shrink


def test_step_after_step_counts_from_the_newest_observed_frame_as_imagine_does():
    _, late = _pair(after_s=0.2)
    future = twist_actions(6, 0.1, forward=0.2)
    whole = late.imagine(future[None], seed=3)[0]
    gen = torch.Generator().manual_seed(3)
    chunks = [late.step(future[i:i + 2], generator=gen) for i in range(0, 6, 2)]
    assert late._frames_ahead == 6
    assert np.abs(np.concatenate(chunks).astype(int) - whole.astype(int)).max() <= 1
    # Real frames replace the predictions: the next chunk is again the first after an observed frame.
    late.observe(smooth_frames(2), twist_actions(2, 0.05, forward=0.2))
    assert late._frames_ahead == 0
    plain, _ = _pair(after_s=0.2)
    plain.observe(smooth_frames(2), twist_actions(2, 0.05, forward=0.2))
    np.testing.assert_array_equal(late.imagine(future[None, :2], seed=4), plain.imagine(future[None, :2], seed=4))


def test_imagine_after_steps_counts_the_frames_they_predicted():
    """After a step of 2 frames, imagine's first chunk lies 0.3-0.4 s ahead: past a 0.2 s limit, so it differs from
    the plain model's (counting from 0 again, it would be within the limit and the same)."""
    plain, late = _pair(after_s=0.2)
    for model in (plain, late):
        model.step(twist_actions(2, 0.1, forward=0.2), seed=2)
    assert plain._frames_ahead == late._frames_ahead == 2
    a = plain.imagine(twist_actions(2, 0.1, forward=0.2)[None], seed=3, shared_noise=True)
    b = late.imagine(twist_actions(2, 0.1, forward=0.2)[None], seed=3, shared_noise=True)
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0


def test_open_loop_latent_rollouts_count_from_the_end_of_their_history():
    base = dict(latent_delta=True, prediction="x0", delta_scale=0.75)
    torch.manual_seed(8)
    plain = WorldModel(preset("tiny", **base))
    late = WorldModel(preset("tiny", **base, delta_scale_late=0.5, delta_scale_late_after_s=0.2))
    late.load_state_dict(plain.state_dict())
    history = torch.randn(1, plain.config.codec.latent_channels, 2, *plain.config.latent_size)
    actions = torch.zeros(1, 6, plain.action_dim("twist"))
    a, b = (m.roll_out_latents(history, actions, "twist", torch.Generator().manual_seed(4)) for m in (plain, late))
    assert torch.equal(a[:, :, :2], b[:, :, :2])  # 0.1-0.2 s ahead: within the limit
    assert (a[:, :, 2:] - b[:, :, 2:]).abs().max() > 1e-4
