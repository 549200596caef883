"""scripts/score_choosing.py: the choosing scorings' bags from config/test_sets.yaml, resumable scoring,
and the pairing with a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from astra_ros.eval.frames import save_clip_frames
from repo_scripts import REPO, load_script

CONFIG = yaml.safe_load((REPO / "config" / "test_sets.yaml").read_text())


def _record_all(eval_dir: Path) -> None:
    """An empty but 'complete' bag (its metadata.yaml) for every episode of every choosing set."""
    for name, spec in CONFIG["choosing"].items():
        for scenario in spec["scenarios"]:
            for seed in range(spec["first_seed"], spec["first_seed"] + spec["episodes"]):
                bag = eval_dir / name / f"{scenario}_s{seed}"
                bag.mkdir(parents=True)
                (bag / "metadata.yaml").write_text("{}\n")


def test_scorings_take_the_documented_bags_and_name_every_missing_one(tmp_path):
    score = load_script("scripts/score_choosing.py")
    _record_all(tmp_path)
    one = score.scoring_bags(CONFIG, "1s", tmp_path)
    # arm 8000-8003, arm 8004-8007, arm 9004-9007 and the three scenarios of 9000-9003: 24 bags, x3 clips = 72
    assert len(one) == 24 and len(set(one)) == 24
    assert sum(b.name.startswith("arm_") for b in one) == 16
    assert tmp_path / "seeds_8000" / "arm_s8003" in one and tmp_path / "seeds_8000" / "explore_s8000" not in one
    assert score.scoring_bags(CONFIG, "4s", tmp_path) == one
    # in astra-eval's order when given the folders, so clip_NNNN pairs with a scoring made that way
    from astra_ros.data.bag_files import find_bags
    assert one == find_bags([tmp_path / "seeds_8000" / f"arm_s{s}" for s in range(8000, 8004)]
                            + [tmp_path / "arm_8004", tmp_path / "arm_9004", tmp_path / "heldout_9000"])
    turning = score.scoring_bags(CONFIG, "turning4s", tmp_path)
    assert len(turning) == 32 and not any(b.name.startswith("arm_") for b in turning)
    args = score.eval_arguments(CONFIG, "4s", "default", tmp_path / "out", one, threads=2)
    assert args[args.index("--horizon-s") + 1] == "4" and args[args.index("--clips-per-bag") + 1] == "1"
    assert args[args.index("--save-frames") + 1] == str(tmp_path / "out" / "frames")
    assert args[-24:] == [str(b) for b in one] and args[args.index("--threads") + 1] == "2"

    for gone in ("arm_s9005", "rover_s9002"):
        (tmp_path / ("arm_9004" if gone.startswith("arm") else "heldout_9000") / gone / "metadata.yaml").unlink()
    with pytest.raises(SystemExit) as error:
        score.scoring_bags(CONFIG, "1s", tmp_path)
    message = str(error.value)
    assert message.startswith("2 bag(s) of scoring 1s not recorded") and "arm_s9005" in message
    assert "rover_s9002" in message and "--set heldout_9000" in message and "--set arm_9004" in message
    with pytest.raises(SystemExit, match="unknown scoring '2s'"):
        score.scoring_bags(CONFIG, "2s", tmp_path)


def _fake_eval(error: int):
    """A stand-in for astra-eval writing three `arm` clips whose model errs by ``error`` grey levels."""
    calls = []

    def run(argv):
        out = Path(argv[argv.index("--out") + 1])
        frames = Path(argv[argv.index("--save-frames") + 1])
        rng = np.random.default_rng(0)
        for i in range(3):
            real = rng.integers(60, 200, (3, 8, 8, 3)).astype(np.uint8)
            save_clip_frames(frames / f"clip_{i:04d}.npz", observed_last=np.full((8, 8, 3), 128, np.uint8),
                             real=real, model=(real + error).astype(np.uint8), shuffled=None, scenario="arm",
                             bag=f"bag{i}", start_frame=0)
        group = {"clips": 3, "pooled_psnr": {"gain": 1.5, "gain_ci95": [1.0, 2.0]},
                 "changed_psnr": {"gain": 2.5}, "action_sensitivity": 0.9,
                 "per_second": [{"pooled_psnr": {"gain": 1.5}}]}
        (out / "metrics.json").write_text(json.dumps({"dynamics": {"overall": group, "per_scenario": {"arm": group}}}))
        calls.append(out.name)
        return 0

    return run, calls


def test_a_candidate_is_scored_once_and_paired_with_the_baseline(tmp_path, monkeypatch):
    score = load_script("scripts/score_choosing.py")
    _record_all(tmp_path / "eval")
    common = ["--eval-dir", str(tmp_path / "eval"), "--scorings", "1s"]
    run, calls = _fake_eval(error=8)
    monkeypatch.setattr(score, "eval_main", run)
    assert score.main(["default", "--out", str(tmp_path / "base"), *common]) == 0
    run, calls = _fake_eval(error=6)
    monkeypatch.setattr(score, "eval_main", run)
    (tmp_path / "doc.json").write_text(json.dumps({"earlier": 1}))
    argv = ["cand", "--out", str(tmp_path / "cand"), "--baseline", str(tmp_path / "base"), *common,
            "--json", str(tmp_path / "doc.json"), "--key", "cand"]
    assert score.main(argv) == 0
    assert score.main(argv) == 0  # the second time the scores on disk are reused
    assert calls == ["1s"]
    doc = json.loads((tmp_path / "doc.json").read_text())
    assert doc["earlier"] == 1 and doc["cand"] == json.loads((tmp_path / "cand" / "summary.json").read_text())
    entry = doc["cand"]["scorings"]["1s"]
    assert entry["summary"]["arm"]["pooled_gain_db"] == 1.5 and "per_second_gain_db" not in entry["summary"]["arm"]
    # errors of 6 against 8 grey levels on every pixel: 10 log10(64 / 36) dB better, on every clip
    assert entry["paired_vs_baseline"]["all"]["a_minus_b_db"] == pytest.approx(10 * np.log10(64 / 36), abs=1e-3)
    assert entry["paired_vs_baseline"]["arm"]["a_better_share"] == 1.0
    with pytest.raises(SystemExit, match="no frames for: 4s"):
        score.main(["cand", "--out", str(tmp_path / "c2"), "--baseline", str(tmp_path / "base"),
                    "--eval-dir", str(tmp_path / "eval"), "--scorings", "1s,4s"])
