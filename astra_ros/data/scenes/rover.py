"""``rover``: a kinematic planar robot with an onboard camera follows smooth random (v_x, yaw rate) commands."""

from __future__ import annotations

import numpy as np

from astra_ros.data.scenes.mjcf import _mjcf_document, _room_mjcf, _room_objects_mjcf, _vivid_rgba
from astra_ros.data.scenes.rig import _KinematicRig, _RigScenario
from astra_ros.data.scenes.types import SimSettings, SimTick


class RoverScenario(_RigScenario):
    """A kinematic planar robot with an onboard camera, driven by smooth random (v_x, yaw rate) commands."""

    name = "rover"
    camera_height_m = 0.3  # [m] camera above the floor
    camera_forward_m = 0.18  # [m] camera ahead of base_link

    def __init__(self, seed: int, settings: SimSettings = SimSettings()) -> None:
        rng = np.random.default_rng([seed, 3])
        half_x = float(rng.uniform(2.5, 4.0))
        half_y = float(rng.uniform(2.5, 4.0))
        height = float(rng.uniform(2.2, 3.0))
        room_assets, room_bodies = _room_mjcf(rng, half_x, half_y, height, settings)
        object_assets, object_geoms, obstacles = _room_objects_mjcf(
            rng, half_x, half_y, int(rng.integers(12, 20)), keep_clear_radius=0.8
        )
        fovy = float(rng.uniform(60.0, 80.0))
        camera_tilt = float(rng.uniform(0.0, 12.0))  # [deg] downwards
        tilt = np.radians(camera_tilt)
        # Body frame x forward, y left, z up; the camera looks along body x tilted down by camera_tilt.
        camera_y_axis = f"{np.sin(tilt):.5f} 0 {np.cos(tilt):.5f}"
        chassis_rgba = _vivid_rgba(rng)
        rover_body = f"""<body name="rover" mocap="true">
  <geom type="box" pos="-0.05 0 0.12" size="0.2 0.14 0.06" rgba="{chassis_rgba}" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="0.08 0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="0.08 -0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="-0.18 0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="-0.18 -0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <camera name="camera" pos="{self.camera_forward_m} 0 {self.camera_height_m}" xyaxes="0 -1 0 {camera_y_axis}" fovy="{fovy:.2f}"/>
</body>"""
        mjcf = _mjcf_document(room_assets + "\n" + object_assets, room_bodies + "\n" + object_geoms + "\n" + rover_body, settings)
        super().__init__(mjcf, settings)
        self.rig = _KinematicRig(rng, half_x, half_y, obstacles, planar=True, height_range_m=(0.0, 0.0), pitch_limit_rad=0.0)
        self._place_rig()

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        twist = self.rig.body_twist()
        return SimTick(
            stamp_ns,
            self.camera_pose(),
            image,
            command=twist,
            odom_pose=self.rig.body_pose(),
            odom_twist=twist,
        )
