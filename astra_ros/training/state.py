"""Resumable training state in safetensors + JSON (no pickle anywhere).

The optimizer's state dict is split into its tensors (safetensors) and its plain values
(JSON); random generators are saved as their state bytes, so a resumed run continues the
exact sequence of clips and noise of an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from astra_ros.model.checkpoint import CheckpointError


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        plain["state"][str(pid)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.contiguous().cpu()
                plain["state"][str(pid)][key] = {"tensor": f"{pid}.{key}"}
            else:
                plain["state"][str(pid)][key] = {"value": value}
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for pid, entries in plain["state"].items():
        state[int(pid)] = {k: tensors[v["tensor"]] if "tensor" in v else v["value"] for k, v in entries.items()}
    return {"state": state, "param_groups": plain["param_groups"]}


def save_train_state(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     step: int, phase: str, torch_gen: torch.Generator, numpy_gen: np.random.Generator,
                     extra: dict[str, Any] | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    save_file({k: v.detach().contiguous().cpu() for k, v in ema.state_dict().items()}, str(path / "ema.safetensors"))
    tensors, plain = _flatten_optimizer(optimizer.state_dict())
    tensors["__torch_generator__"] = torch_gen.get_state()
    save_file(tensors, str(path / "optimizer.safetensors"))
    meta = {"step": step, "phase": phase, "optimizer": plain,
            "numpy_generator": numpy_gen.bit_generator.state, **(extra or {})}
    tmp = path / "state.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(path / "state.json")  # written last: a state directory is complete only with it


def read_state_meta(path: Path) -> dict[str, Any]:
    """The JSON part of a training state (step, phase, ...)."""
    if not (path / "state.json").is_file():
        raise CheckpointError(f"no complete training state in {path} (state.json missing)")
    try:
        return json.loads((path / "state.json").read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"cannot resume from {path}: state.json is damaged ({err})") from err


def load_train_state(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module, torch_gen: torch.Generator,
                     numpy_gen: np.random.Generator) -> dict[str, Any]:
    """Weights, EMA and random generators of a saved state; returns its JSON part."""
    meta = read_state_meta(path)
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
        tensors = load_file(str(path / "optimizer.safetensors"))
    except Exception as err:  # safetensors, json and torch raise different types for a damaged state
        raise CheckpointError(f"cannot resume from {path}: {type(err).__name__}: {err}") from err
    torch_gen.set_state(tensors.pop("__torch_generator__"))
    numpy_gen.bit_generator.state = meta["numpy_generator"]
    return meta


def load_optimizer_state(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer moments of a saved state (for the phase it was saved in)."""
    meta = read_state_meta(path)
    tensors = load_file(str(path / "optimizer.safetensors"))
    tensors.pop("__torch_generator__", None)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
