"""Finding ROS 2 bags on disk and listing their topics (rosbags, no rclpy)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rosbags.highlevel import AnyReader

logger = logging.getLogger(__name__)

BAG_FILE_SUFFIXES = (".mcap", ".db3")  # rosbag2's storage files (MCAP, SQLite)
# An episode astra-sim record has not finished lives under "<bag>.partial" (astra_ros.data.record).
PARTIAL_SUFFIX = ".partial"


class BagError(ValueError):
    """A bag cannot be turned into an episode; the message names the bag, the topic and the stamp."""


def bag_topics(bag_path: Path | str) -> dict[str, str]:
    """Topics of a bag and their message types, ``{topic: msgtype}``. Raises :class:`BagError`."""
    path = Path(bag_path)
    try:
        with AnyReader([path]) as reader:
            return {connection.topic: connection.msgtype for connection in reader.connections}
    except Exception as error:  # rosbags raises several types for unreadable bags
        raise BagError(f"cannot open bag {path}: {error}") from error


def _files_under(root: Path):
    """Every file below ``root``, following symlinked folders (a data folder of links to bags is
    common, and ``Path.rglob`` skips them before Python 3.13), each real folder visited once so that
    a link loop ends."""
    seen: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        for name in sorted(names):
            yield Path(folder) / name


def find_bags(paths: list[Path] | list[str]) -> list[Path]:
    """The bags named by ``paths``: each a bag directory (holding metadata.yaml), a bare .mcap/.db3
    file, or a folder searched for them. In the order given (a folder's bags sorted), each bag once
    however many paths reach it, and without the ``.partial`` leftovers of an interrupted
    ``astra-sim record`` (skipped with a warning). Raises :class:`BagError`."""
    found: dict[Path, Path] = {}  # resolved -> as first reached
    for root in map(Path, paths):
        if not root.exists():
            raise BagError(f"bag or data directory {root} does not exist")
        if root.is_file():
            if root.suffix not in BAG_FILE_SUFFIXES:
                raise BagError(f"{root} is not a bag: a bag file is {' or '.join(BAG_FILE_SUFFIXES)}")
            reached = [root.parent if (root.parent / "metadata.yaml").is_file() else root]
        elif (root / "metadata.yaml").is_file():
            reached = [root]
        else:
            files = list(_files_under(root))
            bag_folders = {f.parent for f in files if f.name == "metadata.yaml"}
            bags = bag_folders | {f for f in files if f.suffix in BAG_FILE_SUFFIXES and f.parent not in bag_folders}
            reached = sorted(bags)
        for bag in reached:
            found.setdefault(bag.resolve(), bag)
    skipped = [bag for resolved, bag in found.items() if any(part.endswith(PARTIAL_SUFFIX) for part in resolved.parts)]
    if skipped:
        logger.warning("skipping %d unfinished recording(s) (%s): %s", len(skipped), PARTIAL_SUFFIX,
                       ", ".join(str(b) for b in skipped[:3]))
    bags = [bag for bag in found.values() if bag not in skipped]
    if not bags:
        raise BagError(f"no ROS 2 bags found under {', '.join(str(p) for p in paths)}")
    return bags
