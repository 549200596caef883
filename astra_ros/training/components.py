"""Parts of the training loop: the objectives DDP wraps, the EMA of the weights, the device and process
group of one training process, and the learning-rate schedule."""

from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from astra_ros.model import WorldModel
from astra_ros.model.config import ConfigError
from astra_ros.model.flow import flow_matching_loss

from .recipe import TrainRecipe


def weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Objective(nn.Module):
    """The world-model loss as a module, so DDP sees one forward per step."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.transformer = model.transformer
        # The frozen codec's decoder for pixel_loss_weight; a plain function, so DDP sees no codec weights.
        self.decode = model.codec.decode if model.config.pixel_loss_weight > 0 else None

    def forward(self, latents, actions, modality_ids, generator, references=None, arm_maps=None, history=None):
        loss = flow_matching_loss(self.transformer, latents, actions, modality_ids, generator=generator,
                                  decode=self.decode, references=references, arm_maps=arm_maps,
                                  history_latents=history)
        return loss.total, loss.flow.detach(), loss.load_balance.detach()


class CodecObjective(nn.Module):
    """Autoencoder reconstruction + a small KL term."""

    def __init__(self, model: WorldModel, kl_weight: float) -> None:
        super().__init__()
        self.vae = model.codec.vae
        self.kl_weight = kl_weight

    def forward(self, images, generator):
        posterior = self.vae.encode(images).latent_dist
        recon = self.vae.decode(posterior.sample(generator)).sample
        rec = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()
        return rec + self.kl_weight * kl, rec.detach(), kl.detach()


class DecoderObjective(nn.Module):
    """The anchor decoder's pixel MSE, split into the frames decoded from predicted and from real latents."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.anchor_decoder = model.anchor_decoder

    def forward(self, anchor, anchor_latents, anchor_coarse, latents, coarse, frames, predicted):
        errors = (self.anchor_decoder(anchor, anchor_latents, anchor_coarse, latents, coarse) - frames).pow(2)
        per_frame = errors.flatten(1).mean(dim=1)
        nan = torch.tensor(float("nan"))
        parts = [per_frame[rows].mean().detach() if rows.any() else nan for rows in (predicted, ~predicted)]
        return per_frame.mean(), parts[0], parts[1]


class EMA:
    """Exponential moving average of a model's floating-point state."""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @staticmethod
    def warmup_decay(decay: float, updates: int) -> float:
        """Decay after ``updates`` updates: (1 + n) / (10 + n), capped at ``decay``.

        Without this warm-up a 0.999 EMA of a short run still holds a large share of the random
        initialisation (0.999**1000 = 37 % after 1000 steps).
        """
        return min(decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float, updates: int) -> None:
        decay = self.warmup_decay(decay, updates)
        ours = self.model.state_dict()
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                ours[name].lerp_(value, 1.0 - decay)
            else:
                ours[name].copy_(value)

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        self.model.load_state_dict(model.state_dict())


@dataclass
class DistributedInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def training_device(requested: str, local_rank: int, cuda_available: bool) -> torch.device:
    """The device one training process runs on.

    ``auto``: ``cuda:LOCAL_RANK`` where CUDA is available, else the CPU; ``cuda`` means
    ``cuda:LOCAL_RANK`` (torchrun starts one process per GPU); ``cpu`` or ``cuda:N`` as given.
    """
    if requested == "auto":
        requested = "cuda" if cuda_available else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ConfigError(f"unknown training device {requested!r}: expected auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not cuda_available:
            raise ConfigError(f"training device {requested!r} asked for, but this machine has no usable CUDA GPU "
                              "(use --device cpu or auto)")
        return torch.device("cuda", local_rank if device.index is None else device.index)
    if device.type != "cpu":
        raise ConfigError(f"training device {requested!r} is not supported: expected auto, cpu, cuda or cuda:N")
    return device


def init_distributed(device: torch.device) -> DistributedInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl for GPUs, gloo for CPUs
    (by the device trained on, not by whether the machine has a GPU: nccl cannot reduce CPU tensors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedInfo()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedInfo(rank=dist.get_rank(), world_size=dist.get_world_size())


def learning_rate(step: int, phase_steps: int, recipe: TrainRecipe, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then constant or cosine to ``min_lr_ratio * peak``."""
    if step < recipe.warmup_steps:
        return peak * (step + 1) / recipe.warmup_steps
    if recipe.lr_decay == "constant":
        return peak
    span = max(phase_steps - recipe.warmup_steps, 1)
    progress = min(1.0, (step - recipe.warmup_steps) / span)
    floor = recipe.min_lr_ratio * peak
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
