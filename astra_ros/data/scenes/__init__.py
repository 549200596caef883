"""Headless MuJoCo scenes for the three simulator scenarios, generated per seed, and their stepping.

* ``explore``: a free camera flies smooth random 6-DoF trajectories through a textured room with
  objects (camera modality).
* ``arm``: a 5-joint arm with a 2-finger gripper (position actuators) moves between random targets
  and pushes objects on a table, seen by a fixed camera (robot modality).
* ``rover``: a kinematic planar robot with an onboard camera follows random smooth twist commands
  (v_x, yaw rate) in a room with landmarks (twist modality).

Every random choice (textures, colours, object placement, lighting, trajectory) comes from the seed,
so the same seed gives the same episode and held-out seeds are new places.

Frames (REP-103 / REP-105): the world is z up; robot body frames are x forward, y left, z up; camera
poses are those of the *optical* frame: z forward (viewing direction), x right, y down.
Rendering uses ``MUJOCO_GL`` (set to ``egl`` here unless the caller chose another backend).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless by default; must be set before mujoco is imported

from astra_ros.data.scenes.arm import ArmScenario  # noqa: E402
from astra_ros.data.scenes.base import Scenario  # noqa: E402
from astra_ros.data.scenes.explore import ExploreScenario  # noqa: E402
from astra_ros.data.scenes.rover import RoverScenario  # noqa: E402
from astra_ros.data.scenes.types import BodyTwist, Pose, SimSettings, SimTick  # noqa: E402

SCENARIOS: tuple[str, ...] = ("explore", "arm", "rover")

_SCENARIO_CLASSES: dict[str, type[Scenario]] = {
    "explore": ExploreScenario,
    "arm": ArmScenario,
    "rover": RoverScenario,
}


def make_scenario(name: str, seed: int, settings: SimSettings = SimSettings()) -> Scenario:
    """Build scenario ``name`` (one of :data:`SCENARIOS`) for ``seed``."""
    if name not in _SCENARIO_CLASSES:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    return _SCENARIO_CLASSES[name](seed, settings)


__all__ = [
    "SCENARIOS",
    "ArmScenario",
    "BodyTwist",
    "ExploreScenario",
    "Pose",
    "RoverScenario",
    "Scenario",
    "SimSettings",
    "SimTick",
    "make_scenario",
]
