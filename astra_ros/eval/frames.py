"""``astra-eval --save-frames DIR``: one ``.npz`` per clip, from which every metric can be recomputed.

Each file ``clip_0000.npz`` ... holds, at the model's resolution, uint8 ``observed_last [H, W, 3]`` (the
last observed frame: copy-last's prediction), ``real``, ``model`` and ``shuffled`` ``[N, H, W, 3]`` (the
real future, the prediction with the true actions, the prediction with another clip's actions; ``shuffled``
is ``[0, H, W, 3]`` for a clip with no other clip to borrow from), where the model has one the codec
ceiling ``ceiling [N, H, W, 3]`` (the real future encoded and decoded as predictions are), the string
``scenario`` (the bag's
simulator scenario, else its action modality), and where the clip came from: ``bag``, ``start_frame``,
``modality`` and ``frame_interval_s`` [s].

    data = load_clip_frames("frames/clip_0000.npz")
    errors = clip_errors(data["observed_last"], data["real"], data["model"], data["shuffled"], data["scenario"],
                         ceiling=data["ceiling"])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from astra_ros.data.actions import scenario_modality

__all__ = ["scenario_of", "save_clip_frames", "load_clip_frames", "FRAME_ARRAYS"]

FRAME_ARRAYS = ("observed_last", "real", "model", "shuffled")
# A bag astra-sim recorded is named <scenario>_s<seed> (a directory, or its .mcap/.db3 file).
_SIM_BAG = re.compile(r"^(?P<scenario>[a-z]+)_s\d+$")


def scenario_of(bag: str | Path, modality: str) -> str:
    """The simulator scenario a bag was recorded from (its name ``<scenario>_s<seed>``), else ``modality``."""
    path = Path(bag)
    for name in (path.stem, path.name, path.parent.name):
        match = _SIM_BAG.match(name)
        if match and match.group("scenario") in scenario_modality:
            return match.group("scenario")
    return modality


def save_clip_frames(path: str | Path, *, observed_last: np.ndarray, real: np.ndarray, model: np.ndarray,
                     shuffled: np.ndarray | None, scenario: str, bag: str = "", start_frame: int = -1,
                     modality: str = "", frame_interval_s: float = float("nan"),
                     ceiling: np.ndarray | None = None) -> Path:
    """Write one clip's frames (uint8, see the module docstring) to ``path`` (compressed .npz)."""
    arrays = {"observed_last": observed_last, "real": real, "model": model,
              "shuffled": np.zeros((0, *np.shape(real)[1:]), np.uint8) if shuffled is None else shuffled}
    if ceiling is not None:
        if np.shape(ceiling) != np.shape(real):
            raise ValueError(f"ceiling frames {np.shape(ceiling)} and real frames {np.shape(real)} differ in shape")
        arrays["ceiling"] = ceiling
    for name, value in arrays.items():
        if np.asarray(value).dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 frames, got {np.asarray(value).dtype}")
    if np.shape(observed_last) != np.shape(real)[1:] or np.shape(model) != np.shape(real):
        raise ValueError(f"frame shapes do not match: observed_last {np.shape(observed_last)}, real {np.shape(real)}, "
                         f"model {np.shape(model)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays, scenario=np.array(scenario), bag=np.array(str(bag)),
                        start_frame=np.array(int(start_frame)), modality=np.array(modality),
                        frame_interval_s=np.array(float(frame_interval_s)))
    return path


def load_clip_frames(path: str | Path) -> dict[str, Any]:
    """A saved clip: the four uint8 arrays and ``ceiling`` (None in a file without one), and ``scenario``,
    ``bag``, ``modality`` as str, ``start_frame`` as int, ``frame_interval_s`` as float."""
    with np.load(Path(path), allow_pickle=False) as data:
        out: dict[str, Any] = {name: data[name] for name in FRAME_ARRAYS}
        out["ceiling"] = data["ceiling"] if "ceiling" in data.files else None
        out.update(scenario=str(data["scenario"]), bag=str(data["bag"]), modality=str(data["modality"]),
                   start_frame=int(data["start_frame"]), frame_interval_s=float(data["frame_interval_s"]))
    return out
