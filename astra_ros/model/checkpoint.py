"""Checkpoints: ``config.json`` + ``model.safetensors``, nothing else is ever read (no pickle)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import AstraConfig, ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default"
# Tensors added after checkpoints were first released (names, or prefixes ending in "."): a file without
# them loads with the module's own initial values, which leave the model's function as it was trained
# (identity action statistics; zero-initialised motion projectors, e.g. when `--init` turns on
# `action_motion` for a checkpoint trained without it; an anchor decoder that is residual decoding; a
# zero-initialised end-effector map projector, `arm_map_cells`).
OPTIONAL_TENSORS = ("transformer.action_encoder.action_mean", "transformer.action_encoder.action_std",
                    "transformer.action_encoder.motion_std", "transformer.action_encoder.motion_projectors.",
                    "anchor_decoder.", "transformer.arm_map.")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded, with the reason."""


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """``"default"`` -> the embedded checkpoint; otherwise the directory given."""
    path = DEFAULT_CHECKPOINT if str(path_or_name) == "default" else Path(path_or_name)
    if path.is_file():
        raise CheckpointError(f"{path} is a file: a checkpoint is the directory holding {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME} (here {path.parent})")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} has no {name} (a checkpoint is {CONFIG_NAME} + {WEIGHTS_NAME})")
    return path


# Config fields added after checkpoints were first released: a config.json without them loads with
# the field's default, which is the behaviour those checkpoints were trained and measured with. Every
# other field must be written out: a missing one would silently take a default (resolution, history
# noise, guidance scale ...) that the weights never saw.
FIELDS_ADDED_LATER = frozenset({"guidance_scale_by_modality", "motion_loss_weight", "pixel_loss_weight",
                                "pixel_loss_frames", "residual_decoding", "residual_change_scale",
                                "latent_delta", "prediction", "action_motion",
                                "anchor_decoder_width", "anchor_decoder_search",
                                "rotation_reference", "reference_fovy_deg", "delta_scale",
                                "frame_interval_s", "arm_map_cells", "delta_scale_late",
                                "delta_scale_late_after_s"})

# Added with the Wan2.1 import (model/wan_import.py); older checkpoints have no folded cross-attention.
FIELDS_ADDED_LATER |= {"context_bias"}


def load_config(path: Path) -> AstraConfig:
    file = path / CONFIG_NAME
    try:
        config = AstraConfig.from_json(file)
    except (ConfigError, TypeError) as err:
        detail = str(err).removeprefix(f"{file}: ")  # from_json names the file already
        raise CheckpointError(f"invalid {file}: {detail}") from err
    written = json.loads(file.read_text(encoding="utf-8"))  # valid JSON object: from_json checked it
    missing = sorted({f.name for f in dataclasses.fields(AstraConfig)} - set(written) - FIELDS_ADDED_LATER)
    if missing:
        raise CheckpointError(f"invalid {file}: fields {missing} are missing; a checkpoint's config.json "
                              "names every field (save_checkpoint writes them all), since a default here "
                              "would silently change what the weights do")
    return config


def load_weights(module: nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` into ``module``; every key and shape must match (except that
    :data:`OPTIONAL_TENSORS` may be absent). Floating-point tensors stored in another precision
    (float16 or bfloat16, all of them or some: released checkpoints store most weights in float16,
    docs/CHECKPOINTS.md) are upcast to the module's own dtype."""
    file = path / WEIGHTS_NAME
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{file} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    expected = module.state_dict()
    for key in expected:
        optional = any(key == name or (name.endswith(".") and key.startswith(name)) for name in OPTIONAL_TENSORS)
        if optional and key not in state:
            state[key] = expected[key].detach().clone()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    # load_state_dict would cast integer or bool tensors into float parameters without a word; a
    # float checkpoint saved in another precision (bf16, fp16) is cast on purpose and fine.
    kind = sorted(k for k in set(state) & set(expected) if state[k].dtype != expected[k].dtype
                  and not (state[k].is_floating_point() and expected[k].is_floating_point()))
    if missing or unexpected or wrong or kind:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"config {tuple(expected[k].shape)})")
        if kind:
            k = kind[0]
            parts.append(f"{len(kind)} dtype mismatches (e.g. {k}: file {state[k].dtype}, model {expected[k].dtype})")
        raise CheckpointError(f"{file} does not match {path / CONFIG_NAME}: " + "; ".join(parts))
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{file} holds non-finite values in {bad[:3]}")
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() and v.dtype != expected[k].dtype else v
             for k, v in state.items()}
    module.load_state_dict(state, strict=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors`` ``save_file`` with the permissions any other file written here gets: the
    library creates its file mode 0600, which left checkpoints unreadable to other users and containers."""
    save_file(tensors, str(path))
    os.chmod(path, 0o666 & ~_umask())


def fsync_file(path: Path) -> None:
    """Flush ``path`` to the disk, so that a rename after it never exposes a file still in the cache."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(module: nn.Module, config: AstraConfig, path: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors``, each to a temporary file renamed over the old
    one, so a crash mid-write (a training run releasing its checkpoint) leaves the previous file whole."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp_config, tmp_weights = path / (CONFIG_NAME + ".tmp"), path / (WEIGHTS_NAME + ".tmp")
    config.to_json(tmp_config)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_tensors(state, tmp_weights)
    for tmp in (tmp_config, tmp_weights):
        fsync_file(tmp)
    tmp_weights.replace(path / WEIGHTS_NAME)
    tmp_config.replace(path / CONFIG_NAME)
    return path
