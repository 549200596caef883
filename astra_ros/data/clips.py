"""Clip dataset over bags: windows of consecutive frames with their actions, decoded once and cached.

Each bag is decoded by :func:`astra_ros.data.bags.read_episode` and saved as an uncompressed ``.npz`` in
``cache_dir``, keyed by the bag's path, size and modification time and the reading options, so later
epochs and runs load arrays instead of decoding bags. Windows containing a frame with a NaN action are
left out and counted in :attr:`ClipDataset.stats`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections import OrderedDict
from copy import copy
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from astra_ros.data.actions import KeyThresholds, check_modality, rebase_camera_actions
from astra_ros.data.bags import BagError, BagTopics, Episode, ReadStats, bag_topics, modality_from_topics, read_episode
from astra_ros.data.conventions import BagConventions
from astra_ros.data.geometry import PinholeIntrinsics

logger = logging.getLogger(__name__)

# Bump when the cached arrays change meaning (2: stamp order, held gripper, stale commands; 3: an arm's camera).
_CACHE_FORMAT_VERSION = 3


def _bag_signature(bag_path: Path) -> dict[str, object]:
    """Path, total size and latest modification time of a bag file or directory."""
    files = [bag_path] if bag_path.is_file() else sorted(p for p in bag_path.rglob("*") if p.is_file())
    return {
        "path": str(bag_path.resolve()),
        "size": sum(p.stat().st_size for p in files),
        "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0),
    }


def episode_cache_key(
    bag_path: Path | str,
    modality: str | None,
    resolution: tuple[int, int] | None,
    topics: BagTopics,
    key_thresholds: KeyThresholds,
    conventions: BagConventions = BagConventions(),
    frame_interval_s: float | None = None,
) -> str:
    """Hex key of one decoded episode: changes when the bag or any reading option changes."""
    description: dict[str, object] = {
        "version": _CACHE_FORMAT_VERSION,
        "bag": _bag_signature(Path(bag_path)),
        "modality": modality,
        "resolution": list(resolution) if resolution is not None else None,
        "topics": asdict(topics),
        "key_thresholds": asdict(key_thresholds),
    }
    if conventions != BagConventions():  # only then: episodes cached before conventions existed keep their keys
        description["conventions"] = asdict(conventions)
    if frame_interval_s is not None:  # likewise: episodes cached before the frame grid keep their keys
        description["frame_interval_s"] = float(frame_interval_s)
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


def _save_episode(path: Path, episode: Episode) -> None:
    info = episode.camera_info
    intrinsics = np.array([info.width, info.height, info.fx, info.fy, info.cx, info.cy]) if info else np.zeros(0)
    # A temporary name of this process and call alone: processes (DataLoader workers, parallel runs) that
    # fill one cache entry at once would otherwise write into, and rename away, each other's file.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            np.savez(
                handle,
                frames=episode.frames,
                actions=episode.actions,
                stamps_ns=episode.stamps_ns,
                modality=np.array(episode.modality),
                bag_path=np.array(episode.bag_path),
                intrinsics=intrinsics,
                camera_in_base=episode.camera_in_base if episode.camera_in_base is not None else np.zeros(0),
                thinned_frames=np.array(episode.thinned_frames),
                camera_period_ns=np.array(-1 if episode.camera_period_ns is None else episode.camera_period_ns),
            )
        os.replace(temporary, path)  # atomic, so readers never see a half-written cache entry
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _load_episode(path: Path) -> Episode:
    with np.load(path) as arrays:
        intrinsics = arrays["intrinsics"]
        info = None
        if intrinsics.size:
            info = PinholeIntrinsics(int(intrinsics[0]), int(intrinsics[1]), *(float(v) for v in intrinsics[2:]))
        # Entries written before these were kept: nothing known about thinning (-1 stands for None).
        thinned = int(arrays["thinned_frames"]) if "thinned_frames" in arrays.files else 0
        period = int(arrays["camera_period_ns"]) if "camera_period_ns" in arrays.files else -1
        return Episode(
            frames=arrays["frames"],
            actions=arrays["actions"],
            stamps_ns=arrays["stamps_ns"],
            modality=str(arrays["modality"]),
            camera_info=info,
            bag_path=str(arrays["bag_path"]),
            camera_in_base=arrays["camera_in_base"] if arrays["camera_in_base"].size else None,
            thinned_frames=thinned,
            camera_period_ns=period if period >= 0 else None,
        )


def load_episode_cached(
    bag_path: Path | str,
    modality: str | None,
    resolution: tuple[int, int] | None,
    cache_dir: Path | str | None,
    *,
    topics: BagTopics = BagTopics(),
    key_thresholds: KeyThresholds = KeyThresholds(),
    stats: ReadStats | None = None,
    conventions: BagConventions = BagConventions(),
    frame_interval_s: float | None = None,
) -> Episode:
    """:func:`read_episode` through an ``.npz`` cache in ``cache_dir`` (no cache when ``cache_dir`` is None)."""
    if cache_dir is None:
        return read_episode(bag_path, modality, resolution, topics=topics, key_thresholds=key_thresholds, stats=stats,
                            conventions=conventions, frame_interval_s=frame_interval_s)
    key = episode_cache_key(bag_path, modality, resolution, topics, key_thresholds, conventions, frame_interval_s)
    cache_path = Path(cache_dir) / f"{Path(bag_path).name}-{key}.npz"
    episode = None
    if cache_path.exists():
        try:
            episode = _load_episode(cache_path)
        except Exception as err:  # a damaged entry (disk full, killed copy) is only a cache: decode the bag again
            logger.warning("episode cache %s is unreadable (%s: %s); decoding %s again",
                           cache_path, type(err).__name__, err, bag_path)
            cache_path.unlink(missing_ok=True)
    if episode is not None:
        if stats is not None:
            stats.episodes += 1
            stats.frames += len(episode.frames)
            stats.nan_frames += int((~episode.valid).sum())
            stats.thinned_frames += episode.thinned_frames
        return episode
    episode = read_episode(bag_path, modality, resolution, topics=topics, key_thresholds=key_thresholds, stats=stats,
                           conventions=conventions, frame_interval_s=frame_interval_s)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _save_episode(cache_path, episode)
    return episode


def _per_bag(value, kind: type, count: int, name: str) -> list:
    """``value`` (one ``kind`` for every bag, or a sequence of one per bag) as a list of ``count``."""
    if isinstance(value, kind):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"got {len(values)} {name} for {count} bags")
    return values


class ClipDataset(Dataset):
    """Windows of ``clip_frames`` consecutive frames from a set of bags, with their actions.

    Item ``i`` is a dict:

    * ``frames``: float32 tensor ``[T, 3, H, W]`` in [-1, 1] (``frame_format="float"``, the model's input)
      or uint8 tensor ``[T, H, W, 3]`` (``frame_format="uint8"``);
    * ``actions``: float32 tensor ``[T, D]`` of the bag's modality; ``camera`` actions are re-expressed
      relative to the window's first frame;
    * ``modality`` (str), ``bag`` (str), ``start`` (int, first frame index), ``stamps_ns`` (int64 tensor ``[T]``).

    Every valid window start is an item; shuffle with the DataLoader (or call :meth:`random_window`) to
    get random windows. Batches must hold one modality, since ``D`` differs between modalities.
    ``modality``: one name for all bags, one per bag, or None to pick each bag's from its topics.
    ``topics`` and ``conventions``: one for all bags, or one per bag (bags of several robots, each read
    through its profile: :mod:`astra_ros.data.profile`). ``frame_interval_s`` [s]: the model's frame
    interval; a faster camera is thinned onto it as the live node thins it (None: every frame).
    Episodes stay in memory up to ``max_episodes_in_memory`` (least recently used are dropped; None = all).
    """

    def __init__(
        self,
        bag_paths: Sequence[Path | str],
        modality: str | Sequence[str | None] | None,
        clip_frames: int,
        resolution: tuple[int, int],
        cache_dir: Path | str | None,
        *,
        stride: int = 1,
        frame_format: str = "float",
        topics: BagTopics | Sequence[BagTopics] = BagTopics(),
        key_thresholds: KeyThresholds = KeyThresholds(),
        max_episodes_in_memory: int | None = None,
        conventions: BagConventions | Sequence[BagConventions] = BagConventions(),
        frame_interval_s: float | None = None,
    ) -> None:
        if clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if frame_format not in ("float", "uint8"):
            raise ValueError(f"frame_format must be 'float' or 'uint8', got {frame_format!r}")
        if len(bag_paths) == 0:
            raise ValueError("ClipDataset needs at least one bag")
        if modality is None or isinstance(modality, str):
            modalities: list[str | None] = [modality] * len(bag_paths)
        else:
            modalities = list(modality)
            if len(modalities) != len(bag_paths):
                raise ValueError(f"got {len(modalities)} modalities for {len(bag_paths)} bags")
        self.bag_paths = [Path(p) for p in bag_paths]
        self.topics = _per_bag(topics, BagTopics, len(bag_paths), "topics")
        self.conventions = _per_bag(conventions, BagConventions, len(bag_paths), "conventions")
        self.modalities = [
            check_modality(m) if m is not None else modality_from_topics(bag_topics(p), t, bag_path=p)
            for m, p, t in zip(modalities, self.bag_paths, self.topics)
        ]
        self.clip_frames = clip_frames
        self.resolution = resolution
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.frame_interval_s = frame_interval_s  # the model's: faster cameras thinned onto its grid
        self.frame_format = frame_format
        self.key_thresholds = key_thresholds
        self.max_episodes_in_memory = max_episodes_in_memory
        self.stats = ReadStats()
        self._episodes: OrderedDict[int, Episode] = OrderedDict()
        self._windows: list[tuple[int, int]] = []  # (bag index, start frame)
        for bag_index in range(len(self.bag_paths)):
            self._index_windows(bag_index, stride)
        logger.info("ClipDataset: %s", self.stats.summary())

    def with_clip_frames(self, clip_frames: int, stride: int = 1) -> ClipDataset:
        """The same bags cut into windows of ``clip_frames``, sharing this dataset's decoded episodes,
        so a second window length (astra-train's decoder phase) does not hold every episode twice."""
        if clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        other = copy(self)  # shallow: the episode store is the same object
        other.clip_frames = clip_frames
        # What was read is shared; what is counted per window length starts again.
        other.stats = replace(self.stats, windows=0, skipped_windows=0, short_episodes=0, skipped_bags=[])
        other._windows = []
        for bag_index in range(len(self.bag_paths)):
            other._index_windows(bag_index, stride)
        return other

    def _index_windows(self, bag_index: int, stride: int) -> None:
        episode = self._load(bag_index, count=True)
        count = len(episode.frames)
        if count < self.clip_frames:
            self.stats.short_episodes += 1
            self.stats.skipped_bags.append(str(self.bag_paths[bag_index]))
            logger.warning(
                "bag %s has %d frames, fewer than one clip of %d", self.bag_paths[bag_index], count, self.clip_frames
            )
            return
        invalid = (~episode.valid).astype(np.int64)
        # Number of invalid frames inside each window, by a running sum.
        invalid_in_window = np.convolve(invalid, np.ones(self.clip_frames, dtype=np.int64), mode="valid")
        starts = np.arange(0, count - self.clip_frames + 1, stride)
        usable = starts[invalid_in_window[starts] == 0]
        self.stats.windows += len(starts)
        self.stats.skipped_windows += len(starts) - len(usable)
        if len(usable) == 0:
            self.stats.skipped_bags.append(str(self.bag_paths[bag_index]))
        self._windows.extend((bag_index, int(start)) for start in usable)

    def _load(self, bag_index: int, count: bool = False) -> Episode:
        if bag_index in self._episodes:
            self._episodes.move_to_end(bag_index)
            return self._episodes[bag_index]
        episode = load_episode_cached(
            self.bag_paths[bag_index],
            self.modalities[bag_index],
            self.resolution,
            self.cache_dir,
            topics=self.topics[bag_index],
            key_thresholds=self.key_thresholds,
            stats=self.stats if count else None,
            conventions=self.conventions[bag_index],
            frame_interval_s=self.frame_interval_s,
        )
        self._episodes[bag_index] = episode
        if self.max_episodes_in_memory is not None and len(self._episodes) > self.max_episodes_in_memory:
            self._episodes.popitem(last=False)
        return episode

    def __len__(self) -> int:
        return len(self._windows)

    def window_modalities(self) -> list[str]:
        """The modality of every item, without reading its frames."""
        return [self.modalities[bag_index] for bag_index, _ in self._windows]

    def __getitem__(self, index: int) -> dict[str, object]:
        bag_index, start = self._windows[index]
        episode = self._load(bag_index)
        stop = start + self.clip_frames
        actions = self._window_actions(episode, start)
        frames = torch.from_numpy(np.ascontiguousarray(episode.frames[start:stop]))  # (T, H, W, 3) uint8
        if self.frame_format == "float":
            frames = frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (T, 3, H, W) in [-1, 1]
        return {
            "frames": frames,
            "actions": torch.from_numpy(np.asarray(actions, dtype=np.float32)),
            "modality": episode.modality,
            "bag": str(self.bag_paths[bag_index]),
            "start": start,
            "stamps_ns": torch.from_numpy(episode.stamps_ns[start:stop].copy()),
            # (3, 3) [px] at the frames' size; NaN when the bag had no usable camera_info
            "intrinsics": (torch.from_numpy(episode.camera_info.matrix()).double() if episode.camera_info is not None
                           else torch.full((3, 3), float("nan"), dtype=torch.float64)),
            # (4, 4) the camera optical frame in the robot base frame; NaN when unknown or not a robot bag
            "camera_in_base": (torch.from_numpy(episode.camera_in_base).double() if episode.camera_in_base is not None
                               else torch.full((4, 4), float("nan"), dtype=torch.float64)),
        }

    def _window_actions(self, episode: Episode, start: int) -> np.ndarray:
        actions = episode.actions[start:start + self.clip_frames]
        if episode.modality == "camera":
            actions = rebase_camera_actions(actions)
        return actions

    def actions_by_modality(self) -> dict[str, np.ndarray]:
        """Every window's actions as the items give them, stacked per modality: name -> ``float32 [N, T, D]``.

        Reads no frames; used to measure the action (and motion) statistics the model standardises with.
        """
        groups: dict[str, list[np.ndarray]] = {}
        for bag_index, start in self._windows:
            episode = self._load(bag_index)
            groups.setdefault(episode.modality, []).append(self._window_actions(episode, start))
        return {name: np.stack(rows).astype(np.float32) for name, rows in groups.items()}

    def random_window(self, generator: np.random.Generator) -> dict[str, object]:
        """One window chosen uniformly at random with ``generator``."""
        if not self._windows:
            raise BagError(f"no usable window of {self.clip_frames} frames in the bags ({self.stats.summary()})")
        return self[int(generator.integers(len(self._windows)))]

    def indices_by_modality(self) -> dict[str, list[int]]:
        """Item indices grouped by modality, for samplers that keep one modality per batch."""
        groups: dict[str, list[int]] = {}
        for index, (bag_index, _) in enumerate(self._windows):
            groups.setdefault(self.modalities[bag_index], []).append(index)
        return groups
