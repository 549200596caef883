"""A camera faster than the model's frame interval is thinned onto the model's grid by the same rule in
training, evaluation and the live node, so a 15 Hz robot is fine-tuned and scored at the spacing the
node will feed it (before, bags kept every frame: 67 ms apart, read by the model as 100 ms)."""

import json

import numpy as np
import pytest
import torch

from astra_ros.cli.eval import main as eval_main
from astra_ros.data.bags import ReadStats, read_episode
from astra_ros.data.clips import ClipDataset, episode_cache_key
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
    # Twist actions are per frame interval: the thinned episode's are those of its own spacing.
    assert np.isfinite(thinned.actions).all() and thinned.actions.shape == (20, every.actions.shape[1])
    # Training reads the same frames, and its cache keeps the two readings apart.
    dataset = ClipDataset([bag15], None, 6, (32, 32), tmp_path / "cache", frame_format="uint8", frame_interval_s=0.1)
    assert len(dataset) == 20 - 6 + 1
    assert np.array_equal(dataset[0]["stamps_ns"].numpy(), thinned.stamps_ns[:6])
    keys = {episode_cache_key(bag15, "twist", (32, 32), BagTopics(), KeyThresholds(), frame_interval_s=f)
            for f in (None, 0.1, 0.2)}
    assert len(keys) == 3


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
