"""What the astra-train tests share: a few short simulator bags, a tiny recipe, reading a run's weights."""

from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings

REPO = Path(__file__).resolve().parents[1]
# The smallest run that exercises every phase: the tiny preset, a few steps, a checkpoint half-way.
RECIPE = dict(preset="tiny", clip_frames=6, batch_size=2, steps=6, codec_steps=4, warmup_steps=2,
              checkpoint_every=3, log_every=1, num_threads=1)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    settings = SimSettings(seconds=2.0, image_width=64, image_height=64)
    for scenario in ("explore", "arm", "rover"):
        record_episode(scenario, 1, root, settings=settings, progress=False)
    return root


def write_recipe(tmp_path, **overrides):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **overrides}))
    return path


def run_weights(run: Path, name: str = "model.safetensors"):
    return load_file(str(run / name))
