"""Training with end-effector maps (``model.arm_map_cells``, model/arm_map.py): each batch's maps, and the
new projector's own learning rate."""

from __future__ import annotations

import numpy as np
import torch

from astra_ros.model import WorldModel
from astra_ros.model.arm_map import arm_token_maps, projection_matrix

from .recipe import TrainRecipe


class ArmMapBatches:
    """Maps per token for the ``robot`` clips of each batch, with ``arm_map_dropout`` drawn from a generator of
    its own, so that turning maps on leaves the batches a run draws as they were (a resumed run restarts it:
    its dropout draws differ, its batches do not)."""

    def __init__(self, model: WorldModel, recipe: TrainRecipe) -> None:
        self.model, self.recipe = model, recipe
        self._generator = np.random.default_rng([recipe.seed, 7])

    def __call__(self, actions: torch.Tensor, ids: torch.Tensor, intrinsics: torch.Tensor,
                 camera_in_base: torch.Tensor) -> torch.Tensor:
        """(B, T, n, cells**2) of each ``robot`` clip whose camera is known (``intrinsics`` (B, 3, 3) already
        completed, ``camera_in_base`` (B, 4, 4), NaN where unknown); zeros for the rest and for the clips drawn
        without them (so that a stream whose camera is not given still predicts from the vector alone)."""
        cfg = self.model.config
        robot = ids == self.model.transformer.action_encoder.modality_index("robot")
        keep = torch.from_numpy(self._generator.random(len(ids)) >= self.recipe.arm_map_dropout)
        projection = projection_matrix(intrinsics, camera_in_base)
        usable = robot & keep & torch.isfinite(projection).flatten(1).all(dim=1)
        projection[~usable] = float("nan")
        return arm_token_maps(actions[..., :3], projection, cfg.resolution, cfg.token_grid, cfg.arm_map_cells)


def world_param_groups(model: WorldModel, recipe: TrainRecipe) -> list[dict]:
    """The transformer's parameters; a new end-effector map projector in a group of its own when the recipe
    gives it a faster rate (``arm_map_lr_multiple``): starting from zero, at the body's fine-tuning rate it
    moves only about one learning rate per step."""
    arm_map = model.transformer.arm_map
    if arm_map is None or recipe.arm_map_lr_multiple == 1.0:
        return [{"params": list(model.transformer.parameters())}]
    own = {id(p) for p in arm_map.parameters()}
    return [{"params": [p for p in model.transformer.parameters() if id(p) not in own]},
            {"params": list(arm_map.parameters()), "lr_multiple": recipe.arm_map_lr_multiple}]
