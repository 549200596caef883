"""astra-train's recipes: refused by name when wrong, every shipped one loads, the schedule, EMA and loss plot."""

import dataclasses

import pytest
import yaml

from astra_ros.cli.train import main as train_main

import training_support
from training_support import REPO, RECIPE, write_recipe

bags = training_support.bags  # a module's own few short simulator bags (fixture)


def test_bad_recipe_and_missing_data_fail_clearly(bags, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**RECIPE, "learning_rate": 1.0}))
    assert train_main(["--config", str(bad), "--data", str(bags), "--out", str(tmp_path / "x")]) == 2
    assert "unknown recipe keys ['learning_rate']" in caplog.text
    assert train_main(["--config", str(write_recipe(tmp_path)), "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in caplog.text


@pytest.mark.parametrize("edit, message", [
    ({"grad_clip": -1.0}, "grad_clip must be a finite number > 0"),  # would flip every gradient
    ({"lr": -0.001}, "lr must be a finite number > 0"),
    ({"weight_decay": -5.0}, "weight_decay must be a finite number >= 0"),
    ({"steps": "ten"}, "recipe field 'steps' must be an integer"),
    ({"batch_size": 2.5}, "recipe field 'batch_size' must be an integer"),
    ({"lr": "fast"}, "recipe field 'lr' must be a finite number"),
    ({"model": {"num_layerz": 3}}, "model: unknown config keys \\['num_layerz'\\]"),
    ({"model": None}, "recipe field 'model' must be an object"),
    ({"steps": 0, "codec_steps": 0}, "nothing to train"),
    ({"seed": -1}, "seed and num_threads must be >= 0"),
    ({"decoder_steps": 2, "decoder_predicted_share": 1.5}, "decoder_predicted_share must be in \\[0, 1\\]"),
    ({"decoder_steps": 2, "decoder_context_frames": 3}, "must be multiples of frames_per_chunk=2"),
    ({"decoder_steps": 2, "decoder_clips": 0}, "decoder_clips must be >= 1"),
    ({"decoder_lr": 0.0}, "decoder_lr must be a finite number > 0"),
    ({"model": {"anchor_decoder_width": 8}}, "anchor_decoder_width needs residual_decoding"),
])
def test_recipe_values_of_the_wrong_type_or_range_are_refused_by_name(tmp_path, edit, message):
    from astra_ros.model import ConfigError
    from astra_ros.training.recipe import TrainRecipe

    with pytest.raises(ConfigError, match=message):
        TrainRecipe.from_yaml(write_recipe(tmp_path, **edit))


@pytest.mark.parametrize("text, message", [
    ("steps: [1, 2\n", "invalid YAML"),
    ("steps: 8\nlr: 0.001\nsteps: 2\n", "key 'steps' is given twice \\(line 3\\)"),
    ("", "the recipe is empty"),
    ("# only a comment\n", "the recipe is empty"),
])
def test_a_recipe_that_is_not_one_clear_mapping_is_refused(tmp_path, text, message):
    from astra_ros.model import ConfigError
    from astra_ros.training.recipe import TrainRecipe

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        TrainRecipe.from_yaml(path)
    path.write_bytes(b"steps: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not a readable YAML text file"):
        TrainRecipe.from_yaml(path)
    with pytest.raises(ConfigError, match="not a readable YAML text file"):
        TrainRecipe.from_yaml(tmp_path)


def test_a_recipe_learning_rate_written_without_a_dot_is_the_number_it_means(tmp_path):
    """PyYAML reads `lr: 3e-4` as the string '3e-4' (YAML 1.1); it used to fail inside AdamW."""
    from astra_ros.training.recipe import TrainRecipe

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE) + "lr: 3e-4\ncodec_lr: 1e-3\n")
    recipe = TrainRecipe.from_yaml(path)
    assert recipe.lr == pytest.approx(3e-4) and isinstance(recipe.lr, float) and recipe.codec_lr == pytest.approx(1e-3)


def test_ema_warms_up_instead_of_keeping_the_random_init():
    import torch

    from astra_ros.training.trainer import EMA

    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 0.999, updates=1)  # decay 2/11: the EMA moves most of the way at once
    torch.testing.assert_close(ema.model.weight, torch.full((2, 2), 9 / 11))
    assert EMA.warmup_decay(0.999, 10_000) == 0.999


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    from astra_ros.training.recipe import TrainRecipe
    from astra_ros.training.trainer import learning_rate

    recipe = TrainRecipe(warmup_steps=10, lr_decay="cosine", min_lr_ratio=0.1)
    rates = [learning_rate(step, 110, recipe, 1e-3) for step in range(110)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[10] == pytest.approx(1e-3)
    assert rates[60] == pytest.approx(0.55e-3)  # half-way down the cosine
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(1e-4, rel=0.01)
    constant = TrainRecipe(warmup_steps=10)
    assert learning_rate(100, 110, constant, 1e-3) == 1e-3
    with pytest.raises(Exception, match="lr_decay"):
        TrainRecipe(lr_decay="linear").validate()


def test_loss_plot_smooths_with_a_trailing_mean():
    from astra_ros.training.plots import running_mean

    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert running_mean([4.0, 0.0, 2.0], 10) == [4.0, 2.0, 2.0]  # shorter than the window
    assert running_mean([], 3) == []


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("train_*.yaml")) + sorted((REPO / "config" / "default").glob("*.yaml"))
                         + [REPO / "config" / "finetune.yaml"]
                         + sorted((REPO / "config" / "ablations").glob("*.yaml"))
                         + sorted((REPO / "config" / "experiments").glob("*.yaml")),
                         ids=lambda p: str(p.relative_to(REPO / "config")))
def test_every_shipped_recipe_loads(path):
    from astra_ros.training.recipe import TrainRecipe

    recipe = TrainRecipe.from_yaml(path)  # validates it, and the model config it builds
    assert recipe.steps + recipe.codec_steps + recipe.decoder_steps > 0


def test_ablations_change_only_the_one_thing_they_name_and_keep_the_budget():
    from astra_ros.training.recipe import TrainRecipe

    folder = REPO / "config" / "ablations"
    base = dataclasses.asdict(TrainRecipe.from_yaml(folder / "base.yaml"))
    expected = {"no_history_noise": {"history_noise_max": 0.0, "history_noise": 0.0}, "single_expert": {"num_experts": 1},
                "arm_maps": {"arm_map_cells": 4}}
    # The maps' own training settings go with them (the one thing that ablation adds).
    expected_top = {"arm_maps": {"arm_map_dropout": 0.2, "arm_map_lr_multiple": 4.0}}
    assert {p.stem for p in folder.glob("*.yaml")} == {"base", *expected}
    assert base["model"]["rotation_reference"] and base["model"]["anchor_decoder_width"] and base["model"]["latent_delta"]
    for name, change in expected.items():
        recipe = dataclasses.asdict(TrainRecipe.from_yaml(folder / f"{name}.yaml"))
        assert recipe["model"] == {**base["model"], **change}, name
        top = {k: v for k, v in base.items() if k != "model"} | expected_top.get(name, {})
        assert {k: v for k, v in recipe.items() if k != "model"} == top, name


def test_the_default_checkpoint_ships_the_recipes_that_trained_it():
    from astra_ros.training.recipe import TrainRecipe

    shipped = REPO / "astra_ros" / "checkpoints" / "default"
    chain = sorted((REPO / "config" / "default").glob("*.yaml"))
    shipped_names = ["training_recipe.yaml", "training_recipe_stage2.yaml", "training_recipe_codec.yaml",
                     "training_recipe_stage4.yaml", *(f"training_recipe_stage{n}.yaml" for n in
                                                      ("6", "7", "8", "8b", "9", "10", "11", "12", "13", "14", "15"))]
    # config/default/ is the whole chain, in training order (file names sort as the stages ran).
    assert [path.name.split("-")[0] for path in chain] == ["01", "02", "03", "04", "06", "07", "08", "08b", "09",
                                                            "10", "11", "12", "13", "14", "15"]
    for path, shipped_name in zip(chain, shipped_names, strict=True):
        assert TrainRecipe.from_yaml(path) == TrainRecipe.from_yaml(shipped / shipped_name), path.name
