"""What astra-train reads: bags from one or more sources, each read through its robot profile.

A source is a set of bag paths and an optional :class:`~astra_ros.data.profile.RobotProfile`; without
one, bags are read with this project's topic names and their modality comes from their topics. Sources
come from ``--data DIR... [--profile FILE]`` pairs or from a data list (YAML)::

    - data: [bags/my_robot]            # a path or a list of paths (relative to the list file)
      profile: robots/my_robot.yaml    # optional (relative to the list file)
    - data: bags/sim
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from astra_ros.data.bags import BagTopics, bag_topics, find_bags, modality_from_topics
from astra_ros.data.conventions import BagConventions
from astra_ros.data.profile import ProfileError, RobotProfile, load_profile
from astra_ros.model.config import ConfigError


@dataclass(frozen=True)
class DataSource:
    """Bags (directories, files or folders of them) and the profile they are read through (None: defaults)."""

    paths: tuple[Path, ...]
    profile: RobotProfile | None = None


@dataclass(frozen=True)
class TrainingEpisode:
    """One bag as the training set reads it: modality, topic names and the robot's conventions."""

    bag: Path
    modality: str
    topics: BagTopics = BagTopics()
    conventions: BagConventions = BagConventions()


def pair_sources(data: Sequence[Sequence[Path]], profiles: Sequence[Path]) -> list[DataSource]:
    """``--data`` groups and ``--profile`` files as sources: no profile, one profile for every group, or one
    per group in order. Raises :class:`ConfigError` for other counts, :class:`ProfileError` for a bad file."""
    if profiles and len(profiles) not in (1, len(data)):
        raise ConfigError(f"got {len(profiles)} --profile for {len(data)} --data: give one profile for all data, "
                          "or one --profile after each --data")
    loaded = [load_profile(p) for p in profiles]
    if len(loaded) == 1:
        loaded = loaded * len(data)
    return [DataSource(tuple(map(Path, paths)), loaded[i] if loaded else None) for i, paths in enumerate(data)]


def load_data_list(path: Path | str) -> list[DataSource]:
    """Sources from a data list file (see the module docstring); relative paths are taken from its folder."""
    path = Path(path)
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"data list {path}: cannot read it ({err})") from err
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"data list {path}: must be a non-empty list of {{data: PATHS, profile: FILE}} entries")
    sources = []
    for index, entry in enumerate(entries):
        where = f"data list {path}, entry {index + 1}"
        if not isinstance(entry, dict) or "data" not in entry or set(entry) - {"data", "profile"}:
            raise ConfigError(f"{where}: must be a mapping with 'data' (a path or a list) and optionally 'profile', "
                              f"got {entry!r}")
        paths = entry["data"] if isinstance(entry["data"], list) else [entry["data"]]
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(f"{where}: 'data' must be a path or a non-empty list of paths, got {entry['data']!r}")
        profile = None
        if entry.get("profile") is not None:
            if not isinstance(entry["profile"], str):
                raise ConfigError(f"{where}: 'profile' must be a file path, got {entry['profile']!r}")
            profile = load_profile(path.parent / entry["profile"])
        sources.append(DataSource(tuple(path.parent / p for p in paths), profile))
    return sources


def resolve_sources(sources: Sequence[DataSource | Path | str]) -> list[tuple[Path, RobotProfile | None]]:
    """Every bag of ``sources`` with its profile, sorted by path (the batches of a seed do not depend on the
    order data is given in). Plain paths are sources without a profile. Every profile is checked against
    its bags, and all missing topics of all sources are reported in one :class:`ProfileError`; a bag reached
    through two different profiles is refused."""
    chosen: dict[Path, tuple[Path, RobotProfile | None]] = {}
    problems: list[str] = []
    for source in sources:
        if not isinstance(source, DataSource):
            source = DataSource((Path(source),))
        bags = find_bags(list(source.paths))
        if source.profile is not None:
            try:
                source.profile.check_bags(bags)
            except ProfileError as err:
                problems.append(str(err))
        for bag in bags:
            key = bag.resolve()
            if key in chosen and chosen[key][1] != source.profile:
                names = [p.name if p is not None else "no profile" for p in (chosen[key][1], source.profile)]
                raise ConfigError(f"bag {bag} is given twice, read through {names[0]} and through {names[1]}: "
                                  "give each bag once")
            chosen.setdefault(key, (bag, source.profile))
    if problems:
        raise ProfileError("\n".join(problems))
    return sorted(chosen.values(), key=lambda pair: pair[0])


def training_episodes(bags: Sequence[Path], twist_bags_as_keys: bool,
                      profiles: Sequence[RobotProfile | None] | None = None) -> tuple[list[Path], list[str]]:
    """The (bag, modality) pairs to train on: each bag with its profile's modality (or, without one, the
    modality its topics say), and with ``twist_bags_as_keys`` every twist bag a second time as ``keys``."""
    episodes = training_plan(list(zip(bags, profiles or [None] * len(bags))), twist_bags_as_keys)
    return [e.bag for e in episodes], [e.modality for e in episodes]


def training_plan(pairs: Sequence[tuple[Path, RobotProfile | None]], twist_bags_as_keys: bool) -> list[TrainingEpisode]:
    """:class:`TrainingEpisode` of every (bag, profile) pair, then (``twist_bags_as_keys``) of every twist
    bag again as ``keys``, read with the same topics and conventions."""
    episodes = []
    for bag, profile in pairs:
        if profile is None:
            episodes.append(TrainingEpisode(bag, modality_from_topics(bag_topics(bag), bag_path=bag)))
        else:
            episodes.append(TrainingEpisode(bag, profile.modality, profile.bag_topics(), profile.conventions))
    if twist_bags_as_keys:
        episodes += [TrainingEpisode(e.bag, "keys", e.topics, e.conventions) for e in episodes if e.modality == "twist"]
    return episodes
