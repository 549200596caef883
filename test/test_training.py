"""astra-train: the loop learns, resumes exactly, runs under torchrun (DDP, gloo) in step."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from astra_ros.cli.train import main as train_main
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings

REPO = Path(__file__).resolve().parents[1]
RECIPE = dict(preset="tiny", clip_frames=6, batch_size=2, steps=6, codec_steps=4, warmup_steps=2,
              checkpoint_every=3, log_every=1, num_threads=1)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    settings = SimSettings(seconds=2.0, image_width=64, image_height=64)
    for scenario in ("explore", "arm", "rover"):
        record_episode(scenario, 1, root, settings=settings, progress=False)
    return root


def _recipe(tmp_path, **overrides):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **overrides}))
    return path


def _weights(run: Path, name: str = "model.safetensors"):
    return load_file(str(run / name))


def test_training_writes_checkpoint_curves_and_learns(bags, tmp_path):
    recipe = _recipe(tmp_path, steps=40, codec_steps=30, checkpoint_every=100)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "loss.csv", "loss.png", "recipe.yaml", "train_state/state.json"):
        assert (run / name).is_file(), name
    rows = [line.split(",") for line in (run / "loss.csv").read_text().splitlines()[1:]]
    codec = [float(r[3]) for r in rows if r[1] == "codec"]
    world = [float(r[3]) for r in rows if r[1] == "world"]
    assert len(codec) == 30 and len(world) == 40
    assert sum(codec[-5:]) / 5 < 0.7 * sum(codec[:5]) / 5  # reconstruction improves
    # The released checkpoint loads through the public API and is the EMA, not the raw weights.
    from astra_ros.model import WorldModel

    WorldModel.from_pretrained(run)
    raw, ema = _weights(run / "train_state"), _weights(run)
    assert any((raw[k] - ema[k]).abs().max() > 0 for k in raw if k.startswith("transformer."))


def test_resume_continues_exactly(bags, tmp_path):
    recipe = _recipe(tmp_path)
    common = ["--config", str(recipe), "--data", str(bags), "--no-progress"]
    assert train_main(common + ["--out", str(tmp_path / "straight")]) == 0
    for stop in (2, 5):  # inside the codec phase, and inside the world phase
        out = tmp_path / f"resumed{stop}"
        assert train_main(common + ["--out", str(out), "--stop-after", str(stop)]) == 0
        assert train_main(common + ["--out", str(out), "--resume"]) == 0
        a, b = _weights(tmp_path / "straight" / "train_state"), _weights(out / "train_state")
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k]).all(), f"{k} differs after resuming at step {stop}"


def test_resume_of_an_init_run_rebuilds_the_init_model_without_being_told(bags, tmp_path):
    # A checkpoint whose config differs from the recipe's preset in what it computes, not its shapes:
    # resumed from the preset, the run went on as another model (velocity, no deltas) without a word.
    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    assert config["prediction"] == "velocity" and not config["latent_delta"]
    (tmp_path / "src" / "config.json").write_text(json.dumps({**config, "prediction": "x0", "latent_delta": True}))
    recipe = ["--config", str(_recipe(tmp_path, steps=4, codec_steps=0, checkpoint_every=2))] + common
    assert train_main(recipe + ["--init", str(tmp_path / "src"), "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "resumed"
    assert train_main(recipe + ["--init", str(tmp_path / "src"), "--out", str(out), "--stop-after", "2"]) == 0
    assert train_main(recipe + ["--out", str(out), "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["prediction"] == "x0"
    a, b = _weights(tmp_path / "straight" / "train_state"), _weights(out / "train_state")
    assert all((a[k] == b[k]).all() for k in a)


def test_a_finished_run_is_not_overwritten_and_resume_needs_the_same_bags(bags, tmp_path, caplog):
    common = ["--config", str(_recipe(tmp_path, steps=2, codec_steps=0)), "--no-progress"]
    out = tmp_path / "run"
    assert train_main(common + ["--data", str(bags), "--out", str(out)]) == 0
    before = (out / "loss.csv").read_text(), _weights(out)
    assert train_main(common + ["--data", str(bags), "--out", str(out), "--stop-after", "1"]) == 2
    assert "already holds a training run (state at step 2)" in caplog.text and "--resume" in caplog.text
    assert (out / "loss.csv").read_text() == before[0]
    assert all((before[1][k] == v).all() for k, v in _weights(out).items())
    # Resuming on fewer bags is refused by name; the same bags reached another way are the same data.
    one = sorted(bags.glob("rover_*"))[0]
    assert train_main(common + ["--data", str(one), "--out", str(out), "--resume"]) == 2
    assert "other data than" in caplog.text and "3 bags then, 1 now" in caplog.text
    assert train_main(common + ["--data", str(bags), str(one), "--out", str(out), "--resume"]) == 0


def test_find_bags_takes_files_counts_each_bag_once_and_skips_unfinished_recordings(bags, tmp_path, caplog):
    from astra_ros.data.bags import BagError, find_bags

    everything = find_bags([bags])
    assert len(everything) == 3
    rover = sorted(bags.glob("rover_*"))[0]
    storage = next(rover.glob("*.mcap"))
    assert find_bags([bags, rover, storage, Path(os.path.relpath(bags))]) == everything
    assert find_bags([storage]) == [rover]
    assert find_bags([rover, bags])[0] == rover  # in the order given, each bag once
    assert len(find_bags([rover, bags])) == 3
    unfinished = tmp_path / "data" / "rover_s7.partial" / "rover_s7"
    unfinished.mkdir(parents=True)
    (unfinished / "rover_s7.mcap").write_bytes(b"half a recording")
    with pytest.raises(BagError, match="no ROS 2 bags found"):
        find_bags([tmp_path / "data"])
    assert "skipping 1 unfinished recording" in caplog.text
    (tmp_path / "notes.txt").write_text("not a bag")
    with pytest.raises(BagError, match="is not a bag"):
        find_bags([tmp_path / "notes.txt"])


def test_find_bags_follows_links_to_bags_and_ends_on_a_link_loop(bags, tmp_path):
    """A data folder of symlinks to bags lost those bags without a word (Path.rglob skips symlinked
    folders before Python 3.13): a training run then silently trained on part of its data."""
    from astra_ros.data.bags import find_bags

    linked = tmp_path / "linked"
    linked.mkdir()
    originals = sorted(p for p in bags.iterdir() if (p / "metadata.yaml").is_file())
    for bag in originals:
        (linked / bag.name).symlink_to(bag.resolve(), target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # must not recurse forever
    found = find_bags([linked])
    assert [bag.name for bag in found] == [bag.name for bag in originals]
    assert {bag.resolve() for bag in found} == {bag.resolve() for bag in originals}


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_state_whole(bags, tmp_path, monkeypatch):
    """Written in place, a half-written ema.safetensors destroyed the last good state (or mixed two
    steps' weights); the state is now swapped in whole, and the run resumes as if never stopped."""
    import astra_ros.training.state as state
    from astra_ros.training.state import state_dir

    recipe = _recipe(tmp_path)
    common = ["--config", str(recipe), "--data", str(bags), "--no-progress"]
    assert train_main(common + ["--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "crashed"
    real_save, calls = state.save_tensors, []

    def crash_on_the_second_ema(tensors, path):
        calls.append(path.name)
        if path.name == "ema.safetensors" and calls.count("ema.safetensors") == 2:
            path.write_bytes(b"half a file")
            raise OSError("disk full")
        real_save(tensors, path)

    monkeypatch.setattr(state, "save_tensors", crash_on_the_second_ema)
    with pytest.raises(OSError, match="disk full"):
        train_main(common + ["--out", str(out)])
    monkeypatch.setattr(state, "save_tensors", real_save)
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 3  # the first checkpoint
    # a crash between the two renames of the swap: only train_state.old holds a state
    (out / "train_state").rename(out / "train_state.old")
    assert state_dir(out / "train_state") == out / "train_state.old"
    assert train_main(common + ["--out", str(out), "--resume"]) == 0
    a, b = _weights(tmp_path / "straight" / "train_state"), _weights(out / "train_state")
    assert all((a[k] == b[k]).all() for k in a)
    assert not (out / "train_state.old").exists() and not (out / "train_state.tmp").exists()
    # the loss CSV holds each step once, with the uninterrupted run's values
    straight = (tmp_path / "straight" / "loss.csv").read_text().splitlines()
    resumed = (out / "loss.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in resumed] == [r.split(",")[:3] for r in straight]


def test_resume_refuses_a_changed_recipe_but_not_a_longer_run(bags, tmp_path, caplog):
    common = ["--data", str(bags), "--no-progress", "--out", str(tmp_path / "run")]
    assert train_main(["--config", str(_recipe(tmp_path)), "--stop-after", "5"] + common) == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**RECIPE, "batch_size": 4, "lr": 0.5}))
    assert train_main(["--config", str(changed), "--resume"] + common) == 2
    assert "batch_size: 2 -> 4" in caplog.text and "lr: 0.0003 -> 0.5" in caplog.text
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["batch_size"] == 2  # not overwritten
    # The state is 1 step into the world phase (after 4 codec steps): that phase cannot end before it.
    shorter = tmp_path / "shorter.yaml"
    shorter.write_text(yaml.safe_dump({**RECIPE, "steps": 0}))
    assert train_main(["--config", str(shorter), "--resume"] + common) == 2
    assert "already run 1 world-model steps" in caplog.text
    longer = tmp_path / "longer.yaml"
    longer.write_text(yaml.safe_dump({**RECIPE, "steps": 8}))
    assert train_main(["--config", str(longer), "--resume"] + common) == 0
    assert json.loads((tmp_path / "run" / "train_state" / "state.json").read_text())["step"] == 12
    assert train_main(["--config", str(_recipe(tmp_path)), "--resume", "--data", str(bags), "--no-progress",
                       "--out", str(tmp_path / "never")]) == 2
    assert "no complete training state" in caplog.text
    # A state saved before a recipe field existed resumes, that field at its default then and now.
    state_json = tmp_path / "run" / "train_state" / "state.json"
    meta = json.loads(state_json.read_text())
    del meta["recipe"]["rollout_history_modalities"]
    state_json.write_text(json.dumps(meta))
    assert train_main(["--config", str(longer), "--resume"] + common) == 0
    for damaged in ("[]", '{"phase": "world"}', "{not json"):
        caplog.clear()
        state_json.write_text(damaged)
        assert train_main(["--config", str(longer), "--resume"] + common) == 2
        assert "state.json is damaged" in caplog.text and "Traceback" not in caplog.text


def test_a_diverging_run_stops_with_a_message_and_keeps_its_last_checkpoint(bags, tmp_path, caplog):
    recipe = _recipe(tmp_path, lr=1e4, codec_steps=0, steps=40, warmup_steps=0, checkpoint_every=1)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "nan"), "--no-progress"]) == 2
    assert "lower the learning rate" in caplog.text and "Traceback" not in caplog.text
    from astra_ros.model import WorldModel

    model = WorldModel.from_pretrained(tmp_path / "nan")  # loads: only finite weights were saved
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    caplog.clear()  # diverging before the first checkpoint: the message does not promise one
    recipe = _recipe(tmp_path, lr=1e4, codec_steps=0, steps=40, warmup_steps=0, checkpoint_every=100)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "early"), "--no-progress"]) == 2
    assert "no checkpoint was written" in caplog.text and "is intact" not in caplog.text


def test_action_statistics_are_measured_on_the_training_windows(bags, tmp_path):
    import numpy as np

    from astra_ros.data.clips import ClipDataset
    from astra_ros.model.moae import ACTION_STD_FLOOR

    recipe = _recipe(tmp_path, steps=2, codec_steps=0, measure_action_statistics=True)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    weights = _weights(tmp_path / "run")
    mean, std = weights["transformer.action_encoder.action_mean"], weights["transformer.action_encoder.action_std"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    dataset = ClipDataset(sorted(p for p in bags.iterdir()), None, RECIPE["clip_frames"], tuple(config["resolution"]), None)
    expected = dataset.actions_by_modality()
    names = list(config["modalities"])
    for name, values in expected.items():
        row, d = names.index(name), config["modalities"][name]
        values = values.reshape(-1, d)
        np.testing.assert_allclose(mean[row, :d].numpy(), values.mean(0), atol=1e-5)
        np.testing.assert_allclose(std[row, :d].numpy(), np.maximum(values.std(0), ACTION_STD_FLOOR), rtol=1e-4, atol=1e-6)
    assert std[names.index("keys")].eq(1).all()  # no keys data: identity


def test_twist_bags_also_train_the_keys_modality(bags, tmp_path):
    import numpy as np

    from astra_ros.data.bags import read_episode
    from astra_ros.data.bags import find_bags
    from astra_ros.training.trainer import training_episodes

    found = find_bags([bags])
    paths, modalities = training_episodes(found, twist_bags_as_keys=True)
    rover = [p for p in found if p.name.startswith("rover")]
    scenario_modality = {"explore": "camera", "arm": "robot", "rover": "twist"}
    expected = [(p, scenario_modality[p.name.split("_")[0]]) for p in found] + [(p, "keys") for p in rover]
    assert sorted(zip(paths, modalities)) == sorted(expected)
    assert training_episodes(found, twist_bags_as_keys=False)[1].count("keys") == 0

    recipe = _recipe(tmp_path, steps=2, codec_steps=0, measure_action_statistics=True, twist_bags_as_keys=True)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    weights = _weights(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    row = list(config["modalities"]).index("keys")
    # The keys statistics are those of the rover's commands as key presses (one-hot rows), not the identity.
    keys = read_episode(rover[0], "keys", tuple(config["resolution"])).actions
    assert np.allclose(keys.sum(1), 1.0) and len(np.unique(keys.argmax(1))) > 1
    mean = weights["transformer.action_encoder.action_mean"][row, :7].numpy()
    np.testing.assert_allclose(mean.sum(), 1.0, atol=1e-5)
    assert np.abs(mean - keys.mean(0)).max() < 0.2  # windows overlap, so near the episode's key frequencies


def test_bad_recipe_and_missing_data_fail_clearly(bags, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**RECIPE, "learning_rate": 1.0}))
    assert train_main(["--config", str(bad), "--data", str(bags), "--out", str(tmp_path / "x")]) == 2
    assert "unknown recipe keys ['learning_rate']" in caplog.text
    assert train_main(["--config", str(_recipe(tmp_path)), "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
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
        TrainRecipe.from_yaml(_recipe(tmp_path, **edit))


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


def test_training_device_follows_the_request_and_the_local_rank(bags, tmp_path, caplog):
    import torch

    from astra_ros.model import ConfigError
    from astra_ros.training.trainer import training_device

    assert training_device("auto", 0, cuda_available=False) == torch.device("cpu")
    assert training_device("auto", 1, cuda_available=True) == torch.device("cuda", 1)  # torchrun: a GPU per process
    assert training_device("cuda", 3, cuda_available=True) == torch.device("cuda", 3)
    assert training_device("cuda:2", 0, cuda_available=True) == torch.device("cuda", 2)
    assert training_device("cpu", 1, cuda_available=True) == torch.device("cpu")
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        training_device("cuda", 0, cuda_available=False)
    for bad in ("tpu", "meta"):
        with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
            training_device(bad, 0, cuda_available=True)
    if not torch.cuda.is_available():  # the command line says so too, before touching the data
        out = tmp_path / "gpu"
        assert train_main(["--config", str(_recipe(tmp_path)), "--data", str(bags), "--out", str(out),
                           "--device", "cuda", "--no-progress"]) == 2
        assert "no usable CUDA GPU" in caplog.text and not out.exists()


def test_bf16_precision_trains_on_the_same_batches_with_fp32_weights(bags, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        recipe = _recipe(tmp_path, steps=3, codec_steps=3, precision=precision)
        out = tmp_path / precision
        assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(out), "--no-progress"]) == 0
        rows = [line.split(",") for line in (out / "loss.csv").read_text().splitlines()[1:]]
        runs[precision] = ([float(r[2]) for r in rows], _weights(out / "train_state"))
    (loss32, w32), (loss16, w16) = runs["fp32"], runs["bf16"]
    # Same clips and noise, so the losses agree to bf16's precision, step for step ...
    assert len(loss16) == len(loss32) == 6
    for a, b in zip(loss32, loss16):
        assert b == pytest.approx(a, rel=0.01)
    # ... while the bf16 forward really ran (its updates differ), and the weights stay fp32.
    assert all(v.dtype == w32[k].dtype for k, v in w16.items())
    assert any((w16[k] - w32[k]).abs().max() > 0 for k in w32 if k.startswith("transformer."))
    with pytest.raises(Exception, match="precision must be 'fp32' or 'bf16'"):
        from astra_ros.training.recipe import TrainRecipe

        TrainRecipe.from_yaml(_recipe(tmp_path, precision="fp16"))


def test_bf16_run_refuses_to_start_when_the_bf16_forward_disagrees_with_fp32(bags, tmp_path, monkeypatch, caplog):
    # A backend whose bf16 kernels are wrong (as oneDNN's convolution was for 4x4 patches on AMX CPUs).
    from astra_ros.model.transformer import AstraTransformer

    honest = AstraTransformer.forward

    def broken_under_autocast(self, latents, *args, **kwargs):
        velocity, kv = honest(self, latents, *args, **kwargs)
        return (velocity.flip(-1) if torch.is_autocast_enabled("cpu") else velocity), kv

    monkeypatch.setattr(AstraTransformer, "forward", broken_under_autocast)
    recipe = _recipe(tmp_path, steps=3, codec_steps=0, precision="bf16")
    out = tmp_path / "broken"
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(out), "--no-progress"]) == 2
    assert "bf16 is unreliable" in caplog.text and "precision: fp32" in caplog.text
    assert not (out / "model.safetensors").exists()  # nothing trained on the broken kernels


def test_bf16_check_still_sees_the_body_when_the_output_head_is_zeroed(bags, tmp_path, monkeypatch, caplog):
    # reset_output_head makes the output exactly zero in both precisions: comparing outputs alone
    # would pass a broken kernel in the body (here the patch embedding, where oneDNN's bug was).
    caplog.set_level("INFO", logger="astra_train")
    from astra_ros.model.transformer import AstraTransformer

    honest = AstraTransformer._patchify

    def broken_under_autocast(self, latents):
        tokens = honest(self, latents)
        return tokens.flip(-1) if torch.is_autocast_enabled("cpu") else tokens

    monkeypatch.setattr(AstraTransformer, "_patchify", broken_under_autocast)
    recipe = _recipe(tmp_path, steps=3, codec_steps=0, precision="bf16", reset_output_head=True,
                     model={"latent_delta": True, "prediction": "x0"})
    out = tmp_path / "zeroed"
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(out), "--no-progress"]) == 2
    assert "bf16 is unreliable" in caplog.text
    monkeypatch.setattr(AstraTransformer, "_patchify", honest)
    caplog.clear()
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "ok"),
                       "--no-progress"]) == 0
    assert "forward pass within" in caplog.text and "within 0.00%" not in caplog.text  # it measured something


def test_modality_weights_set_how_often_each_modality_is_drawn(bags, tmp_path):
    from astra_ros.training.recipe import TrainRecipe
    from astra_ros.training.trainer import Trainer

    def shares(weights):
        trainer = Trainer(TrainRecipe(**RECIPE, modality_weights=weights), [bags], tmp_path / "run", progress=False)
        enc = trainer.model.transformer.action_encoder
        ids = torch.cat([trainer.sample_batch()[2] for _ in range(200)])  # 400 windows
        return {m: float((ids == enc.modality_index(m)).float().mean()) for m in ("camera", "robot", "twist")}

    uniform = shares({})  # one bag of each scenario, equally long: a third each
    assert all(abs(share - 1 / 3) < 0.08 for share in uniform.values()), uniform
    weighted = shares({"camera": 4.0, "robot": 0.0})  # camera 4 : twist 1, robot never
    assert weighted["robot"] == 0 and abs(weighted["camera"] - 0.8) < 0.08, weighted
    for bad, message in (({"lidar": 1.0}, "does not have"), ({"robot": -1.0}, "finite number >= 0"),
                         ({"robot": float("nan")}, "finite number >= 0")):
        with pytest.raises(Exception, match=message):
            TrainRecipe(**RECIPE, modality_weights=bad).validate()
    with pytest.raises(Exception, match="weight 0"):
        Trainer(TrainRecipe(**RECIPE, modality_weights={"camera": 0, "robot": 0, "twist": 0}), [bags],
                tmp_path / "run", progress=False)


def test_init_with_more_blocks_starts_as_the_checkpoint_and_trains_the_new_ones(bags, tmp_path, caplog):
    import numpy as np

    from astra_ros.data.bags import read_episode
    from astra_ros.model import WorldModel

    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    deeper = _recipe(tmp_path, steps=3, codec_steps=0, model={"num_layers": 4})  # tiny has 2 blocks
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
    weights = _weights(tmp_path / "deep" / "train_state")
    assert weights["transformer.blocks.3.ffn.net.2.weight"].abs().max() > 0
    # clip_frames is checked against the model --init brings, not only the preset's
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src3").mkdir()
    (tmp_path / "src3" / "config.json").write_text(json.dumps({**config, "chunk_frames": 4}))
    (tmp_path / "src3" / "model.safetensors").write_bytes((tmp_path / "src" / "model.safetensors").read_bytes())
    assert train_main(["--config", str(_recipe(tmp_path, codec_steps=0)), "--init", str(tmp_path / "src3"),
                       "--out", str(tmp_path / "chunks")] + common) == 2
    assert "clip_frames=6 must be a multiple of the model's frames_per_chunk=4" in caplog.text
    shallower = _recipe(tmp_path, steps=1, codec_steps=0, model={"num_layers": 1})
    assert train_main(["--config", str(shallower), "--init", str(tmp_path / "src"), "--out", str(tmp_path / "no")]
                      + common) == 2
    assert "can only grow" in caplog.text


def test_two_process_ddp_run_ends_with_identical_weights(bags, tmp_path):
    recipe = _recipe(tmp_path, steps=4, codec_steps=2)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "astra_ros.cli.train", "--config", str(recipe), "--data", str(bags), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = json.loads((out / "ranks.json").read_text())["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # and training moved the weights away from the (seeded, identical) initialisation
    init = tmp_path / "init"
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(init), "--stop-after", "0",
                       "--no-progress"]) == 0
    start, end = _weights(init / "train_state"), _weights(out / "train_state")
    assert any((start[k] - end[k]).abs().max() > 0 for k in start if k.startswith("transformer."))
    assert any((start[k] - end[k]).abs().max() > 0 for k in start if k.startswith("codec."))


def test_two_process_ddp_resume_continues_exactly(bags, tmp_path, caplog):
    """Each rank resumes its own random generators (rank 0's on every rank used to make both ranks
    draw the same clips after a resume), and a state cannot resume with another process count."""
    recipe = _recipe(tmp_path, steps=4, codec_steps=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}

    def ddp(out: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "astra_ros.cli.train", "--config", str(recipe), "--data", str(bags), "--out", str(out),
               "--no-progress", *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    ddp(tmp_path / "straight")
    ddp(tmp_path / "resumed", "--stop-after", "4")
    ddp(tmp_path / "resumed", "--resume")
    a, b = _weights(tmp_path / "straight" / "train_state"), _weights(tmp_path / "resumed" / "train_state")
    assert all((a[k] == b[k]).all() for k in a), [k for k in a if not (a[k] == b[k]).all()][:5]
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "resumed"),
                       "--resume", "--no-progress"]) == 2  # one process, a state of two
    assert "saved by 2 process(es), this run has 1" in caplog.text


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


def test_init_codec_takes_only_the_codec(bags, tmp_path, caplog):
    recipe = _recipe(tmp_path, steps=2, codec_steps=3)
    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(recipe), "--out", str(tmp_path / "source")] + common) == 0
    frozen = _recipe(tmp_path, steps=2, codec_steps=0, seed=5)  # another seed: another transformer init
    assert train_main(["--config", str(frozen), "--init-codec", str(tmp_path / "source"),
                       "--out", str(tmp_path / "ablation")] + common) == 0
    source, ablation = _weights(tmp_path / "source"), _weights(tmp_path / "ablation")
    for k in source:
        if k.startswith("codec."):  # the codec (weights and latent statistics) is carried over unchanged
            assert (source[k] == ablation[k]).all(), k
    assert any((source[k] - ablation[k]).abs().max() > 0 for k in source if k.startswith("transformer."))
    wider = _recipe(tmp_path, steps=2, codec_steps=0, model={"codec": {"latent_channels": 8}})
    assert train_main(["--config", str(wider), "--init-codec", str(tmp_path / "source"),
                       "--out", str(tmp_path / "bad")] + common) == 2
    assert "differs from the recipe's" in caplog.text


def test_init_codec_brings_the_anchor_decoder_of_the_same_width(bags, tmp_path, caplog):
    caplog.set_level("INFO", logger="astra_train")
    common = ["--data", str(bags), "--no-progress"]
    anchored = {"residual_decoding": True, "anchor_decoder_width": 8}
    assert train_main(["--config", str(_recipe(tmp_path, steps=1, codec_steps=1, model={"residual_decoding": True})),
                       "--out", str(tmp_path / "plain")] + common) == 0
    assert train_main(["--config", str(_recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=2, decoder_clips=1,
                                               decoder_context_frames=2, model=anchored)),
                       "--init", str(tmp_path / "plain"), "--out", str(tmp_path / "src")] + common) == 0
    ablation = _recipe(tmp_path, steps=1, codec_steps=0, seed=5, model=anchored)
    assert train_main(["--config", str(ablation), "--init-codec", str(tmp_path / "src"),
                       "--out", str(tmp_path / "ablation")] + common) == 0
    source, taken = _weights(tmp_path / "src"), _weights(tmp_path / "ablation")
    decoder = [k for k in source if k.startswith("anchor_decoder.")]
    assert decoder and all((source[k] == taken[k]).all() for k in decoder)
    # The source's decoder had trained away from its zero heads, so the copy is not the fresh start.
    assert (source["anchor_decoder.coarse_flow.weight"] != 0).any()
    # A recipe with a decoder of another width, or a source without one: the decoder starts untrained.
    wider = _recipe(tmp_path, steps=1, codec_steps=0, model={"residual_decoding": True, "anchor_decoder_width": 16})
    assert train_main(["--config", str(wider), "--init-codec", str(tmp_path / "src"),
                       "--out", str(tmp_path / "wider")] + common) == 0
    assert "starts untrained" in caplog.text
    assert not _weights(tmp_path / "wider")["anchor_decoder.coarse_flow.weight"].any()


def test_init_transformer_takes_every_tensor_whose_shape_still_fits(bags, tmp_path, caplog):
    caplog.set_level("INFO", logger="astra_train")
    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    # Another patch size: the patch embedding and the output projection change shape, the blocks do not.
    recipe = _recipe(tmp_path, steps=2, codec_steps=0, seed=5, model={"patch_size": [1, 1, 1]})
    assert train_main(["--config", str(recipe), "--init-transformer", str(tmp_path / "src"), "--stop-after", "0",
                       "--out", str(tmp_path / "warm")] + common) == 0
    src, warm = _weights(tmp_path / "src"), _weights(tmp_path / "warm" / "train_state")
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
    assert train_main(["--config", str(_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    recipe = _recipe(tmp_path, steps=2, codec_steps=0, reset_output_head=True,
                     model={"latent_delta": True, "prediction": "x0", "residual_decoding": True})
    assert train_main(["--config", str(recipe), "--init", str(tmp_path / "src"), "--stop-after", "0",
                       "--out", str(tmp_path / "x0")] + common) == 0
    state = _weights(tmp_path / "x0" / "train_state")
    assert state["transformer.proj_out.weight"].abs().max() == 0 and state["transformer.proj_out.bias"].abs().max() == 0
    src = _weights(tmp_path / "src")
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

        TrainRecipe.from_yaml(_recipe(tmp_path, model={"prediction": "epsilon"}))


def test_decoder_phase_trains_only_the_anchor_decoder_and_resumes_exactly(bags, tmp_path, caplog, monkeypatch):
    from astra_ros.model import WorldModel

    common = ["--data", str(bags), "--no-progress"]
    src = tmp_path / "src"
    assert train_main(["--config", str(_recipe(tmp_path, steps=3, codec_steps=2, model={"residual_decoding": True})),
                       "--out", str(src)] + common) == 0
    recipe = _recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=6, decoder_clips=2, decoder_context_frames=2,
                     decoder_horizon_frames=4, decoder_predicted_share=0.5, checkpoint_every=3,
                     model={"residual_decoding": True, "anchor_decoder_width": 8})
    run = ["--config", str(recipe), "--init", str(src)] + common
    assert train_main(run + ["--out", str(tmp_path / "straight")]) == 0
    before, after = _weights(src), _weights(tmp_path / "straight")
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
    a, b = _weights(tmp_path / "straight" / "train_state"), _weights(out / "train_state")
    assert all((a[k] == b[k]).all() for k in a)
    # Like steps, the decoder phase may be made longer on resume.
    longer_run = _recipe(tmp_path, **{**yaml.safe_load(recipe.read_text()), "decoder_steps": 8})
    assert train_main(["--config", str(longer_run), "--out", str(out), "--resume"] + common) == 0
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 8
    # But in the decoder phase the world phase before it is fixed (a new steps would move the boundary
    # and count decoder steps as world steps), and the decoder cannot end before the steps it ran.
    resumed_with = yaml.safe_load(longer_run.read_text())  # _recipe rewrites the same file
    for change, message in (({"steps": 2}, "can no longer change"), ({"decoder_steps": 5}, "already run 8 decoder")):
        changed = _recipe(tmp_path, **{**resumed_with, **change})
        assert train_main(["--config", str(changed), "--out", str(out), "--resume"] + common) == 2
        assert message in caplog.text
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == 8  # left as it was
    # Longer windows than the world phase's clips get a dataset of their own; on real latents only
    # (the default share 0) the world model is never rolled out.
    def no_rollouts(*args, **kwargs):
        raise AssertionError("rolled out although every frame gets its real latents")

    monkeypatch.setattr(WorldModel, "roll_out_latents", no_rollouts)
    longer = _recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=1, decoder_clips=1, decoder_context_frames=4,
                     decoder_horizon_frames=6,
                     model={"residual_decoding": True, "anchor_decoder_width": 8})
    assert train_main(["--config", str(longer), "--init", str(src), "--out", str(tmp_path / "longer")] + common) == 0
    # A model without an anchor decoder is refused by name, before any step.
    plain = _recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=2)
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


def test_rotation_reference_fine_tune_starts_at_the_turned_view_and_trains_both_phases(bags, tmp_path, caplog):
    """A zeroed head with ``rotation_reference`` predicts the newest frame turned by the commanded
    rotation; the world and decoder phases train on such references (every modality in one batch);
    rolled-out decoder inputs, which have no pixels to turn, are refused before any step."""
    import numpy as np

    from astra_ros.data.bags import read_episode
    from astra_ros.model import WorldModel
    from astra_ros.model.view_rotation import chain_rotations

    common = ["--data", str(bags), "--no-progress"]
    assert train_main(["--config", str(_recipe(tmp_path, steps=2, codec_steps=2)), "--out", str(tmp_path / "src")]
                      + common) == 0
    model_fields = {"latent_delta": True, "prediction": "x0", "residual_decoding": True, "rotation_reference": True}
    recipe = _recipe(tmp_path, steps=2, codec_steps=0, reset_output_head=True, model=model_fields)
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

    both = _recipe(tmp_path, steps=2, codec_steps=0, reset_output_head=True, decoder_steps=2, decoder_clips=2,
                   decoder_context_frames=2, decoder_horizon_frames=4,
                   model={**model_fields, "anchor_decoder_width": 8})
    assert train_main(["--config", str(both), "--init", str(tmp_path / "src"), "--out", str(tmp_path / "both")]
                      + common) == 0
    rows = [line.split(",") for line in (tmp_path / "both" / "loss.csv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["world"] * 2 + ["decoder"] * 2
    assert all(np.isfinite(float(r[2])) and float(r[2]) > 0 for r in rows)
    rolled = _recipe(tmp_path, steps=0, codec_steps=0, decoder_steps=2, decoder_clips=2, decoder_context_frames=2,
                     decoder_horizon_frames=4, decoder_predicted_share=0.5,
                     model={**model_fields, "anchor_decoder_width": 8})
    assert train_main(["--config", str(rolled), "--init", str(tmp_path / "src"), "--out", str(tmp_path / "rolled")]
                      + common) == 2
    assert "decoder_predicted_share" in caplog.text


def test_a_corrupt_bag_among_good_ones_is_named_before_anything_is_written(bags, tmp_path, caplog):
    broken = tmp_path / "broken" / "rover_s9"
    shutil.copytree(next(bags.glob("rover_*")), broken)
    for mcap in broken.glob("*.mcap"):
        mcap.write_bytes(mcap.read_bytes()[:200])  # cut short: the copy cannot be read
    out = tmp_path / "run"
    assert train_main(["--config", str(_recipe(tmp_path)), "--out", str(out), "--no-progress",
                       "--data", str(bags), str(broken.parent)]) == 2
    assert f"cannot open bag {broken}" in caplog.text
    assert not out.exists()  # no half-made run directory to mistake for a result


def test_arm_maps_train_from_zero_and_their_dropout_withholds_them(bags, tmp_path):
    """With ``arm_map_cells`` the end-effector map projector starts at zero and learns from the arm bag, faster
    with ``arm_map_lr_multiple``; with ``arm_map_dropout: 1`` no map reaches the loss, so it stays exactly zero."""
    common = ["--data", str(bags), "--no-progress"]
    weights = {}
    for dropout, multiple in ((0.0, 1.0), (0.0, 10.0), (1.0, 1.0)):
        out = tmp_path / f"maps_{dropout}_{multiple}"
        recipe = _recipe(tmp_path, steps=6, codec_steps=0, modality_weights={"robot": 50.0},
                         model={"arm_map_cells": 2}, arm_map_dropout=dropout, arm_map_lr_multiple=multiple)
        assert train_main(["--config", str(recipe), "--out", str(out)] + common) == 0
        weights[dropout, multiple] = _weights(out / "train_state")["transformer.arm_map.weight"]
    assert weights[0.0, 1.0].abs().max() > 1e-5
    assert weights[0.0, 10.0].abs().max() > 3 * weights[0.0, 1.0].abs().max()
    assert weights[1.0, 1.0].abs().max() == 0


def test_ctrl_c_saves_the_step_it_reached_and_resume_goes_on_from_it(bags, tmp_path):
    """SIGINT printed a traceback and lost every step since the last checkpoint; now the running step
    finishes, the state is saved at it, and --resume continues from there."""
    import re
    import signal
    import time

    recipe = _recipe(tmp_path, steps=100000, codec_steps=0, checkpoint_every=100000)
    out = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "astra-train"), "--config", str(recipe), "--data", str(bags),
               "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a few logged steps, none of them checkpointed
        if (out / "loss.csv").is_file() and len((out / "loss.csv").read_text().splitlines()) > 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    stopped = re.search(r"stopped at step (\d+) on Ctrl-C; saved in (\S+), continue with --resume", output)
    assert stopped, output
    step = int(stopped.group(1))
    assert step >= 3 and json.loads((out / "train_state" / "state.json").read_text())["step"] == step
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(out), "--no-progress", "--resume",
                       "--stop-after", str(step + 1)]) == 0
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == step + 1


def test_an_interrupt_before_the_first_step_or_a_second_ctrl_c_is_reported_not_a_traceback(bags, tmp_path, monkeypatch,
                                                                                             caplog):
    from astra_ros.training.trainer import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run", interrupted)
    argv = ["--config", str(_recipe(tmp_path)), "--data", str(bags), "--out", str(tmp_path / "run"), "--no-progress"]
    assert train_main(argv) == 130
    assert "astra-train: interrupted; no step was saved" in caplog.text
