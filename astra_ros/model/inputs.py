"""Checks of what a caller hands :class:`~astra_ros.model.world_model.WorldModel`, and the conversion of
frames and actions to tensors: one clear error per mistake, before any state changes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class InputChecks:
    """Mixed into ``WorldModel``; uses its ``config``, ``resolution``, ``modalities`` and stream state."""

    def _check_modality(self, modality: str | None) -> None:
        if modality not in self.config.modalities:
            raise ValueError(f"unknown action modality {modality!r}; this model knows {self.modalities}")

    def _require_started(self, what: str) -> None:
        if self._modality is None:
            raise ValueError(f"{what}() before start(): call start(frames, actions, modality) first")

    def _require_whole_chunks(self, what: str) -> None:
        """A prediction starts after the last whole chunk: with frames pending it would start at a
        time already partly observed."""
        if self._pending_frames:
            raise ValueError(f"{len(self._pending_frames)} observed frames are waiting for their chunk to fill; "
                             f"observe {self.config.chunk_frames - len(self._pending_frames)} more before {what}()")

    def _frames_to_tensor(self, frames: np.ndarray, name: str) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float (T, 3, h, w) in [-1, 1] at the model's resolution."""
        if not isinstance(frames, np.ndarray):
            raise ValueError(f"{name} must be a numpy uint8 array (T, H, W, 3), got {type(frames).__name__}")
        if frames.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 (T, H, W, 3), got dtype {frames.dtype}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) == 0:
            raise ValueError(f"{name} must have shape (T, H, W, 3) with T, H, W > 0, got {frames.shape}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if tuple(x.shape[-2:]) != tuple(self.resolution):
            x = F.interpolate(x, size=self.resolution, mode="bilinear", antialias=True, align_corners=False)
        return x.clamp(-1, 1)

    def _actions_to_tensor(self, actions: np.ndarray, modality: str, rows: int | None, name: str,
                           batched: bool = False) -> torch.Tensor:
        dim = self.config.modalities[modality]
        arr = np.asarray(actions)
        want = f"(B, N, {dim})" if batched else f"(T, {dim})"
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name} must be real numbers {want} for modality '{modality}', got dtype {arr.dtype}")
        if arr.ndim != (3 if batched else 2) or arr.shape[-1] != dim:
            raise ValueError(f"{name} for modality '{modality}' must have shape {want}, got {arr.shape}")
        if rows is not None and arr.shape[0] != rows:
            raise ValueError(f"{name} must have one row per frame: {rows} frames but {arr.shape[0]} action rows")
        with np.errstate(over="ignore"):
            arr32 = arr.astype(np.float32)
        if not np.isfinite(arr32).all():  # after the cast: a finite 1e39 is inf in float32
            raise ValueError(f"{name} contain NaN or inf values, or values beyond float32's range")
        return torch.from_numpy(arr32)
