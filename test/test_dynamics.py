"""Known-answer tests for astra_ros.eval.dynamics and astra_ros.eval.frames (issue 37's metrics)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from astra_ros.eval.dynamics import (ClipErrors, bootstrap_gain, changed_mask, clip_errors, dynamics_summary,
                                     pooled_psnr)
from astra_ros.eval.frames import load_clip_frames, save_clip_frames, scenario_of
from astra_ros.eval.metrics import psnr, wilson_interval
from repo_scripts import load_script



def _hand_clip():
    """2x2 frames: the real future changes one pixel by 20 (and another by 5, under the threshold) in its
    first frame and stands still in the second; the model misses the first change by 10 and adds 4 elsewhere."""
    last = np.full((2, 2, 3), 100, np.uint8)
    real = np.stack([last, last]).copy()
    real[0, 0, 0, 0] = 120
    real[0, 0, 1, 1] = 105
    model = real.copy()
    model[0, 0, 0, 0] = 110
    model[0, 1, 1, :] = 104
    model[1] = last
    return last, real, model


def test_changed_pixels_are_those_some_channel_of_which_moved_more_than_the_threshold():
    last, real, _ = _hand_clip()
    mask = changed_mask(last, real)
    assert mask.shape == (2, 2, 2)
    assert mask[0].tolist() == [[True, False], [False, False]] and not mask[1].any()
    assert changed_mask(last, real, threshold=4)[0, 0, 1]  # a change of 5 counts above 4
    assert not changed_mask(last, real, threshold=20)[0, 0, 0]  # strictly more than the threshold
    with pytest.raises(ValueError, match="differ in size"):
        changed_mask(last[:1], real)


def test_clip_errors_and_pooled_psnr_known_answer():
    last, real, model = _hand_clip()
    errors = clip_errors(last, real, model, scenario="arm")
    np.testing.assert_allclose(errors.model_se, [10**2 + 3 * 4**2, 0])
    np.testing.assert_allclose(errors.copy_se, [20**2 + 5**2, 0])
    np.testing.assert_allclose(errors.count, [12, 12])
    # Only pixel (0, 0) of frame 0 changed: its three channels, where the model is off by 10 in one.
    np.testing.assert_allclose(errors.changed_count, [3, 0])
    np.testing.assert_allclose(errors.changed_model_se, [100, 0])
    np.testing.assert_allclose(errors.changed_copy_se, [400, 0])
    assert errors.shuffled_se is None and math.isnan(errors.mse_shuffled)
    assert errors.mse_model == pytest.approx((148 / 12 + 0) / 2)
    model_db = pooled_psnr(errors.model_se, errors.count)
    copy_db = pooled_psnr(errors.copy_se, errors.count)
    assert model_db == pytest.approx(10 * math.log10(255**2 * 24 / 148))
    assert copy_db == pytest.approx(10 * math.log10(255**2 * 24 / 425))
    changed_gain = (pooled_psnr(errors.changed_model_se, errors.changed_count)
                    - pooled_psnr(errors.changed_copy_se, errors.changed_count))
    assert changed_gain == pytest.approx(10 * math.log10(4))  # error 10 against 20 on the changed pixel
    # The mean of per-frame PSNR gives copy-last the 100 dB cap on the still frame, which decides it.
    copy = np.stack([last, last])
    assert psnr(copy, real).mean() > 60 > copy_db
    assert pooled_psnr(0.0, 12) == math.inf and math.isnan(pooled_psnr(0.0, 0))


def test_shuffled_frames_are_scored_and_bad_shapes_refused():
    last, real, model = _hand_clip()
    shuffled = np.full_like(real, 90)
    errors = clip_errors(last, real, model, shuffled)
    np.testing.assert_allclose(errors.shuffled_se, ((90 - real.astype(float)) ** 2).sum(axis=(1, 2, 3)))
    assert clip_errors(last, real, model, np.zeros((0, 2, 2, 3), np.uint8)).shuffled_se is None  # none saved
    with pytest.raises(ValueError, match="differ in shape"):
        clip_errors(last, real, model[:1])
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        clip_errors(last, real[0], model)


def test_the_codec_ceiling_is_pooled_beside_the_model_without_moving_its_intervals():
    last, real, model = _hand_clip()
    ceiling = real.copy()
    ceiling[0, 0, 0, 0] = 115  # misses the changed pixel by 5
    ceiling[1, 1, 0, 2] = 102  # and a still one by 2
    errors = clip_errors(last, real, model, scenario="arm", ceiling=ceiling)
    np.testing.assert_allclose(errors.ceiling_se, [25, 4])
    np.testing.assert_allclose(errors.changed_ceiling_se, [25, 0])
    with pytest.raises(ValueError, match="ceiling frames"):
        clip_errors(last, real, model, ceiling=ceiling[:1])
    other = clip_errors(last, real, np.full_like(real, 99), scenario="arm", ceiling=real)
    summary = dynamics_summary([errors, other], 0.5, resamples=100)
    pooled, changed = summary["overall"]["pooled_psnr"], summary["overall"]["changed_psnr"]
    # Pooled over both clips: (25 + 4) + 0 against copy-last's 425 + 425, over 48 values.
    assert pooled["codec_ceiling"] == pytest.approx(10 * math.log10(255**2 * 48 / 29))
    assert pooled["ceiling_gain"] == pytest.approx(10 * math.log10(850 / 29))
    assert changed["ceiling_gain"] == pytest.approx(10 * math.log10(800 / 25))  # 6 changed values
    assert summary["per_scenario"]["arm"]["pooled_psnr"]["ceiling_gain"] == pytest.approx(pooled["ceiling_gain"])
    # The ceiling draws nothing from the bootstrap: the intervals are those of the same clips without it.
    plain = dynamics_summary([clip_errors(last, real, model, scenario="arm"),
                              clip_errors(last, real, np.full_like(real, 99), scenario="arm")], 0.5, resamples=100)
    assert plain["overall"]["pooled_psnr"]["gain_ci95"] == pooled["gain_ci95"]
    assert "codec_ceiling" not in plain["overall"]["pooled_psnr"]


def test_bootstrap_interval_is_seeded_and_collapses_on_identical_clips():
    rng = np.random.default_rng
    same = bootstrap_gain(np.full(5, 10.0), np.full(5, 40.0), np.full(5, 12.0), rng(0), resamples=200)
    assert same["gain"] == pytest.approx(10 * math.log10(4))
    assert same["gain_ci95"] == pytest.approx([same["gain"]] * 2)
    model_se = np.array([5.0, 10.0, 20.0, 40.0, 80.0, 1.0])
    copy_se = np.array([40.0, 30.0, 25.0, 40.0, 60.0, 30.0])
    count = np.full(6, 12.0)
    first = bootstrap_gain(model_se, copy_se, count, rng(3), resamples=300)
    assert first == bootstrap_gain(model_se, copy_se, count, rng(3), resamples=300)  # same seed, same interval
    lo, hi = first["gain_ci95"]
    assert lo < first["gain"] < hi
    # The pooled gain is of the sums, not a mean of per-clip gains.
    assert first["gain"] == pytest.approx(10 * math.log10(copy_se.sum() / model_se.sum()))
    # By hand: the percentile interval of the gains of the same resamples.
    draw = rng(3).integers(0, 6, size=(300, 6))
    gains = 10 * np.log10(copy_se[draw].sum(1) / model_se[draw].sum(1))
    assert [lo, hi] == pytest.approx([np.percentile(gains, 2.5), np.percentile(gains, 97.5)])
    assert bootstrap_gain(model_se[:1], copy_se[:1], count[:1], rng(0))["gain_ci95"] is None  # one clip


def _errors(scenario: str, model_db: np.ndarray, copy_db: float = 20.0, mse_shuffled: float | None = None):
    """A clip whose frame h has PSNR model_db[h] and copy-last copy_db (one 'pixel' per frame)."""
    n = len(model_db)
    to_se = lambda db: 255.0**2 / 10 ** (np.asarray(db, float) / 10)  # noqa: E731
    errors = ClipErrors(scenario, to_se(model_db), to_se(np.full(n, copy_db)), np.ones(n),
                        to_se(model_db), to_se(np.full(n, copy_db)), np.ones(n))
    if mse_shuffled is not None:
        errors.shuffled_se = np.full(n, mse_shuffled)
    return errors


def test_per_second_gains_of_a_four_second_horizon():
    seconds = np.repeat([1.0, 2.0, 3.0, -1.0], 10)  # 40 frames at 0.1 s: the model gains k dB in second k, then loses
    clips = [_errors("rover", 20 + seconds) for _ in range(3)]
    summary = dynamics_summary(clips, 0.1, resamples=100)
    per_second = summary["overall"]["per_second"]
    assert [s["second"] for s in per_second] == [1, 2, 3, 4] and all(s["frames"] == 10 for s in per_second)
    assert [s["pooled_psnr"]["gain"] for s in per_second] == pytest.approx([1, 2, 3, -1])
    assert [s["changed_psnr"]["gain"] for s in per_second] == pytest.approx([1, 2, 3, -1])
    assert summary["per_scenario"]["rover"]["per_second"][3]["pooled_psnr"]["gain"] == pytest.approx(-1)
    # A 1 s horizon has one second, and its gain is the whole horizon's.
    one = dynamics_summary([_errors("arm", np.full(10, 22.0)), _errors("arm", np.full(10, 23.0))], 0.1)
    assert len(one["overall"]["per_second"]) == 1
    assert one["overall"]["per_second"][0]["pooled_psnr"]["gain"] == pytest.approx(
        one["overall"]["pooled_psnr"]["gain"])


def test_a_scenarios_interval_does_not_depend_on_the_other_scenarios_in_the_set():
    """One generator threaded through the groups gave `rover` other intervals than `all` on the same clips,
    and moved them when `arm` clips joined the set."""
    rng = np.random.default_rng(5)
    rover = [_errors("rover", 20 + rng.normal(2, 1.5, 20)) for _ in range(7)]
    arm = [_errors("arm", 20 + rng.normal(1, 1.0, 20)) for _ in range(5)]
    alone = dynamics_summary(rover, 0.1, resamples=200)
    assert alone["per_scenario"]["rover"]["pooled_psnr"]["gain_ci95"] == alone["overall"]["pooled_psnr"]["gain_ci95"]
    assert alone["per_scenario"]["rover"]["per_second"] == alone["overall"]["per_second"]
    mixed = dynamics_summary(rover + arm, 0.1, resamples=200)
    assert mixed["per_scenario"]["rover"] == alone["per_scenario"]["rover"]
    assert mixed["overall"]["pooled_psnr"]["gain_ci95"] != alone["overall"]["pooled_psnr"]["gain_ci95"]


def test_sensitivity_per_scenario_with_its_wilson_interval():
    model_db = np.full(10, 30.0)
    mse = 255.0**2 / 10**3  # the model's per-pixel MSE at 30 dB
    clips = [_errors("arm", model_db, mse_shuffled=2 * mse), _errors("arm", model_db, mse_shuffled=2 * mse),
             _errors("arm", model_db, mse_shuffled=0.5 * mse), _errors("arm", model_db),  # no shuffled: left out
             _errors("explore", model_db, mse_shuffled=3 * mse), _errors("explore", model_db, mse_shuffled=mse)]
    summary = dynamics_summary(clips, 0.1, resamples=50)
    arm, explore = summary["per_scenario"]["arm"], summary["per_scenario"]["explore"]
    assert arm["clips"] == 4 and arm["action_sensitivity_clips"] == 3
    assert arm["action_sensitivity"] == pytest.approx(2 / 3)
    assert arm["action_sensitivity_ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert explore["action_sensitivity"] == pytest.approx(1 / 2)  # a tie is no win
    assert summary["overall"]["action_sensitivity"] == pytest.approx(3 / 5)
    assert summary["overall"]["pooled_psnr"]["shuffled_clips"] == 5
    with pytest.raises(ValueError, match="same number of horizon frames"):
        dynamics_summary([_errors("arm", model_db), _errors("arm", model_db[:4])], 0.1)


def test_saved_frames_round_trip_and_the_scenario_comes_from_the_bag_name(tmp_path):
    last, real, model = _hand_clip()
    path = save_clip_frames(tmp_path / "f" / "clip_0000.npz", observed_last=last, real=real, model=model,
                            shuffled=None, scenario="arm", bag="/d/arm_s20000", start_frame=7, modality="robot",
                            frame_interval_s=0.1)
    data = load_clip_frames(path)
    np.testing.assert_array_equal(data["model"], model)
    assert data["shuffled"].shape == (0, 2, 2, 3) and data["shuffled"].dtype == np.uint8
    assert (data["scenario"], data["bag"], data["start_frame"], data["frame_interval_s"]) == ("arm", "/d/arm_s20000", 7,
                                                                                                0.1)
    assert data["ceiling"] is None  # saved without one
    ceiling = np.full_like(real, 7)
    again = load_clip_frames(save_clip_frames(tmp_path / "c.npz", observed_last=last, real=real, model=model, shuffled=None,
                                              scenario="arm", ceiling=ceiling))
    np.testing.assert_array_equal(again["ceiling"], ceiling)
    with pytest.raises(ValueError, match="ceiling frames"):
        save_clip_frames(tmp_path / "y.npz", observed_last=last, real=real, model=model, shuffled=None, scenario="arm",
                         ceiling=ceiling[:1])
    with pytest.raises(ValueError, match="uint8"):
        save_clip_frames(tmp_path / "x.npz", observed_last=last, real=real, model=model.astype(float), shuffled=None,
                         scenario="arm")
    assert scenario_of("/data/test/rover_s20003", "twist") == "rover"
    assert scenario_of("/data/test/explore_s7/explore_s7.mcap", "camera") == "explore"
    assert scenario_of("/data/foreign_bag", "twist") == "twist"
    assert scenario_of("/data/kitchen_s3", "robot") == "robot"  # not a simulator scenario


def _two_models(a_dir: Path, b_dir: Path) -> None:
    """Six clips (three `arm`, three `rover`) where model B errs by 8 grey levels everywhere and A by 6."""
    rng = np.random.default_rng(0)
    for i in range(6):
        real = rng.integers(60, 200, (3, 8, 8, 3)).astype(np.uint8)
        last = np.full((8, 8, 3), 128, np.uint8)
        noise = np.where(rng.random(real.shape) < 0.5, 1, -1) * 8  # |error| 8 for B ...
        b_model = np.clip(real.astype(int) + noise, 0, 255).astype(np.uint8)
        a_model = np.clip(real.astype(int) + np.round(noise / np.sqrt(2)).astype(int), 0, 255).astype(np.uint8)
        for directory, model in ((a_dir, a_model), (b_dir, b_model)):  # ... and round(8 / sqrt 2) = 6 for A
            save_clip_frames(directory / f"clip_{i:04d}.npz", observed_last=last, real=real, model=model,
                             shuffled=None, scenario="arm" if i < 3 else "rover", bag=f"bag{i}", start_frame=0)


def test_a_frame_range_scores_only_those_frames(tmp_path, capsys):
    """A errs by 6 grey levels in frame 0 and by 8 after it, B by 8 everywhere: A - B is 10 log10(64/36) over
    frame 0, zero over frames 1-2; the range is written into --out; a range past the clip is refused."""
    compare_frames = load_script("scripts/compare_frames.py")
    rng = np.random.default_rng(1)
    for i in range(4):
        real = rng.integers(60, 200, (3, 8, 8, 3)).astype(np.uint8)
        b_model = np.clip(real.astype(int) + 8, 0, 255).astype(np.uint8)
        a_model = b_model.copy()
        a_model[0] = real[0] + 6
        for directory, model in ((tmp_path / "a", a_model), (tmp_path / "b", b_model)):
            save_clip_frames(directory / f"clip_{i:04d}.npz", observed_last=np.full((8, 8, 3), 128, np.uint8), real=real,
                             model=model, shuffled=None, scenario="arm", bag=f"bag{i}", start_frame=0)
    first = compare_frames.compare(compare_frames.paired_errors(tmp_path / "a", tmp_path / "b", frames=slice(0, 1)))
    later = compare_frames.compare(compare_frames.paired_errors(tmp_path / "a", tmp_path / "b", frames=slice(1, 3)))
    assert first["all"]["a_minus_b"] == pytest.approx(10 * np.log10(64 / 36), abs=1e-9)
    assert later["all"]["a_minus_b"] == pytest.approx(0.0, abs=1e-9)
    assert compare_frames.main([str(tmp_path / "a"), str(tmp_path / "b"), "--frames", "1:3",
                                "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["frames"] == [1, 3]
    with pytest.raises(SystemExit, match="frames 2:9 reach past the clip's 3 predicted frames"):
        compare_frames.paired_errors(tmp_path / "a", tmp_path / "b", frames=slice(2, 9))


def test_two_models_are_compared_paired_on_the_same_clips(tmp_path):
    """scripts/compare_frames.py: A's error is half of B's everywhere, so A - B is 10 log10(2) dB with a
    paired interval that collapses on it; different clips in the two directories are refused."""
    compare_frames = load_script("scripts/compare_frames.py")
    _two_models(tmp_path / "a", tmp_path / "b")
    result = compare_frames.compare(compare_frames.paired_errors(tmp_path / "a", tmp_path / "b"))
    expected = 10 * np.log10(64 / 36)  # |error| 6 for A, 8 for B
    assert set(result) == {"all", "arm", "rover"} and result["all"]["clips"] == 6
    assert result["all"]["a_minus_b"] == pytest.approx(expected, abs=1e-9)
    low, high = result["all"]["a_minus_b_ci95"]
    assert low == pytest.approx(expected, abs=1e-9) and high == pytest.approx(expected, abs=1e-9)
    assert result["arm"]["a_better_share"] == 1.0
    assert compare_frames._frame_range("20:40") == slice(20, 40)
    for bad in ("40:20", "7", "a:b", "-1:3"):
        with pytest.raises(argparse.ArgumentTypeError, match="START:STOP"):
            compare_frames._frame_range(bad)
    (tmp_path / "b" / "clip_0005.npz").unlink()
    with pytest.raises(SystemExit, match="same clip files"):
        compare_frames.paired_errors(tmp_path / "a", tmp_path / "b")


def test_ablation_table_puts_each_model_beside_copy_last_and_the_reference(tmp_path, capsys):
    """scripts/ablation_table.py: the scores come from each evaluation's metrics.json, the paired
    difference to the first model from their frames; a directory that is not an evaluation is refused."""
    table = load_script("scripts/ablation_table.py")
    _two_models(tmp_path / "a" / "frames", tmp_path / "b" / "frames")

    def group(gain, sensitivity):
        return {"clips": 3, "pooled_psnr": {"gain": gain, "gain_ci95": [gain - 1, gain + 1]},
                "changed_psnr": {"gain": gain + 0.5}, "action_sensitivity": sensitivity,
                "action_sensitivity_ci95": [sensitivity - 0.1, 1.0]}

    for name, gain in (("a", 2.0), ("b", 1.0)):
        metrics = {"dynamics": {"overall": group(gain, 0.9),
                                "per_scenario": {"arm": group(gain - 1, 0.8), "rover": group(gain + 1, 1.0)}}}
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "table.json"
    assert table.main([f"reference={tmp_path / 'b'}", f"better (s = 3)={tmp_path / 'a'}", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "vs_reference" not in result["reference"]
    assert result["better (s = 3)"]["scores"]["arm"]["gain"] == 1.0 and result["better (s = 3)"]["scores"]["all"]["changed_gain"] == 2.5
    assert result["better (s = 3)"]["vs_reference"]["all"]["a_minus_b"] == pytest.approx(10 * np.log10(64 / 36), abs=1e-9)
    printed = capsys.readouterr().out
    assert "| better (s = 3) | +2.00 (+1.00 to +3.00) | +1.00 | +3.00 | +2.50 | +1.50 | 0.90 (0.80-1.00) | 0.80 | +2.50" in printed
    with pytest.raises(SystemExit):
        table.main([f"reference={tmp_path / 'b' / 'frames'}"])
