"""``explore``: a free camera flies smooth random 6-DoF trajectories through a textured room with objects."""

from __future__ import annotations

import numpy as np

from astra_ros.data.scenes.mjcf import _mjcf_document, _room_mjcf, _room_objects_mjcf
from astra_ros.data.scenes.rig import _KinematicRig, _RigScenario
from astra_ros.data.scenes.types import SimSettings, SimTick


class ExploreScenario(_RigScenario):
    """A free camera flying smooth random 6-DoF trajectories through a textured room with objects."""

    name = "explore"

    def __init__(self, seed: int, settings: SimSettings = SimSettings()) -> None:
        rng = np.random.default_rng([seed, 1])
        half_x = float(rng.uniform(2.5, 4.0))
        half_y = float(rng.uniform(2.5, 4.0))
        height = float(rng.uniform(2.6, 3.4))
        room_assets, room_bodies = _room_mjcf(rng, half_x, half_y, height, settings)
        object_assets, object_geoms, obstacles = _room_objects_mjcf(
            rng, half_x, half_y, int(rng.integers(12, 20)), keep_clear_radius=0.9
        )
        fovy = float(rng.uniform(55.0, 75.0))
        # The camera rides a mocap body whose frame is the REP-103 body (x forward, y left, z up);
        # MuJoCo's camera x = body -y (right), camera y = body z (up), so it looks along body x.
        rig_body = (
            '<body name="rig" mocap="true">'
            f'<camera name="camera" pos="0 0 0" xyaxes="0 -1 0 0 0 1" fovy="{fovy:.2f}"/>'
            "</body>"
        )
        mjcf = _mjcf_document(room_assets + "\n" + object_assets, room_bodies + "\n" + object_geoms + "\n" + rig_body, settings)
        super().__init__(mjcf, settings)
        self.rig = _KinematicRig(
            rng, half_x, half_y, obstacles, planar=False, height_range_m=(0.5, min(2.0, height - 0.4)), pitch_limit_rad=0.35
        )
        self._place_rig()

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        return SimTick(stamp_ns, self.camera_pose(), image, command=self.rig.body_twist())
