"""The base class of a simulated episode: a MuJoCo model and renderer, stepped tick by tick."""

from __future__ import annotations

from typing import Iterator

import mujoco
import numpy as np

from astra_ros.data.geometry import PinholeIntrinsics, matrix_to_quaternion
from astra_ros.data.scenes.types import Pose, SimSettings, SimTick


class Scenario:
    """Base class of a simulated episode: owns the MuJoCo model, data and renderer.

    Subclasses build their MJCF in ``__init__`` and implement :meth:`_advance` (one state tick) and
    :meth:`_tick_state`. Use as a context manager or call :meth:`close` to free the GL context.
    """

    name: str = ""
    camera_name: str = "camera"

    def __init__(self, mjcf: str, settings: SimSettings) -> None:
        self.settings = settings
        self.model = mujoco.MjModel.from_xml_string(mjcf)
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        self._camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera_name)
        mujoco.mj_forward(self.model, self.data)

    @property
    def intrinsics(self) -> PinholeIntrinsics:
        """Pinhole intrinsics of the rendered camera, from MuJoCo's vertical field of view."""
        return PinholeIntrinsics.from_vertical_fov(
            float(self.model.cam_fovy[self._camera_id]), self.settings.image_width, self.settings.image_height
        )

    def render(self) -> np.ndarray:
        """Render the scene camera: ``uint8 [H, W, 3]`` rgb."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.settings.image_height, self.settings.image_width)
        self._renderer.update_scene(self.data, camera=self._camera_id)
        return self._renderer.render().copy()

    def camera_pose(self) -> Pose:
        """Pose of the camera optical frame (z forward, x right, y down) in the world frame."""
        # MuJoCo cameras look along -z with y up; the optical frame flips y and z.
        world_from_mjcam = self.data.cam_xmat[self._camera_id].reshape(3, 3)
        world_from_optical = world_from_mjcam @ np.diag([1.0, -1.0, -1.0])
        return Pose(self.data.cam_xpos[self._camera_id].copy(), matrix_to_quaternion(world_from_optical))

    def ticks(self) -> Iterator[SimTick]:
        """Run the episode: yield one :class:`SimTick` per state tick, with an image on camera ticks."""
        ticks_per_image = self.settings.state_rate_hz // self.settings.camera_rate_hz
        tick_seconds = 1.0 / self.settings.state_rate_hz
        for tick in range(self.settings.num_ticks):
            if tick > 0:
                self._advance(tick_seconds)
            image = self.render() if tick % ticks_per_image == 0 else None
            yield self._tick_state(self.settings.tick_stamp_ns(tick), image)

    def advance(self, seconds: float) -> None:
        """Advance the scene by one state tick of ``seconds`` [s] (for live drivers such as the sim node)."""
        self._advance(seconds)

    def state(self, stamp_ns: int, render: bool) -> SimTick:
        """The current state as a :class:`SimTick` stamped ``stamp_ns``, with a rendered image if ``render``."""
        return self._tick_state(stamp_ns, self.render() if render else None)

    def close(self) -> None:
        """Free the renderer's GL context."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "Scenario":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _advance(self, seconds: float) -> None:
        raise NotImplementedError

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        raise NotImplementedError
