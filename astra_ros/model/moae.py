"""MoAE: the mixture of action experts that turns any action modality into shared features.

Each modality has its own linear projector into a shared ``action_dim`` space; a linear router
picks the top-1 of ``num_experts`` small MLPs per frame and weights its output by the router's
softmax score (so the router gets gradients). A Switch-style load-balancing loss keeps every
expert in use. Frames whose actions are dropped (action-free guidance) get a learned null
feature instead.

Raw actions differ in scale by orders of magnitude (a rover's twist moves 0.02 m per frame, a
camera rotation entry sits near 1.0), so each modality's actions are standardised with a mean and
standard deviation per dimension measured on the training data (``action_mean``/``action_std``,
saved with the weights; identity until measured) before its projector.

Optionally (``action_motion``) each frame also gets its *motion* since the frame before: the camera's
relative transform ``inv(T_prev) @ T`` (minus the identity, so standing still is zero) or the change
of any other modality's vector. A camera pose relative to the clip's first frame says where the camera
is, but what a frame looks like next to the one before it depends on how far it moved since, which the
network would otherwise have to work out by comparing frames through attention. The motion enters
through its own zero-initialised projector, so adding it leaves a trained model's function unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class RoutingInfo:
    """What the router did on one batch."""

    expert_index: torch.Tensor  # (B, F) long: chosen expert per frame (-1 where actions were dropped)
    load_balance_loss: torch.Tensor  # scalar; num_experts * sum_e f_e * P_e, 1.0 when perfectly uniform


def load_balance_loss(probs: torch.Tensor, choice: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch-Transformer balance loss: E * sum_e (fraction of tokens sent to e) * (mean prob of e).

    probs (N, E) router softmax, choice (N,) chosen experts. It is 1.0 when tokens and
    probability mass are spread evenly and grows towards E as routing collapses on one expert;
    gradients flow through ``probs``.
    """
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    frac = torch.bincount(choice, minlength=num_experts).to(probs.dtype) / probs.shape[0]
    return num_experts * (frac * probs.mean(dim=0)).sum()


# Smallest standard deviation an action dimension is divided by (1 cm, 0.01 rad, ...): a dimension that
# barely varies in the training data (a rover's lateral velocity) is not blown up into noise.
ACTION_STD_FLOOR = 0.01
# The same for a frame's motion (1 mm, 0.001 rad per frame).
MOTION_STD_FLOOR = 0.001


def action_motion(actions: torch.Tensor, camera_rows: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Each frame's motion since the frame before, (B, F, Dmax) from actions (B, F, Dmax).

    ``camera_rows`` (B,) bool marks clips of camera actions (flattened 3x4 ``[R|t]``): their motion is
    ``inv(T_prev) @ T`` minus ``[I|0]``, the same whatever frame the poses are expressed in. Other rows
    get ``a - a_prev``. ``previous`` (B, Dmax) is the action of the frame before frame 0; without it
    frame 0's motion is zero (unknown).
    """
    first = actions[:, :1] if previous is None else previous[:, None].to(actions.dtype)
    before = torch.cat([first, actions[:, :-1]], dim=1)
    motion = actions - before
    if camera_rows.any():
        pose = actions[camera_rows][..., :12].unflatten(-1, (3, 4))  # (N, F, 3, 4)
        pose_before = before[camera_rows][..., :12].unflatten(-1, (3, 4))
        rot_before_t = pose_before[..., :3].transpose(-1, -2)
        relative_rot = rot_before_t @ pose[..., :3] - torch.eye(3, dtype=actions.dtype, device=actions.device)
        relative_t = rot_before_t @ (pose[..., 3:] - pose_before[..., 3:])
        camera = torch.cat([relative_rot, relative_t], dim=-1).flatten(-2)  # (N, F, 12)
        motion[camera_rows] = torch.cat([camera, motion[camera_rows][..., 12:]], dim=-1)
    if previous is None:
        motion[:, 0] = 0.0  # exactly zero (the camera's R^T R - I is only zero up to rounding)
    return motion


class MixtureOfActionExperts(nn.Module):
    def __init__(self, modalities: dict[str, int], action_dim: int, num_experts: int, expert_hidden_dim: int,
                 motion: bool = False) -> None:
        super().__init__()
        self.modality_names = list(modalities)
        self.modality_dims = dict(modalities)
        self.max_action_size = max(modalities.values())
        self.num_experts = num_experts
        # One projector per modality, in the config's modality order (a ModuleDict cannot hold "keys").
        self.projectors = nn.ModuleList(nn.Linear(d, action_dim) for d in modalities.values())
        self.router = nn.Linear(action_dim, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(action_dim, expert_hidden_dim), nn.GELU(), nn.Linear(expert_hidden_dim, action_dim))
            for _ in range(num_experts)
        )
        self.null_action = nn.Parameter(torch.zeros(action_dim))  # the "no action" feature for guidance
        # Per-modality standardisation of the raw actions (rows: modalities, zero-padded to the widest).
        self.register_buffer("action_mean", torch.zeros(len(modalities), self.max_action_size))
        self.register_buffer("action_std", torch.ones(len(modalities), self.max_action_size))
        # Optional per-frame motion input: its own projector per modality (zero at init) and scale.
        self.uses_motion = motion
        if motion:
            self.motion_projectors = nn.ModuleList(nn.Linear(d, action_dim) for d in modalities.values())
            for proj in self.motion_projectors:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
            self.register_buffer("motion_std", torch.ones(len(modalities), self.max_action_size))
        # Running count of frames routed to each expert, per modality (for logs and diagnostics).
        self.register_buffer("expert_counts", torch.zeros(len(modalities), num_experts), persistent=False)

    def modality_index(self, name: str) -> int:
        if name not in self.modality_dims:
            raise ValueError(f"unknown action modality {name!r}; this model knows {self.modality_names}")
        return self.modality_names.index(name)

    def motion(self, actions: torch.Tensor, modality_ids: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame motion (B, F, Dmax) of actions (B, F, Dmax); see :func:`action_motion`."""
        camera = self.modality_index("camera") if "camera" in self.modality_dims else -1
        return action_motion(actions, modality_ids == camera, previous)

    def forward(
        self, actions: torch.Tensor, modality_ids: torch.Tensor, dropped: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RoutingInfo]:
        """actions (B, F, Dmax) zero-padded, modality_ids (B,), dropped (B, F) bool -> features (B, F, A).

        ``motion`` (B, F, Dmax) is each frame's motion (:meth:`motion`); used when the module was built
        with ``motion=True``, where None means no motion is known (zero).
        """
        b, f, _ = actions.shape
        # 1. Per-modality projection into the shared space.
        shared = actions.new_zeros(b, f, self.null_action.numel())
        for idx, name in enumerate(self.modality_names):
            rows = modality_ids == idx
            if rows.any():
                d = self.modality_dims[name]
                normalised = (actions[rows][..., :d] - self.action_mean[idx, :d]) / self.action_std[idx, :d]
                projected = self.projectors[idx](normalised)
                if self.uses_motion:
                    moved = (motion[rows][..., :d] if motion is not None
                             else actions.new_zeros(int(rows.sum()), f, d))
                    projected = projected + self.motion_projectors[idx](moved / self.motion_std[idx, :d])
                shared[rows] = projected.to(shared.dtype)  # autocast computes the projection in bf16
        if dropped is None:
            dropped = torch.zeros(b, f, dtype=torch.bool, device=actions.device)
        keep = ~dropped
        tokens = shared[keep]  # (N, A) frames that carry real actions
        # 2. Top-1 routing.
        probs = self.router(tokens).softmax(dim=-1)  # (N, E)
        score, choice = probs.max(dim=-1)  # (N,)
        routed = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            sel = choice == e
            if sel.any():
                routed[sel] = (score[sel, None] * expert(tokens[sel])).to(routed.dtype)
        balance = load_balance_loss(probs, choice, self.num_experts)
        features = self.null_action.expand(b, f, -1).clone()
        features[keep] = routed.to(features.dtype)
        expert_index = torch.full((b, f), -1, dtype=torch.long, device=actions.device)
        expert_index[keep] = choice
        self._count(expert_index, modality_ids)
        return features, RoutingInfo(expert_index=expert_index, load_balance_loss=balance)

    @torch.no_grad()
    def set_action_statistics(self, samples: dict[str, np.ndarray]) -> dict[str, tuple[list[float], list[float]]]:
        """Standardise each modality in ``samples`` (name -> raw actions ``[N, D]``, or windows ``[N, T, D]``)
        by their mean and std.

        The std is floored at :data:`ACTION_STD_FLOOR`. Each projector is rescaled so that its output for
        any raw action is unchanged: a trained model computes the same function afterwards, and only the
        optimisation sees well-scaled inputs. Modalities not in ``samples`` keep their statistics.
        With motion inputs and windows given, the motion's std within the windows is measured too (its
        projector rescaled the same way). Returns the new (mean, std) per measured modality.
        """
        measured = {}
        for name, values in samples.items():
            idx = self.modality_index(name)
            d = self.modality_dims[name]
            values = np.asarray(values, dtype=np.float64)
            if self.uses_motion and values.ndim == 3 and values.shape[1] > 1:
                self._set_motion_statistics(idx, values)
            values = values.reshape(-1, d)
            values = values[np.isfinite(values).all(axis=1)]
            if len(values) < 2:
                raise ValueError(f"need at least 2 finite {name} actions to measure their statistics, got {len(values)}")
            # Reported from the CPU copies; the buffers may live on an accelerator.
            mean_cpu = torch.as_tensor(values.mean(axis=0), dtype=self.action_mean.dtype)
            std_cpu = torch.as_tensor(values.std(axis=0), dtype=self.action_std.dtype).clamp_min(ACTION_STD_FLOOR)
            mean, std = mean_cpu.to(self.action_mean.device), std_cpu.to(self.action_std.device)
            old_mean, old_std = self.action_mean[idx, :d].clone(), self.action_std[idx, :d].clone()
            proj = self.projectors[idx]
            # W' (x - m1) / s1 + b' == W (x - m0) / s0 + b for every x:
            #   W' = W * s1 / s0 (per input column), b' = b + W (m1 - m0) / s0.
            proj.bias.add_(proj.weight @ ((mean - old_mean) / old_std))
            proj.weight.mul_((std / old_std)[None, :])
            self.action_mean[idx, :d] = mean
            self.action_std[idx, :d] = std
            measured[name] = (mean_cpu.tolist(), std_cpu.tolist())
        return measured

    @torch.no_grad()
    def _set_motion_statistics(self, idx: int, windows: np.ndarray) -> None:
        """Motion std of modality ``idx`` over windows ``[N, T, D]`` (frames 1..T-1 of each); the motion
        projector is rescaled so that its output for any motion is unchanged."""
        d = self.modality_dims[self.modality_names[idx]]
        windows = windows[np.isfinite(windows).all(axis=(1, 2))]
        if len(windows) == 0:
            return
        padded = torch.zeros(len(windows), windows.shape[1], self.max_action_size, dtype=torch.float64)
        padded[..., :d] = torch.as_tensor(windows)
        ids = torch.full((len(windows),), idx, dtype=torch.long)
        motion = self.motion(padded, ids)[:, 1:, :d].reshape(-1, d)
        # Measured on the CPU in float64; the buffers may live on an accelerator.
        std = motion.std(dim=0, correction=0).to(self.motion_std).clamp_min(MOTION_STD_FLOOR)
        self.motion_projectors[idx].weight.mul_((std / self.motion_std[idx, :d])[None, :])
        self.motion_std[idx, :d] = std

    @torch.no_grad()
    def _count(self, expert_index: torch.Tensor, modality_ids: torch.Tensor) -> None:
        for row, m in zip(expert_index, modality_ids.tolist()):
            used = row[row >= 0]
            self.expert_counts[m] += torch.bincount(used, minlength=self.num_experts).to(self.expert_counts.dtype)

    def expert_usage(self) -> dict[str, list[float]]:
        """Fraction of frames each modality sent to each expert since the counts were last reset."""
        usage = {}
        for idx, name in enumerate(self.modality_names):
            counts = self.expert_counts[idx]
            total = float(counts.sum())
            usage[name] = [float(c) / total if total else 0.0 for c in counts]
        return usage
