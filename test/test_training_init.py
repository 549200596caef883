"""Where an astra-train run starts: --init, --init-codec, --init-transformer, a reset output head, and the fine-
tunes built on them."""

import json

import pytest
import torch
import yaml

from astra_ros.cli.train import main as train_main

import training_support
from training_support import run_weights, write_recipe

bags = training_support.bags  # a module's own few short simulator bags (fixture)


def test_init_with_more_blocks_starts_as_the_checkpoint_and_trains_the_new_ones(bags, tmp_path, caplog):
    import numpy as np

    from astra_ros.data.bags import read_episode
    from astra_ros.model import WorldModel

    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(write_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    deeper = write_recipe(tmp_path, steps=3, codec_steps=0, model={"num_layers": 4})  # tiny has 2 blocks
    assert train_main(["--config", str(deeper), "--init", str(tmp_path / "src"), "--stop-after", "0",
                       "--out", str(tmp_path / "start")] + common) == 0
    src, start = WorldModel.from_pretrained(tmp_path / "src"), WorldModel.from_pretrained(tmp_path / "start")
    assert (src.config.num_layers, start.config.num_layers) == (2, 4)
    frames = read_episode(sorted(bags.glob("rover_*"))[0], resolution=src.resolution).frames[:6]
    actions = np.random.default_rng(0).normal(0, 0.1, (6, 6)).astype(np.float32)
    futures = []
    for model in (src, start):
        model.start(frames[:4], actions[:4], modality="twist", seed=0)
        futures.append(model.imagine(actions[None, 4:], seed=1)[0].astype(int))
    assert np.abs(futures[0] - futures[1]).max() <= 1  # the same function, up to uint8 rounding
    # Trained on, the new blocks move away from the identity.
    assert train_main(["--config", str(deeper), "--init", str(tmp_path / "src"), "--out", str(tmp_path / "deep")]
                      + common) == 0
    weights = run_weights(tmp_path / "deep" / "train_state")
    assert weights["transformer.blocks.3.ffn.net.2.weight"].abs().max() > 0
    # clip_frames is checked against the model --init brings, not only the preset's
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src3").mkdir()
    (tmp_path / "src3" / "config.json").write_text(json.dumps({**config, "chunk_frames": 4}))
    (tmp_path / "src3" / "model.safetensors").write_bytes((tmp_path / "src" / "model.safetensors").read_bytes())
    assert train_main(["--config", str(write_recipe(tmp_path, codec_steps=0)), "--init", str(tmp_path / "src3"),
                       "--out", str(tmp_path / "chunks")] + common) == 2
    assert "clip_frames=6 must be a multiple of the model's frames_per_chunk=4" in caplog.text
    shallower = write_recipe(tmp_path, steps=1, codec_steps=0, model={"num_layers": 1})
    assert train_main(["--config", str(shallower), "--init", str(tmp_path / "src"), "--out", str(tmp_path / "no")]
                      + common) == 2
    assert "can only grow" in caplog.text


def test_init_codec_takes_only_the_codec(bags, tmp_path, caplog):
    recipe = write_recipe(tmp_path, steps=2, codec_steps=3)
    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(recipe), "--out", str(tmp_path / "source")] + common) == 0
    frozen = write_recipe(tmp_path, steps=2, codec_steps=0, seed=5)  # another seed: another transformer init
    assert train_main(["--config", str(frozen), "--init-codec", str(tmp_path / "source"),
                       "--out", str(tmp_path / "ablation")] + common) == 0
    source, ablation = run_weights(tmp_path / "source"), run_weights(tmp_path / "ablation")
    for k in source:
        if k.startswith("codec."):  # the codec (weights and latent statistics) is carried over unchanged
            assert (source[k] == ablation[k]).all(), k
    assert any((source[k] - ablation[k]).abs().max() > 0 for k in source if k.startswith("transformer."))
    wider = write_recipe(tmp_path, steps=2, codec_steps=0, model={"codec": {"latent_channels": 8}})
    assert train_main(["--config", str(wider), "--init-codec", str(tmp_path / "source"),
                       "--out", str(tmp_path / "bad")] + common) == 2
    assert "differs from the recipe's" in caplog.text


def test_init_codec_brings_the_anchor_decoder_of_the_same_width(bags, tmp_path, caplog):
    caplog.set_level("INFO", logger="astra_train")
    common = ["--data", str(bags), "--no-progress"]
    anchored = {"residual_decoding": True, "anchor_decoder_width": 8}
    assert train_main(["--config", str(write_recipe(tmp_path, steps=1, codec_steps=1, model={"residual_decoding": True})),
                       "--out", str(tmp_path / "plain")] + common) == 0
    assert train_main(["--config", str(write_recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=2, decoder_clips=1,
                                               decoder_context_frames=2, model=anchored)),
                       "--init", str(tmp_path / "plain"), "--out", str(tmp_path / "src")] + common) == 0
    ablation = write_recipe(tmp_path, steps=1, codec_steps=0, seed=5, model=anchored)
    assert train_main(["--config", str(ablation), "--init-codec", str(tmp_path / "src"),
                       "--out", str(tmp_path / "ablation")] + common) == 0
    source, taken = run_weights(tmp_path / "src"), run_weights(tmp_path / "ablation")
    decoder = [k for k in source if k.startswith("anchor_decoder.")]
    assert decoder and all((source[k] == taken[k]).all() for k in decoder)
    # The source's decoder had trained away from its zero heads, so the copy is not the fresh start.
    assert (source["anchor_decoder.coarse_flow.weight"] != 0).any()
    # A recipe with a decoder of another width, or a source without one: the decoder starts untrained.
    wider = write_recipe(tmp_path, steps=1, codec_steps=0, model={"residual_decoding": True, "anchor_decoder_width": 16})
    assert train_main(["--config", str(wider), "--init-codec", str(tmp_path / "src"),
                       "--out", str(tmp_path / "wider")] + common) == 0
    assert "starts untrained" in caplog.text
    assert not run_weights(tmp_path / "wider")["anchor_decoder.coarse_flow.weight"].any()


def test_init_transformer_takes_every_tensor_whose_shape_still_fits(bags, tmp_path, caplog):
    caplog.set_level("INFO", logger="astra_train")
    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(write_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    # Another patch size: the patch embedding and the output projection change shape, the blocks do not.
    recipe = write_recipe(tmp_path, steps=2, codec_steps=0, seed=5, model={"patch_size": [1, 1, 1]})
    assert train_main(["--config", str(recipe), "--init-transformer", str(tmp_path / "src"), "--stop-after", "0",
                       "--out", str(tmp_path / "warm")] + common) == 0
    src, warm = run_weights(tmp_path / "src"), run_weights(tmp_path / "warm" / "train_state")
    blocks = [k for k in src if k.startswith("transformer.blocks.")]
    assert blocks and all((src[k] == warm[k]).all() for k in blocks)
    assert src["transformer.patch_embedding.weight"].shape != warm["transformer.patch_embedding.weight"].shape
    assert "fresh: patch_embedding.weight, proj_out.bias, proj_out.weight" in caplog.text  # biases of width dim fit
    assert train_main(["--config", str(recipe), "--init", str(tmp_path / "src"), "--init-transformer",
                       str(tmp_path / "src"), "--out", str(tmp_path / "both")] + common) == 2


def test_reset_output_head_starts_an_x0_delta_model_at_copy_last(bags, tmp_path):
    """--init a trained model, switch it to x0 / latent-delta prediction and zero its head: before any
    step it predicts the last observed frame, exactly (residual decoding puts it back in pixels)."""
    import numpy as np

    from astra_ros.data.bags import read_episode
    from astra_ros.model import WorldModel

    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(write_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    recipe = write_recipe(tmp_path, steps=2, codec_steps=0, reset_output_head=True,
                     model={"latent_delta": True, "prediction": "x0", "residual_decoding": True})
    assert train_main(["--config", str(recipe), "--init", str(tmp_path / "src"), "--stop-after", "0",
                       "--out", str(tmp_path / "x0")] + common) == 0
    state = run_weights(tmp_path / "x0" / "train_state")
    assert state["transformer.proj_out.weight"].abs().max() == 0 and state["transformer.proj_out.bias"].abs().max() == 0
    src = run_weights(tmp_path / "src")
    assert all((src[k] == state[k]).all() for k in src if k.startswith("transformer.blocks."))
    model = WorldModel.from_pretrained(tmp_path / "x0")  # released at the stop: the EMA, as it starts
    assert model.config.prediction == "x0"
    frames = read_episode(sorted(bags.glob("rover_*"))[0], resolution=model.resolution).frames[:6]
    actions = np.random.default_rng(0).normal(0, 0.1, (6, 6)).astype(np.float32)
    model.start(frames[:4], actions[:4], modality="twist", seed=0)
    future = model.imagine(actions[None, 4:], seed=1)[0]
    assert np.abs(future.astype(int) - frames[3].astype(int)).max() <= 1  # copy-last, up to uint8 rounding
    with pytest.raises(Exception, match="prediction must be one of"):
        from astra_ros.training.recipe import TrainRecipe

        TrainRecipe.from_yaml(write_recipe(tmp_path, model={"prediction": "epsilon"}))


def test_decoder_phase_trains_only_the_anchor_decoder_and_resumes_exactly(bags, tmp_path, caplog, monkeypatch):
    from astra_ros.model import WorldModel

    common = ["--data", str(bags), "--no-progress"]
    src = tmp_path / "src"
    assert train_main(["--config", str(write_recipe(tmp_path, steps=3, codec_steps=2, model={"residual_decoding": True})),
                       "--out", str(src)] + common) == 0
    recipe = write_recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=6, decoder_clips=2, decoder_context_frames=2,
                     decoder_horizon_frames=4, decoder_predicted_share=0.5, checkpoint_every=3,
                     model={"residual_decoding": True, "anchor_decoder_width": 8})
    run = ["--config", str(recipe), "--init", str(src)] + common
    assert train_main(run + ["--out", str(tmp_path / "straight")]) == 0
    before, after = run_weights(src), run_weights(tmp_path / "straight")
    # The codec and the transformer are the source's released weights, bit for bit; the decoder moved
    # from its start (residual decoding: the source's own decoding).
    assert all((before[k] == after[k]).all() for k in before)
    start = WorldModel.from_pretrained(src, config_overrides={"anchor_decoder_width": 8}).state_dict()
    decoder = [k for k in after if k.startswith("anchor_decoder.")]
    assert decoder and any((after[k] - start[k]).abs().max() > 0 for k in decoder)
    rows = [line.split(",") for line in (tmp_path / "straight" / "loss.csv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["decoder"] * 6
    assert all(float(r[2]) > 0 for r in rows)  # pixel MSE of the decoded future frames
    # Both kinds of latents were drawn (predicted share 0.5 over 8 frames a step), each logged apart.
    assert any(r[3] != "nan" for r in rows) and any(r[4] != "nan" for r in rows)
    # Stopped inside the decoder phase and resumed: the same weights as the straight run.
    out = tmp_path / "resumed"
    assert train_main(run + ["--out", str(out), "--stop-after", "3"]) == 0
    assert train_main(["--config", str(recipe), "--out", str(out), "--resume"] + common) == 0
    a, b = run_weights(tmp_path / "straight" / "train_state"), run_weights(out / "train_state")
    assert all((a[k] == b[k]).all() for k in a)
    # Like steps, the decoder phase may be made longer on resume.
    longer_run = write_recipe(tmp_path, **{**yaml.safe_load(recipe.read_text()), "decoder_steps": 8})
    assert train_main(["--config", str(longer_run), "--out", str(out), "--resume"] + common) == 0
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 8
    # But in the decoder phase the world phase before it is fixed (a new steps would move the boundary
    # and count decoder steps as world steps), and the decoder cannot end before the steps it ran.
    resumed_with = yaml.safe_load(longer_run.read_text())  # _recipe rewrites the same file
    for change, message in (({"steps": 2}, "can no longer change"), ({"decoder_steps": 5}, "already run 8 decoder")):
        changed = write_recipe(tmp_path, **{**resumed_with, **change})
        assert train_main(["--config", str(changed), "--out", str(out), "--resume"] + common) == 2
        assert message in caplog.text
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 8  # left as it was
    # Longer windows than the world phase's clips get a dataset of their own; on real latents only
    # (the default share 0) the world model is never rolled out.
    def no_rollouts(*args, **kwargs):
        raise AssertionError("rolled out although every frame gets its real latents")

    monkeypatch.setattr(WorldModel, "roll_out_latents", no_rollouts)
    longer = write_recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=1, decoder_clips=1, decoder_context_frames=4,
                     decoder_horizon_frames=6,
                     model={"residual_decoding": True, "anchor_decoder_width": 8})
    assert train_main(["--config", str(longer), "--init", str(src), "--out", str(tmp_path / "longer")] + common) == 0
    # A model without an anchor decoder is refused by name, before any step.
    plain = write_recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=2)
    assert train_main(["--config", str(plain), "--init", str(src), "--out", str(tmp_path / "plain")] + common) == 2
    assert "anchor_decoder_width" in caplog.text


def test_init_applies_the_recipes_model_fields_to_the_checkpoint(tmp_path):
    """--init keeps the checkpoint's weights but takes the recipe's sampling/training fields (how the
    latent-delta fine-tune of the default starts); a field that changes shapes fails clearly."""
    from astra_ros.model import CheckpointError, WorldModel, preset
    from astra_ros.model.config import ConfigError
    from astra_ros.training.trainer import Trainer

    source = WorldModel(preset("tiny"))
    source.save_pretrained(tmp_path / "ckpt")
    model = Trainer._init_from(str(tmp_path / "ckpt"), {"latent_delta": True, "history_noise": 0.1})
    assert model.config.latent_delta and model.config.history_noise == 0.1
    assert model.config.num_layers == source.config.num_layers
    for k, v in source.state_dict().items():
        assert (model.state_dict()[k] == v).all(), k
    with pytest.raises(CheckpointError, match="does not match"):
        Trainer._init_from(str(tmp_path / "ckpt"), {"ffn_dim": source.config.ffn_dim + 8})
    # (more num_layers is the one shape change --init allows: it grows the model, tested above)
    with pytest.raises(ConfigError, match="codec comes from the checkpoint"):
        Trainer._init_from(str(tmp_path / "ckpt"), {"codec": {"latent_channels": 8}})


def test_rotation_reference_fine_tune_starts_at_the_turned_view_and_trains_both_phases(bags, tmp_path, caplog):
    """A zeroed head with ``rotation_reference`` predicts the newest frame turned by the commanded
    rotation; the world and decoder phases train on such references (every modality in one batch);
    rolled-out decoder inputs, which have no pixels to turn, are refused before any step."""
    import numpy as np

    from astra_ros.data.bags import read_episode
    from astra_ros.model import WorldModel
    from astra_ros.model.view_rotation import chain_rotations

    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(write_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    model_fields = {"latent_delta": True, "prediction": "x0", "residual_decoding": True, "rotation_reference": True}
    recipe = write_recipe(tmp_path, steps=2, codec_steps=0, reset_output_head=True, model=model_fields)
    assert train_main(["--config", str(recipe), "--init", str(tmp_path / "src"), "--stop-after", "0",
                       "--out", str(tmp_path / "turned")] + common) == 0
    model = WorldModel.from_pretrained(tmp_path / "turned")
    episode = read_episode(sorted(bags.glob("rover_*"))[0], resolution=model.resolution)
    model.set_intrinsics(episode.camera_info.matrix())
    actions = np.zeros((6, 6), dtype=np.float32)
    actions[:, 5] = 0.15  # turning left
    model.start(episode.frames[:4], actions[:4], modality="twist", seed=0)
    future = model.imagine(actions[None, 4:], seed=1)[0]
    anchor = torch.from_numpy(episode.frames[3]).permute(2, 0, 1)[None].float() / 127.5 - 1
    rotations = chain_rotations("twist", torch.from_numpy(actions[None, 4:]).double(), torch.from_numpy(actions[3]))
    turned = model.turned_views(anchor.expand(2, -1, -1, -1), rotations[0])[0]
    expected = ((turned + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(future.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(future.astype(int) - episode.frames[3].astype(int)).mean() > 1  # not copy-last

    both = write_recipe(tmp_path, steps=2, codec_steps=0, reset_output_head=True, decoder_steps=2, decoder_clips=2,
                   decoder_context_frames=2, decoder_horizon_frames=4,
                   model={**model_fields, "anchor_decoder_width": 8})
    assert train_main(["--config", str(both), "--init", str(tmp_path / "src"), "--out", str(tmp_path / "both")]
                      + common) == 0
    rows = [line.split(",") for line in (tmp_path / "both" / "loss.csv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["world"] * 2 + ["decoder"] * 2
    assert all(np.isfinite(float(r[2])) and float(r[2]) > 0 for r in rows)
    rolled = write_recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=2, decoder_clips=2, decoder_context_frames=2,
                     decoder_horizon_frames=4, decoder_predicted_share=0.5,
                     model={**model_fields, "anchor_decoder_width": 8})
    assert train_main(["--config", str(rolled), "--init", str(tmp_path / "src"), "--out", str(tmp_path / "rolled")]
                      + common) == 2
    assert "decoder_predicted_share" in caplog.text


def test_arm_maps_train_from_zero_and_their_dropout_withholds_them(bags, tmp_path):
    """With ``arm_map_cells`` the end-effector map projector starts at zero and learns from the arm bag, faster
    with ``arm_map_lr_multiple``; with ``arm_map_dropout: 1`` no map reaches the loss, so it stays exactly zero."""
    common = ["--data", str(bags), "--no-progress"]
    weights = {}
    for dropout, multiple in ((0.0, 1.0), (0.0, 10.0), (1.0, 1.0)):
        out = tmp_path / f"maps_{dropout}_{multiple}"
        recipe = write_recipe(tmp_path, steps=6, codec_steps=0, modality_weights={"robot": 50.0},
                         model={"arm_map_cells": 2}, arm_map_dropout=dropout, arm_map_lr_multiple=multiple)
        assert train_main(["--config", str(recipe), "--out", str(out)] + common) == 0
        weights[dropout, multiple] = run_weights(out / "train_state")["transformer.arm_map.weight"]
    assert weights[0.0, 1.0].abs().max() > 1e-5
    assert weights[0.0, 10.0].abs().max() > 3 * weights[0.0, 1.0].abs().max()
    assert weights[1.0, 1.0].abs().max() == 0


def test_resume_of_an_init_run_rebuilds_the_init_model_without_being_told(bags, tmp_path):
    # A checkpoint whose config differs from the recipe's preset in what it computes, not its shapes:
    # resumed from the preset, the run went on as another model (velocity, no deltas) without a word.
    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(write_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    assert config["prediction"] == "velocity" and not config["latent_delta"]
    (tmp_path / "src" / "config.json").write_text(json.dumps({**config, "prediction": "x0", "latent_delta": True}))
    recipe = ["--config", str(write_recipe(tmp_path, steps=4, codec_steps=0, checkpoint_every=2))] + common
    assert train_main(recipe + ["--init", str(tmp_path / "src"), "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "resumed"
    assert train_main(recipe + ["--init", str(tmp_path / "src"), "--out", str(out), "--stop-after", "2"]) == 0
    assert train_main(recipe + ["--out", str(out), "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["prediction"] == "x0"
    a, b = run_weights(tmp_path / "straight" / "train_state"), run_weights(out / "train_state")
    assert all((a[k] == b[k]).all() for k in a)
