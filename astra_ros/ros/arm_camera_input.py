"""Where an arm's camera is, for a model with end-effector maps (``arm_map_cells``): read from ``/tf_static``.

The model projects each commanded end-effector position through the camera's pose in the frame the
end-effector pose is given in (``astra_ros.model.arm_map``). A ROS robot publishes that chain on
``/tf_static`` (latched, transient local); the frames are the end-effector pose's ``frame_id`` and the
images' ``frame_id``. Until the chain is known the model takes the vector alone, as it was also trained.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from astra_ros.data.arm_camera import StaticTransform, chain_transform, static_transforms_of


class ArmCameraFromTf:
    """Collects ``/tf_static`` and the input frame ids; hands the camera-in-base pose to the models when known."""

    def __init__(self, models: list[Any], log: Callable[[str], None]) -> None:
        self._models = models
        self._log = log
        self._lock = threading.Lock()
        self._static: dict[str, StaticTransform] = {}  # by child frame: a later message replaces a transform
        self._base_frame: str | None = None
        self._camera_frame: str | None = None
        self._applied: np.ndarray | None = None
        self.source = "unknown (no /tf_static chain from the end-effector pose's frame to the image's yet)"

    def on_tf_static(self, message: Any) -> None:
        with self._lock:
            for transform in static_transforms_of(message):
                self._static[transform[1]] = transform
            self._update()

    def on_frames(self, base_frame: str | None = None, camera_frame: str | None = None) -> None:
        """The end-effector pose's and the images' frame ids as they arrive (cheap when unchanged)."""
        with self._lock:
            changed = False
            if base_frame and base_frame != self._base_frame:
                self._base_frame, changed = base_frame, True
            if camera_frame and camera_frame != self._camera_frame:
                self._camera_frame, changed = camera_frame, True
            if changed:
                self._update()

    def _update(self) -> None:
        if not (self._base_frame and self._camera_frame and self._static):
            return
        transform = chain_transform(list(self._static.values()), self._base_frame, self._camera_frame)
        if transform is None or (self._applied is not None and np.allclose(transform, self._applied)):
            return
        for model in self._models:
            model.set_camera_in_base(transform)  # one attribute: each model thread reads it whole per chunk
        self._applied = transform
        x, y, z = transform[:3, 3]
        self.source = f"/tf_static: {self._camera_frame} in {self._base_frame} at ({x:.3f}, {y:.3f}, {z:.3f}) m"
        self._log(f"end-effector maps: camera {self.source}")
