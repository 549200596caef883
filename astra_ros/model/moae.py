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


class MixtureOfActionExperts(nn.Module):
    def __init__(self, modalities: dict[str, int], action_dim: int, num_experts: int, expert_hidden_dim: int) -> None:
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
        # Running count of frames routed to each expert, per modality (for logs and diagnostics).
        self.register_buffer("expert_counts", torch.zeros(len(modalities), num_experts), persistent=False)

    def modality_index(self, name: str) -> int:
        if name not in self.modality_dims:
            raise ValueError(f"unknown action modality {name!r}; this model knows {self.modality_names}")
        return self.modality_names.index(name)

    def forward(
        self, actions: torch.Tensor, modality_ids: torch.Tensor, dropped: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RoutingInfo]:
        """actions (B, F, Dmax) zero-padded, modality_ids (B,), dropped (B, F) bool -> features (B, F, A)."""
        b, f, _ = actions.shape
        # 1. Per-modality projection into the shared space.
        shared = actions.new_zeros(b, f, self.null_action.numel())
        for idx, name in enumerate(self.modality_names):
            rows = modality_ids == idx
            if rows.any():
                d = self.modality_dims[name]
                normalised = (actions[rows][..., :d] - self.action_mean[idx, :d]) / self.action_std[idx, :d]
                shared[rows] = self.projectors[idx](normalised)
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
                routed[sel] = score[sel, None] * expert(tokens[sel])
        balance = load_balance_loss(probs, choice, self.num_experts)
        features = self.null_action.expand(b, f, -1).clone()
        features[keep] = routed
        expert_index = torch.full((b, f), -1, dtype=torch.long, device=actions.device)
        expert_index[keep] = choice
        self._count(expert_index, modality_ids)
        return features, RoutingInfo(expert_index=expert_index, load_balance_loss=balance)

    @torch.no_grad()
    def set_action_statistics(self, samples: dict[str, np.ndarray]) -> dict[str, tuple[list[float], list[float]]]:
        """Standardise each modality in ``samples`` (name -> raw actions ``[N, D]``) by their mean and std.

        The std is floored at :data:`ACTION_STD_FLOOR`. Each projector is rescaled so that its output for
        any raw action is unchanged: a trained model computes the same function afterwards, and only the
        optimisation sees well-scaled inputs. Modalities not in ``samples`` keep their statistics.
        Returns the new (mean, std) per measured modality.
        """
        measured = {}
        for name, values in samples.items():
            idx = self.modality_index(name)
            d = self.modality_dims[name]
            values = np.asarray(values, dtype=np.float64).reshape(-1, d)
            values = values[np.isfinite(values).all(axis=1)]
            if len(values) < 2:
                raise ValueError(f"need at least 2 finite {name} actions to measure their statistics, got {len(values)}")
            mean = torch.as_tensor(values.mean(axis=0), dtype=self.action_mean.dtype, device=self.action_mean.device)
            std = torch.as_tensor(values.std(axis=0), dtype=self.action_std.dtype,
                                  device=self.action_std.device).clamp_min(ACTION_STD_FLOOR)
            old_mean, old_std = self.action_mean[idx, :d].clone(), self.action_std[idx, :d].clone()
            proj = self.projectors[idx]
            # W' (x - m1) / s1 + b' == W (x - m0) / s0 + b for every x:
            #   W' = W * s1 / s0 (per input column), b' = b + W (m1 - m0) / s0.
            proj.bias.add_(proj.weight @ ((mean - old_mean) / old_std))
            proj.weight.mul_((std / old_std)[None, :])
            self.action_mean[idx, :d] = mean
            self.action_std[idx, :d] = std
            measured[name] = (mean.tolist(), std.tolist())
        return measured

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
