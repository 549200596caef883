"""Resumable training state in safetensors + JSON (no pickle anywhere).

The optimizer's state dict is split into its tensors (safetensors) and its plain values
(JSON); every rank's random generators are saved as their state bytes, so a resumed run
continues the exact sequence of clips and noise of an uninterrupted one. A state is written into
a fresh directory and swapped in whole, so a crash while saving never damages the previous one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from astra_ros.model.checkpoint import CheckpointError, fsync_file, save_tensors


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
                     step: int, phase: str, generators: list[tuple[torch.Tensor, dict[str, Any]]],
                     extra: dict[str, Any] | None = None) -> None:
    """Write a complete state into a fresh directory, then swap it for the old one.

    A crash while writing leaves the previous state whole (written in place, a half-written
    ``ema.safetensors`` destroyed it, and a crash between files mixed two steps' weights without a
    word). ``generators`` holds every rank's ``(torch state, numpy state)``, in rank order, so each
    process of a distributed run resumes its own sequence of clips and noise.
    """
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_tensors({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    save_tensors({k: v.detach().contiguous().cpu() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
    tensors, plain = _flatten_optimizer(optimizer.state_dict())
    for rank, (torch_state, _) in enumerate(generators):
        tensors[f"__torch_generator_{rank}__"] = torch_state
    save_tensors(tensors, tmp / "optimizer.safetensors")
    meta = {"step": step, "phase": phase, "optimizer": plain,
            "numpy_generators": [numpy_state for _, numpy_state in generators], **(extra or {})}
    (tmp / "state.json").write_text(json.dumps(meta))
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json"):
        fsync_file(tmp / name)
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
    # Between the two renames only the .old state exists: state_dir() finds it. Without a current state
    # (a kill during the last swap) the .old one is the only one: it stays until the new one is in place.
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


def state_dir(path: Path) -> Path:
    """The directory holding the newest complete state: ``path``, or the ``.old`` one a crash
    during the swap left behind."""
    old = path.with_name(path.name + ".old")
    if not (path / "state.json").is_file() and (old / "state.json").is_file():
        return old
    return path


def read_state_meta(path: Path) -> dict[str, Any]:
    """The JSON part of a training state (step, phase, ...)."""
    path = state_dir(path)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"no complete training state in {path} (state.json missing)")
    try:
        meta = json.loads((path / "state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot resume from {path}: state.json is damaged ({err})") from err
    step = meta.get("step") if isinstance(meta, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or meta.get("phase") not in ("codec", "world", "decoder"):
        raise CheckpointError(f"cannot resume from {path}: state.json is damaged (no step and phase in it)")
    return meta


def load_train_state(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module, torch_gen: torch.Generator,
                     numpy_gen: np.random.Generator, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Weights, EMA and this rank's random generators of a saved state; returns its JSON part."""
    meta = read_state_meta(path)
    path = state_dir(path)
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
        tensors = load_file(str(path / "optimizer.safetensors"))
    except Exception as err:  # safetensors, json and torch raise different types for a damaged state
        raise CheckpointError(f"cannot resume from {path}: {type(err).__name__}: {err}") from err
    if "numpy_generators" in meta:
        saved = len(meta["numpy_generators"])
        if saved != world_size:
            raise CheckpointError(f"cannot resume from {path}: it was saved by {saved} process(es), this run has "
                                  f"{world_size}; resume with the same number of processes")
        torch_gen.set_state(tensors[f"__torch_generator_{rank}__"])
        numpy_gen.bit_generator.state = meta["numpy_generators"][rank]
    else:  # a state from before per-rank generators: rank 0's only
        if world_size > 1:
            raise CheckpointError(f"cannot resume from {path} with {world_size} processes: it holds one process's "
                                  "random generators (saved by an older astra-train)")
        torch_gen.set_state(tensors["__torch_generator__"])
        numpy_gen.bit_generator.state = meta["numpy_generator"]
    return meta


def load_optimizer_state(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer moments of a saved state (for the phase it was saved in)."""
    meta = read_state_meta(path)
    tensors = load_file(str(state_dir(path) / "optimizer.safetensors"))
    tensors = {k: v for k, v in tensors.items() if not k.startswith("__torch_generator")}
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
