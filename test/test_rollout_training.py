"""Training on the model's own rollouts (``rollout_history_fraction``): the loss takes a history apart from
its targets, a rollout is the inference path's, and a run with it trains and resumes."""

import numpy as np
import pytest
import torch
import yaml

from astra_ros.cli.train import main as train_main
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings
from astra_ros.model import WorldModel, preset
from astra_ros.model.config import ConfigError
from astra_ros.model.flow import flow_matching_loss
from astra_ros.training.recipe import TrainRecipe
from astra_ros.training.rollouts import eligible_rows, own_rollout, rolled_out_history, rollout_rows

TURNING = dict(latent_delta=True, prediction="x0", residual_decoding=True, rotation_reference=True)


def _turning_model(zero_head=True):
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", **TURNING))
    if zero_head:
        model.transformer.zero_output_head()  # every prediction is its reference
    return model


def _clip(frames=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    pictures = [np.stack([np.sin(2 * np.pi * (xs + 0.1 * i)), np.cos(3 * ys + xs), np.sin(2 * xs * ys + i)], -1)
                for i in range(frames)]
    pixels = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float()  # (T, 3, H, W) in [-1, 1]
    twist = np.zeros((frames, 6), np.float32)
    twist[:, 5] = 0.2 + 0.05 * rng.normal(size=frames)  # turning left
    return pixels, torch.from_numpy(twist)


def test_the_loss_predicts_the_real_targets_from_the_history_it_is_given():
    model = _turning_model(zero_head=False)
    latents = torch.randn(2, 4, 6, 8, 8, generator=torch.Generator().manual_seed(1))  # tiny: 4 x 8x8 latents
    actions = torch.zeros(2, 6, model.transformer.action_encoder.max_action_size)
    ids = torch.zeros(2, dtype=torch.long)

    def loss(history=None):
        return float(flow_matching_loss(model.transformer, latents, actions, ids, torch.Generator().manual_seed(3),
                                        history_latents=history).total.detach())

    own = loss()
    assert loss(latents[:, :, :4].clone()) == own  # its own history: the same loss, bit for bit
    other = latents[:, :, :4] + 0.5
    assert loss(other) != own
    with pytest.raises(ValueError, match="history_latents"):
        loss(latents[:, :, :2])


def test_a_rollout_is_the_inference_paths_and_leaves_the_model_as_it_was():
    model = _turning_model().train()
    frames, actions = _clip()
    K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]], dtype=torch.float64)
    predicted, references = own_rollout(model, frames, actions, "twist", K, None, seed=0)
    assert predicted.shape == references.shape == (4, 4, 8, 8)  # chunks 1 and 2 of a 3-chunk clip
    # A zeroed head predicts its reference: each chunk the newest frame before it, turned on.
    torch.testing.assert_close(predicted, references, rtol=0, atol=0)
    # The same through the public API: imagine from the observed first chunk.
    model.eval()
    model.set_intrinsics(K)
    pixels = ((frames + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    model.start(pixels[:2], actions[:2].numpy(), modality="twist", seed=0)
    record = []
    model.imagine(actions[2:].numpy()[None], seed=0, decode="last", record=record)
    torch.testing.assert_close(torch.cat([c for _, c in record], dim=2)[0], predicted, rtol=0, atol=0)
    assert not torch.equal(references[:, 2:], references[:, :2])  # the second chunk turned on from the first
    # Left alone: modes, camera, stream (the rollout runs on a twin).
    own_camera = torch.tensor([[30.0, 0, 8.0], [0, 30.0, 8.0], [0, 0, 1]], dtype=torch.float64)
    model.set_intrinsics(own_camera)
    model.reset()
    model.train()
    own_rollout(model, frames, actions, "twist", K, None, seed=0)
    assert model.training and model.transformer.training and model.modality is None
    assert torch.equal(model.intrinsics, own_camera) and model.camera_in_base is None


def test_only_the_drawn_rows_get_a_rolled_out_history():
    model = _turning_model()
    frames, actions = _clip()
    batch_frames = torch.stack([frames, frames.flip(-1)])
    batch_actions = torch.zeros(2, 6, model.transformer.action_encoder.max_action_size)
    batch_actions[:, :, :6] = actions
    ids = torch.full((2,), model.transformer.action_encoder.modality_index("twist"))
    with torch.no_grad():
        latents = model.codec.encode(batch_frames)
    references = latents.clone()
    nan = torch.full((2, 3, 3), float("nan"), dtype=torch.float64)
    history, turned = rolled_out_history(model, np.array([False, True]), batch_frames, batch_actions, ids, nan,
                                         torch.full((2, 4, 4), float("nan")), latents, references, seed=0)
    assert history.shape == (2, 4, 4, 8, 8)
    torch.testing.assert_close(history[0], latents[0, :, :4], rtol=0, atol=0)  # not drawn: its own
    torch.testing.assert_close(turned[0], references[0], rtol=0, atol=0)
    torch.testing.assert_close(history[1, :, :2], latents[1, :, :2], rtol=0, atol=0)  # the observed first chunk
    assert (history[1, :, 2:] - latents[1, :, 2:4]).abs().max() > 1e-3  # then the model's own
    torch.testing.assert_close(history[1, :, 2:], turned[1, :, 2:4], rtol=0, atol=0)  # zero head: its references
    # The rows are drawn per step from their own stream: repeatable, and about the share asked for.
    assert (rollout_rows(0.5, 8, 3, 10) == rollout_rows(0.5, 8, 3, 10)).all()
    assert not rollout_rows(0.0, 8, 3, 10).any() and rollout_rows(1.0, 8, 3, 10).all()
    assert 0.4 < np.mean([rollout_rows(0.5, 8, 3, s).mean() for s in range(200)]) < 0.6
    # Restricted to some modalities: the same draw, masked, so the eligible rows keep their draws.
    names = ["camera", "robot", "twist", "keys"]
    ids = torch.tensor([0, 1, 2, 3, 1, 0, 1, 2])
    eligible = eligible_rows(ids, names, ["camera", "twist", "keys"])
    assert eligible.tolist() == [True, False, True, True, False, True, False, True]
    assert eligible_rows(ids, names, []) is None
    for s in range(20):
        full, masked = rollout_rows(0.5, 8, 3, s), rollout_rows(0.5, 8, 3, s, eligible)
        assert (masked == (full & eligible)).all() and not masked[~eligible].any()


def test_a_run_trains_on_its_rollouts_and_the_recipe_is_checked(tmp_path):
    root = tmp_path / "bags"
    settings = SimSettings(seconds=2.0, image_width=64, image_height=64)
    for scenario in ("arm", "rover"):
        record_episode(scenario, 1, root, settings=settings, progress=False)
    recipe = dict(preset="tiny", clip_frames=6, batch_size=2, steps=3, codec_steps=0, warmup_steps=1,
                  checkpoint_every=10, log_every=1, num_threads=1, rollout_history_fraction=1.0,
                  rollout_history_modalities=["twist", "keys"], model=TURNING)  # the arm's clips stay real
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert train_main(["--config", str(path), "--data", str(root), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    rows = [line.split(",") for line in (tmp_path / "run" / "loss.csv").read_text().splitlines()[1:]]
    assert len(rows) == 3 and all(np.isfinite(float(r[2])) for r in rows)
    with pytest.raises(ConfigError, match="rollout_history_fraction must be in"):
        TrainRecipe(**{**recipe, "model": TURNING, "rollout_history_fraction": 1.5}).validate()
    with pytest.raises(ConfigError, match="at least 3 chunks"):
        TrainRecipe(**{**recipe, "model": TURNING, "clip_frames": 4}).validate()
    with pytest.raises(ConfigError, match=r"rollout_history_modalities names modalities \['wheels'\]"):
        TrainRecipe(**{**recipe, "model": TURNING, "rollout_history_modalities": ["camera", "wheels"]}).validate()
    with pytest.raises(ConfigError, match="rollout_history_fraction is 0"):
        TrainRecipe(**{**recipe, "model": TURNING, "rollout_history_fraction": 0.0,
                       "rollout_history_modalities": ["twist"]}).validate()
    with pytest.raises(ConfigError, match="must be a list of modality names"):
        TrainRecipe(**{**recipe, "model": TURNING, "rollout_history_modalities": "camera"}).validate()
