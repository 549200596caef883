"""The decoded-episode cache: hits instead of decoding again, shared across window lengths and relative paths,
damaged entries decoded again, concurrent writers apart."""

from pathlib import Path

import numpy as np
import pytest
import torch

from astra_ros.data.bags import read_episode
from astra_ros.data.clips import ClipDataset

from bag_writing import write_bag


def test_clip_cache_avoids_decoding_again(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "b")
    cache = tmp_path / "cache"
    first = ClipDataset([bag], "camera", 4, (16, 20), cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def must_not_decode(*args, **kwargs):
        raise AssertionError("bag decoded although it is cached")

    monkeypatch.setattr("astra_ros.data.clips.read_episode", must_not_decode)
    second = ClipDataset([bag], "camera", 4, (16, 20), cache)
    assert torch.equal(first[2]["frames"], second[2]["frames"])
    assert torch.equal(first[2]["actions"], second[2]["actions"])
    monkeypatch.undo()
    ClipDataset([bag], "camera", 4, (8, 10), cache)  # other options: a new entry
    assert len(list(cache.glob("*.npz"))) == 2


def test_a_bag_reached_by_a_relative_path_uses_the_same_cache_entry(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "b")
    cache = tmp_path / "cache"
    ClipDataset([bag.resolve()], "camera", 4, (16, 20), cache)
    monkeypatch.chdir(tmp_path)
    ClipDataset([Path("b")], "camera", 4, (16, 20), cache)
    assert len(list(cache.glob("*.npz"))) == 1


def test_another_window_length_shares_the_decoded_episodes(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "b")
    short = ClipDataset([bag], "camera", 4, (16, 20), None)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("bag decoded again for a second window length")

    monkeypatch.setattr("astra_ros.data.clips.read_episode", must_not_decode)
    long = short.with_clip_frames(7)
    assert long._episodes is short._episodes  # one copy of the frames in memory
    assert len(long) == len(short) - 3 and long.stats.windows == len(long)
    assert short.clip_frames == 4 and len(short) == 9  # the original is left as it was
    monkeypatch.undo()
    reference = ClipDataset([bag], "camera", 7, (16, 20), None)
    for index in (0, len(long) - 1):
        assert torch.equal(long[index]["frames"], reference[index]["frames"])
        assert torch.equal(long[index]["actions"], reference[index]["actions"])
    with pytest.raises(ValueError, match="clip_frames"):
        short.with_clip_frames(0)


def test_a_damaged_cache_entry_is_decoded_again_with_a_warning(tmp_path, caplog):
    bag = write_bag(tmp_path / "b")
    cache = tmp_path / "cache"
    first = ClipDataset([bag], "camera", 4, (16, 20), cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # a copy killed halfway
    with caplog.at_level("WARNING"):
        again = ClipDataset([bag], "camera", 4, (16, 20), cache)
    assert str(entry) in caplog.text and "decoding" in caplog.text
    assert torch.equal(first[2]["frames"], again[2]["frames"])
    assert ClipDataset([bag], "camera", 4, (16, 20), cache)[2]["frames"].equal(first[2]["frames"])  # rewritten


def test_two_writers_of_one_cache_entry_do_not_share_a_temporary_file(tmp_path, monkeypatch):
    # Two processes filling one cache: the second finishes between the first's write and its rename.
    from astra_ros.data import clips as clips_module

    episode = read_episode(write_bag(tmp_path / "b"), "camera")
    entry = tmp_path / "cache" / "b-key.npz"
    entry.parent.mkdir()
    real_savez = np.savez
    nested = []

    def savez_then_let_the_other_writer_finish(file, **arrays):
        real_savez(file, **arrays)
        if not nested:
            nested.append(True)
            clips_module._save_episode(entry, episode)

    monkeypatch.setattr(np, "savez", savez_then_let_the_other_writer_finish)
    clips_module._save_episode(entry, episode)
    monkeypatch.undo()
    assert nested and sorted(p.name for p in entry.parent.iterdir()) == ["b-key.npz"]
    np.testing.assert_array_equal(clips_module._load_episode(entry).frames, episode.frames)
