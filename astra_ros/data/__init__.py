"""Data for astra_ros, without rclpy: simulator scenes, bag writing and reading, clip datasets.

Submodules: :mod:`~astra_ros.data.geometry` (pose maths), :mod:`~astra_ros.data.actions` (action vectors
per modality), :mod:`~astra_ros.data.images` (Image bytes to numpy), :mod:`~astra_ros.data.bags`
(bag to episode), :mod:`~astra_ros.data.clips` (clip dataset), :mod:`~astra_ros.data.scenes` (a package: one module per scenario) and
:mod:`~astra_ros.data.record` (MuJoCo simulation to bags; these import mujoco).
"""

from astra_ros.data.actions import KEY_NAMES, MODALITY_DIMS, KeyThresholds, scenario_modality
from astra_ros.data.bags import BagError, BagTopics, Episode, ReadStats, bag_topics, modality_from_topics, read_episode

__all__ = [
    "KEY_NAMES",
    "MODALITY_DIMS",
    "BagError",
    "BagTopics",
    "Episode",
    "KeyThresholds",
    "ReadStats",
    "bag_topics",
    "modality_from_topics",
    "read_episode",
    "scenario_modality",
]
