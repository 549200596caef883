"""One reading of a checkpoint argument, shared by the node, the CLIs and the benchmarks.

``"default"`` (the embedded model), a directory or a name load trained weights;
``"random:<preset>"`` builds that preset with random weights, for tests and timings that need no
trained model (its frames are noise). ``random:tiny`` is drawn at 32x32 pixels rather than the
preset's 16x16: the smallest size the node's image pipeline and the benchmarks use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import preset
from .world_model import WorldModel

RANDOM_PREFIX = "random:"
TINY_RANDOM_RESOLUTION = (32, 32)


def is_random_spec(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(RANDOM_PREFIX)


def load_world_model(spec: str | Path, device: str | torch.device = "cpu", use_cache: bool = True) -> WorldModel:
    """The ``WorldModel`` a checkpoint argument names (see the module docstring).

    Random weights are drawn from a fixed seed inside a forked RNG, so two loads of one
    ``random:<preset>`` are the same model and the caller's torch RNG is left as it was.
    Raises ConfigError for an unknown preset and CheckpointError for a bad checkpoint.
    """
    if not is_random_spec(spec):
        return WorldModel.from_pretrained(spec, device=device, use_cache=use_cache)
    name = str(spec)[len(RANDOM_PREFIX):]
    overrides = {"resolution": TINY_RANDOM_RESOLUTION} if name == "tiny" else {}
    config = preset(name, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WorldModel(config, use_cache=use_cache)
    return model.to(device).eval()
