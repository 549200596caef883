"""Pixel-aligned robot actions: the commanded end-effector position drawn where the camera will see it.

A ``robot`` action is the end effector's pose in the arm's base frame, ten numbers the network would
have to learn to project through a camera that every scene places anew. With the camera's pose in
the base frame and its intrinsics known, the projection is geometry: each frame's end-effector
position is projected to a pixel and drawn as a Gaussian blob on a fine grid, and every token gets
the part of that map under its patch (``cells x cells`` values). The token then knows whether the
arm will be at *its* place in that frame, instead of the whole frame sharing one action vector.

The maps enter the transformer through a zero-initialised projector added to each token's action
feature (``AstraTransformer.arm_map``), so a checkpoint trained without them keeps its function
until trained with them. Frames whose actions are dropped, or whose camera is unknown, get a zero map.
"""

from __future__ import annotations

import numpy as np
import torch

# Blob radius (standard deviation) in map cells: one cell is a quarter token side, 4 px at 64 px.
BLOB_SIGMA_CELLS = 1.0
# Nearer than this to the camera plane [m] a point is not drawn (behind the camera, or degenerate).
MIN_DEPTH_M = 1e-3


def projection_matrix(intrinsics: np.ndarray | torch.Tensor, camera_in_base: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float64 ``(..., 3, 4)`` mapping homogeneous base-frame points [m] to pixels: ``K @ inv(T_base_camera)[:3]``.

    ``intrinsics`` ``(..., 3, 3)`` [px] at the model's resolution; ``camera_in_base`` ``(..., 4, 4)``: the
    camera *optical* frame (z forward, x right, y down) in the robot's base frame.
    """
    K = torch.as_tensor(np.asarray(intrinsics) if not torch.is_tensor(intrinsics) else intrinsics, dtype=torch.float64)
    T = torch.as_tensor(np.asarray(camera_in_base) if not torch.is_tensor(camera_in_base) else camera_in_base,
                        dtype=torch.float64)
    if K.shape[-2:] != (3, 3) or T.shape[-2:] != (4, 4):
        raise ValueError(f"intrinsics must be (..., 3, 3) and camera_in_base (..., 4, 4), got {tuple(K.shape)}, "
                         f"{tuple(T.shape)}")
    return K @ torch.linalg.inv(T)[..., :3, :]


def arm_token_maps(positions: torch.Tensor, projection: torch.Tensor, resolution: tuple[int, int],
                   token_grid: tuple[int, int], cells: int) -> torch.Tensor:
    """Per-token end-effector maps ``(B, F, rows * cols, cells * cells)`` in [0, 1].

    ``positions`` ``(B, F, 3)`` [m] in the base frame; ``projection`` ``(B, 3, 4)`` from
    :func:`projection_matrix` (NaN rows: camera unknown, zero maps); ``resolution`` (H, W) [px] the
    intrinsics refer to; ``token_grid`` (rows, cols) tokens per frame; tokens in row-major order, each
    token's cells row-major, as the patch embedding orders them.
    """
    b, f, _ = positions.shape
    rows, cols = token_grid
    height, width = resolution
    points = torch.cat([positions.double(), torch.ones(b, f, 1, dtype=torch.float64, device=positions.device)], -1)
    image = torch.einsum("bij,bfj->bfi", projection.double().to(positions.device), points)  # (B, F, 3)
    depth = image[..., 2]
    visible = torch.isfinite(image).all(-1) & (depth > MIN_DEPTH_M)
    safe_depth = torch.where(visible, depth, torch.ones_like(depth))
    u = torch.where(visible, image[..., 0] / safe_depth, torch.zeros_like(depth))  # [px]
    v = torch.where(visible, image[..., 1] / safe_depth, torch.zeros_like(depth))
    cell_h, cell_w = height / (rows * cells), width / (cols * cells)  # [px]
    ys = (torch.arange(rows * cells, dtype=torch.float64, device=positions.device) + 0.5) * cell_h
    xs = (torch.arange(cols * cells, dtype=torch.float64, device=positions.device) + 0.5) * cell_w
    dy = (ys[None, None, :] - v[..., None]) / (BLOB_SIGMA_CELLS * cell_h)  # (B, F, rows*cells)
    dx = (xs[None, None, :] - u[..., None]) / (BLOB_SIGMA_CELLS * cell_w)
    blob = torch.exp(-0.5 * (dy[..., :, None] ** 2 + dx[..., None, :] ** 2))  # (B, F, Y, X)
    blob = blob * visible[..., None, None]
    blob = blob.reshape(b, f, rows, cells, cols, cells).permute(0, 1, 2, 4, 3, 5)
    return blob.reshape(b, f, rows * cols, cells * cells).float()


class ArmMapInputs:
    """The :class:`~astra_ros.model.world_model.WorldModel` side: the camera's pose in the arm's base frame,
    set per stream like the intrinsics, and the maps of a chunk's ``robot`` actions."""

    _camera_in_base: torch.Tensor | None = None

    def set_camera_in_base(self, camera_in_base: np.ndarray | torch.Tensor | None) -> None:
        """The camera optical frame (z forward, x right, y down) in the robot's base frame, (4, 4) [m], for a
        model with ``arm_map_cells``; None: unknown (``robot`` actions then enter as the vector alone).
        Kept across ``start``; the projection uses the intrinsics set with ``set_intrinsics``."""
        if camera_in_base is None:
            self._camera_in_base = None
            return
        matrix = torch.as_tensor(np.asarray(camera_in_base, dtype=np.float64))
        if (matrix.shape != (4, 4) or not torch.isfinite(matrix).all()
                or not torch.allclose(matrix[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
                or not torch.allclose(matrix[:3, :3] @ matrix[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-4)):
            raise ValueError("camera_in_base must be a finite rigid transform (4, 4) with a rotation block, got "
                             f"{np.asarray(camera_in_base).tolist()}")
        self._camera_in_base = matrix

    @property
    def camera_in_base(self) -> torch.Tensor | None:
        return self._camera_in_base

    def _chunk_arm_maps(self, actions: torch.Tensor, dropped: torch.Tensor, modality: str | None) -> torch.Tensor | None:
        """Maps (batch, frames, n, cells**2) of padded raw ``actions`` (batch, frames, Dmax); None when the model
        has none, the actions are not ``robot`` or the camera is not known. Dropped frames get zero maps."""
        cfg = self.config
        if not cfg.arm_map_cells or modality != "robot" or self._camera_in_base is None:
            return None
        projection = projection_matrix(self.intrinsics, self._camera_in_base)
        maps = arm_token_maps(actions[..., :3], projection.expand(actions.shape[0], 3, 4), cfg.resolution,
                              cfg.token_grid, cfg.arm_map_cells)
        return maps * (~dropped)[..., None, None].to(maps.device)
