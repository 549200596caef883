"""A camera faster than the model's frame interval is thinned onto the model's grid by the same rule in
training, evaluation and the live node, so a 15 Hz robot is fine-tuned and scored at the spacing the
node will feed it (before, bags kept every frame: 67 ms apart, read by the model as 100 ms)."""

import json

import numpy as np
import pytest
import torch

from astra_ros.cli.eval import main as eval_main
from astra_ros.data.bags import ReadStats, read_episode
from astra_ros.data.clips import ClipDataset, episode_cache_key, load_episode_cached
from astra_ros.data.frame_grid import FrameGrid, grid_indices
from astra_ros.data.bags import BagTopics
from astra_ros.data.actions import KeyThresholds
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings
from astra_ros.model import WorldModel
from astra_ros.model.config import preset


@pytest.fixture(scope="module")
def bag15(tmp_path_factory):
    """A 15 Hz rover episode of 2 s: 30 images."""
    root = tmp_path_factory.mktemp("grid")
    settings = SimSettings(seconds=2.0, image_width=64, image_height=64, camera_rate_hz=15, state_rate_hz=45)
    return record_episode("rover", 3, root / "bags", settings=settings, progress=False)


def test_grid_indices_are_the_frames_the_live_grid_takes():
    stamps = (np.arange(45) * 1e9 / 15).astype(np.int64)
    taken = grid_indices(stamps, 0.1)
    grid = FrameGrid(0.1)
    assert taken.tolist() == [i for i, s in enumerate(stamps) if grid.offer(int(s))]
    assert taken[:7].tolist() == [0, 2, 3, 5, 6, 8, 9]  # 133, 67, 133, ... ms: 100 ms on average
    assert grid_indices((np.arange(20) * 1e8).astype(np.int64), 0.1).tolist() == list(range(20))  # 10 Hz: all
    assert grid_indices((np.arange(30) * 1e9 / 30).astype(np.int64), 0.1).tolist() == list(range(0, 30, 3))


def test_a_faster_cameras_bag_is_thinned_like_the_live_stream(bag15, tmp_path):
    every = read_episode(bag15, None, (32, 32))
    stats = ReadStats()
    thinned = read_episode(bag15, None, (32, 32), frame_interval_s=0.1, stats=stats)
    assert len(every.frames) == 30 and len(thinned.frames) == 20 and stats.thinned_frames == 10
    keep = grid_indices(every.stamps_ns, 0.1)
    assert np.array_equal(thinned.stamps_ns, every.stamps_ns[keep])
    assert np.array_equal(thinned.frames, every.frames[keep])
    assert "10 more left out to thin a faster camera" in stats.summary()
    assert thinned.thinned_frames == 10 and thinned.camera_period_ns == pytest.approx(1e9 / 15, abs=1e6)
    assert every.thinned_frames == 0 and every.camera_period_ns is None
    # Twist actions are per frame interval: the thinned episode's are those of its own spacing.
    assert np.isfinite(thinned.actions).all() and thinned.actions.shape == (20, every.actions.shape[1])
    # Training reads the same frames, and its cache keeps the two readings apart.
    dataset = ClipDataset([bag15], None, 6, (32, 32), tmp_path / "cache", frame_format="uint8", frame_interval_s=0.1)
    assert len(dataset) == 20 - 6 + 1
    assert np.array_equal(dataset[0]["stamps_ns"].numpy(), thinned.stamps_ns[:6])
    keys = {episode_cache_key(bag15, "twist", (32, 32), BagTopics(), KeyThresholds(), frame_interval_s=f)
            for f in (None, 0.1, 0.2)}
    assert len(keys) == 3
    # A cache hit knows what was thinned too (its summary said nothing was).
    again = ReadStats()
    cached = load_episode_cached(bag15, None, (32, 32), tmp_path / "cache", stats=again, frame_interval_s=0.1)
    assert again.thinned_frames == 10 and cached.camera_period_ns == thinned.camera_period_ns


def test_a_12_hz_cameras_thinning_steps_are_no_time_gaps_but_a_dropout_is():
    """Thinned onto the 0.1 s grid, a 12 Hz camera's frames are 83 and 167 ms apart; every window had a
    step above 1.5 x 100 ms, so astra-eval found no usable clip at all."""
    from astra_ros.data.bags import Episode
    from astra_ros.eval.options import EvalOptions, ReplayPlan
    from astra_ros.eval.replay import _windows
    from astra_ros.eval.replay_bags import ReplayBag

    camera = (np.arange(240) * 1e9 / 12).astype(np.int64)  # 20 s at 12 Hz
    camera = np.delete(camera, np.arange(120, 126))  # half a second lost in the middle
    keep = grid_indices(camera, 0.1)
    n = len(keep)
    episode = Episode(np.zeros((n, 8, 8, 3), np.uint8), np.zeros((n, 6), np.float32), camera[keep], "twist", None,
                      "fake", thinned_frames=len(camera) - n, camera_period_ns=int(np.median(np.diff(camera))))
    plan = ReplayPlan(context_frames=4, horizon_frames=10, frame_interval_s=0.1, stride_frames=1)
    skipped: dict[str, int] = {}
    chosen = _windows([ReplayBag("fake", episode, 0.1, None, None)], plan, EvalOptions(clips_per_bag=1000, max_clips=1000),
                      skipped)
    lost = np.flatnonzero(np.diff(camera[keep]) > 400_000_000)
    assert len(lost) == 1  # the dropout, and only it, is a gap
    assert skipped == {"time_gap": 14} and len(chosen) == n - 14 + 1 - 14
    assert all(not (start <= lost[0] < start + 14) for _, start in chosen)


def test_astra_eval_scores_a_faster_camera_at_the_models_interval(bag15, tmp_path):
    torch.manual_seed(0)
    checkpoint = WorldModel(preset("tiny", resolution=(32, 32))).save_pretrained(tmp_path / "ckpt")
    rc = eval_main([str(bag15), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--horizon-s", "1",
                    "--context-frames", "4", "--stride-s", "0.5", "--clips-per-bag", "1", "--threads", "1", "--quiet"])
    assert rc == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["frame_interval_s"] == pytest.approx(0.1)
    # 1 s is 10 grid frames (at 15 Hz it was 15 frames, and a one-frame "second 2")
    assert [(s["second"], s["frames"]) for s in metrics["dynamics"]["overall"]["per_second"]] == [(1, 10)]
