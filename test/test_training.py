"""astra-train: the loop learns, resumes exactly, survives crashes and interrupts, runs under torchrun (DDP, gloo)
in step."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from astra_ros.cli.train import main as train_main

import training_support
from training_support import RECIPE, run_weights, write_recipe

bags = training_support.bags  # a module's own few short simulator bags (fixture)


def test_training_writes_checkpoint_curves_and_learns(bags, tmp_path):
    recipe = write_recipe(tmp_path, steps=40, codec_steps=30, checkpoint_every=100)
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
    raw, ema = run_weights(run / "train_state"), run_weights(run)
    assert any((raw[k] - ema[k]).abs().max() > 0 for k in raw if k.startswith("transformer."))


def test_resume_continues_exactly(bags, tmp_path):
    recipe = write_recipe(tmp_path)
    common = ["--config", str(recipe), "--data", str(bags), "--no-progress"]
    assert train_main(common + ["--out", str(tmp_path / "straight")]) == 0
    for stop in (2, 5):  # inside the codec phase, and inside the world phase
        out = tmp_path / f"resumed{stop}"
        assert train_main(common + ["--out", str(out), "--stop-after", str(stop)]) == 0
        assert train_main(common + ["--out", str(out), "--resume"]) == 0
        a, b = run_weights(tmp_path / "straight" / "train_state"), run_weights(out / "train_state")
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k]).all(), f"{k} differs after resuming at step {stop}"


def test_a_finished_run_is_not_overwritten_and_resume_needs_the_same_bags(bags, tmp_path, caplog):
    common = ["--config", str(write_recipe(tmp_path, steps=2, codec_steps=0)), "--no-progress"]
    out = tmp_path / "run"
    assert train_main(common + ["--data", str(bags), "--out", str(out)]) == 0
    before = (out / "loss.csv").read_text(), run_weights(out)
    assert train_main(common + ["--data", str(bags), "--out", str(out), "--stop-after", "1"]) == 2
    assert "already holds a training run (state at step 2)" in caplog.text and "--resume" in caplog.text
    assert (out / "loss.csv").read_text() == before[0]
    assert all((before[1][k] == v).all() for k, v in run_weights(out).items())
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

    recipe = write_recipe(tmp_path)
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
    a, b = run_weights(tmp_path / "straight" / "train_state"), run_weights(out / "train_state")
    assert all((a[k] == b[k]).all() for k in a)
    assert not (out / "train_state.old").exists() and not (out / "train_state.tmp").exists()
    # the loss CSV holds each step once, with the uninterrupted run's values
    straight = (tmp_path / "straight" / "loss.csv").read_text().splitlines()
    resumed = (out / "loss.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in resumed] == [r.split(",")[:3] for r in straight]


def test_resume_refuses_a_changed_recipe_but_not_a_longer_run(bags, tmp_path, caplog):
    common = ["--data", str(bags), "--no-progress", "--out", str(tmp_path / "run")]
    assert train_main(["--config", str(write_recipe(tmp_path)), "--stop-after", "5"] + common) == 0
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
    assert train_main(["--config", str(write_recipe(tmp_path)), "--resume", "--data", str(bags), "--no-progress",
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
    recipe = write_recipe(tmp_path, lr=1e4, codec_steps=0, steps=40, warmup_steps=0, checkpoint_every=1)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "nan"), "--no-progress"]) == 2
    assert "lower the learning rate" in caplog.text and "Traceback" not in caplog.text
    from astra_ros.model import WorldModel

    model = WorldModel.from_pretrained(tmp_path / "nan")  # loads: only finite weights were saved
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    caplog.clear()  # diverging before the first checkpoint: the message does not promise one
    recipe = write_recipe(tmp_path, lr=1e4, codec_steps=0, steps=40, warmup_steps=0, checkpoint_every=100)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "early"), "--no-progress"]) == 2
    assert "no checkpoint was written" in caplog.text and "is intact" not in caplog.text


def test_action_statistics_are_measured_on_the_training_windows(bags, tmp_path):
    import numpy as np

    from astra_ros.data.clips import ClipDataset
    from astra_ros.model.moae import ACTION_STD_FLOOR

    recipe = write_recipe(tmp_path, steps=2, codec_steps=0, measure_action_statistics=True)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    weights = run_weights(tmp_path / "run")
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

    recipe = write_recipe(tmp_path, steps=2, codec_steps=0, measure_action_statistics=True, twist_bags_as_keys=True)
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    weights = run_weights(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    row = list(config["modalities"]).index("keys")
    # The keys statistics are those of the rover's commands as key presses (one-hot rows), not the identity.
    keys = read_episode(rover[0], "keys", tuple(config["resolution"])).actions
    assert np.allclose(keys.sum(1), 1.0) and len(np.unique(keys.argmax(1))) > 1
    mean = weights["transformer.action_encoder.action_mean"][row, :7].numpy()
    np.testing.assert_allclose(mean.sum(), 1.0, atol=1e-5)
    assert np.abs(mean - keys.mean(0)).max() < 0.2  # windows overlap, so near the episode's key frequencies


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
        assert train_main(["--config", str(write_recipe(tmp_path)), "--data", str(bags), "--out", str(out),
                           "--device", "cuda", "--no-progress"]) == 2
        assert "no usable CUDA GPU" in caplog.text and not out.exists()


def test_bf16_precision_trains_on_the_same_batches_with_fp32run_weights(bags, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        recipe = write_recipe(tmp_path, steps=3, codec_steps=3, precision=precision)
        out = tmp_path / precision
        assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(out), "--no-progress"]) == 0
        rows = [line.split(",") for line in (out / "loss.csv").read_text().splitlines()[1:]]
        runs[precision] = ([float(r[2]) for r in rows], run_weights(out / "train_state"))
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

        TrainRecipe.from_yaml(write_recipe(tmp_path, precision="fp16"))


def test_bf16_run_refuses_to_start_when_the_bf16_forward_disagrees_with_fp32(bags, tmp_path, monkeypatch, caplog):
    # A backend whose bf16 kernels are wrong (as oneDNN's convolution was for 4x4 patches on AMX CPUs).
    from astra_ros.model.transformer import AstraTransformer

    honest = AstraTransformer.forward

    def broken_under_autocast(self, latents, *args, **kwargs):
        velocity, kv = honest(self, latents, *args, **kwargs)
        return (velocity.flip(-1) if torch.is_autocast_enabled("cpu") else velocity), kv

    monkeypatch.setattr(AstraTransformer, "forward", broken_under_autocast)
    recipe = write_recipe(tmp_path, steps=3, codec_steps=0, precision="bf16")
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
    recipe = write_recipe(tmp_path, steps=3, codec_steps=0, precision="bf16", reset_output_head=True,
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


def test_two_process_ddp_run_ends_with_identicalrun_weights(bags, tmp_path):
    recipe = write_recipe(tmp_path, steps=4, codec_steps=2)
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
    start, end = run_weights(init / "train_state"), run_weights(out / "train_state")
    assert any((start[k] - end[k]).abs().max() > 0 for k in start if k.startswith("transformer."))
    assert any((start[k] - end[k]).abs().max() > 0 for k in start if k.startswith("codec."))


def test_two_process_ddp_resume_continues_exactly(bags, tmp_path, caplog):
    """Each rank resumes its own random generators (rank 0's on every rank used to make both ranks
    draw the same clips after a resume), and a state cannot resume with another process count."""
    recipe = write_recipe(tmp_path, steps=4, codec_steps=2)
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
    a, b = run_weights(tmp_path / "straight" / "train_state"), run_weights(tmp_path / "resumed" / "train_state")
    assert all((a[k] == b[k]).all() for k in a), [k for k in a if not (a[k] == b[k]).all()][:5]
    assert train_main(["--config", str(recipe), "--data", str(bags), "--out", str(tmp_path / "resumed"),
                       "--resume", "--no-progress"]) == 2  # one process, a state of two
    assert "saved by 2 process(es), this run has 1" in caplog.text


def test_a_corrupt_bag_among_good_ones_is_named_before_anything_is_written(bags, tmp_path, caplog):
    broken = tmp_path / "broken" / "rover_s9"
    shutil.copytree(next(bags.glob("rover_*")), broken)
    for mcap in broken.glob("*.mcap"):
        mcap.write_bytes(mcap.read_bytes()[:200])  # cut short: the copy cannot be read
    out = tmp_path / "run"
    assert train_main(["--config", str(write_recipe(tmp_path)), "--out", str(out), "--no-progress",
                       "--data", str(bags), str(broken.parent)]) == 2
    assert f"cannot open bag {broken}" in caplog.text
    assert not out.exists()  # no half-made run directory to mistake for a result


def test_ctrl_c_saves_the_step_it_reached_and_resume_goes_on_from_it(bags, tmp_path):
    """SIGINT printed a traceback and lost every step since the last checkpoint; now the running step
    finishes, the state is saved at it, and --resume continues from there."""
    import re
    import signal
    import time

    recipe = write_recipe(tmp_path, steps=100000, codec_steps=0, checkpoint_every=100000)
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
    argv = ["--config", str(write_recipe(tmp_path)), "--data", str(bags), "--out", str(tmp_path / "run"), "--no-progress"]
    assert train_main(argv) == 130
    assert "astra-train: interrupted; no step was saved" in caplog.text
    # A Ctrl-C during the state swap leaves only train_state.old: the state is there, say so.
    (tmp_path / "run" / "train_state.old").mkdir(parents=True)
    (tmp_path / "run" / "train_state.old" / "state.json").write_text(json.dumps({"step": 3, "phase": "world"}))
    caplog.clear()
    assert train_main(argv + ["--resume"]) == 130
    assert "the last checkpoint in" in caplog.text and "no step was saved" not in caplog.text


def test_a_kill_during_the_swap_after_a_resume_from_the_old_state_keeps_it(tmp_path, monkeypatch):
    """Resumed from train_state.old (a kill between the swap's renames), the next save deleted .old
    before the new state was in place: a second kill there left only train_state.tmp, and no state."""
    from astra_ros.training.state import read_state_meta, save_train_state

    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    generators = [(torch.Generator().get_state(), {"bit_generator": "PCG64"})]
    path = tmp_path / "train_state"
    save_train_state(path, model=model, ema=ema, optimizer=optimizer, step=1, phase="world", generators=generators)
    path.rename(tmp_path / "train_state.old")  # the first kill
    real_rename = Path.rename

    def killed_before_the_new_state_is_in_place(self, target):
        if self.name == "train_state.tmp":
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_before_the_new_state_is_in_place)
    with pytest.raises(KeyboardInterrupt):
        save_train_state(path, model=model, ema=ema, optimizer=optimizer, step=2, phase="world", generators=generators)
    monkeypatch.setattr(Path, "rename", real_rename)
    assert read_state_meta(path)["step"] == 1  # the old state is still there to resume from
    save_train_state(path, model=model, ema=ema, optimizer=optimizer, step=2, phase="world", generators=generators)
    assert read_state_meta(path)["step"] == 2 and not (tmp_path / "train_state.old").exists()


def test_a_longer_resumed_cosine_run_says_how_its_rate_jumps(bags, tmp_path, caplog):
    """Changing steps on resume is allowed, but a cosine schedule is stretched over the new length: the
    rate jumped from 0.55 to 0.91 of its peak with no word (the probe's comment called it a restart)."""
    cosine = {**RECIPE, "lr_decay": "cosine"}
    first, longer = tmp_path / "first.yaml", tmp_path / "longer.yaml"
    first.write_text(yaml.safe_dump(cosine))
    longer.write_text(yaml.safe_dump({**cosine, "steps": 12}))
    common = ["--data", str(bags), "--no-progress", "--out", str(tmp_path / "run")]
    assert train_main(["--config", str(first), "--stop-after", "8"] + common) == 0  # 4 codec + 4 of 6 world steps
    assert train_main(["--config", str(longer), "--resume", "--stop-after", "9"] + common) == 0
    assert "steps 6 -> 12: the schedule stretches over the new length, so the rate at step 8 goes from 0.55 to 0.91" \
        in caplog.text
