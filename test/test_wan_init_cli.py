"""astra-train --init-wan: a diffusers Wan folder becomes the starting transformer of a training run."""

import pytest
import torch
import yaml
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file

from astra_ros.cli.train import main as train_main
from astra_ros.data.record import record_episode
from astra_ros.data.scenes import SimSettings
from astra_ros.model.wan_import import zero_context_bias

# The "tiny" preset's backbone, as a diffusers Wan model with a text branch of width 16
TINY_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True)
RECIPE = dict(preset="tiny", clip_frames=6, batch_size=2, steps=2, codec_steps=0, warmup_steps=1,
              checkpoint_every=10, log_every=1, num_threads=1)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    record_episode("explore", 1, root, settings=SimSettings(seconds=2.0, image_width=64, image_height=64), progress=False)
    return root


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    torch.manual_seed(3)
    model = WanTransformer3DModel(**TINY_WAN).eval()
    folder = tmp_path_factory.mktemp("wan") / "transformer"
    model.save_pretrained(folder)
    return folder, model.state_dict()


def _recipe(tmp_path, **model):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "model": model}))
    return path


def test_init_wan_starts_the_transformer_from_the_wan_weights(bags, wan, tmp_path, caplog):
    caplog.set_level("INFO", logger="astra_train")
    folder, state = wan
    args = ["--config", str(_recipe(tmp_path, context_bias=True)), "--init-wan", str(folder), "--data", str(bags),
            "--stop-after", "0", "--no-progress", "--out", str(tmp_path / "run")]
    assert train_main(args) == 0
    weights = load_file(str(tmp_path / "run" / "train_state" / "model.safetensors"))
    for key, value in state.items():
        if ".attn2." in key or ".norm2." in key or "text_embedder" in key:
            continue  # folded
        assert torch.equal(weights[f"transformer.{key}"], value), key
    for i in range(2):
        torch.testing.assert_close(weights[f"transformer.blocks.{i}.context_bias"], zero_context_bias(state, i).float())
    assert "28 text-branch tensors folded" in caplog.text  # text embedder 4 + (attn2 10 + norm2 2) x 2 blocks


def test_init_wan_refuses_a_recipe_that_does_not_match_and_other_inits(bags, wan, tmp_path, caplog):
    folder, _ = wan
    common = ["--data", str(bags), "--stop-after", "0", "--no-progress"]
    # Without context_bias the text branch has nowhere to go: refused by name, not dropped
    assert train_main(["--config", str(_recipe(tmp_path)), "--init-wan", str(folder), "--out",
                       str(tmp_path / "a")] + common) == 2
    assert "context_bias" in caplog.text
    assert train_main(["--config", str(_recipe(tmp_path, context_bias=True, ffn_dim=40)), "--init-wan", str(folder),
                       "--out", str(tmp_path / "b")] + common) == 2
    assert "ffn_dim" in caplog.text
    assert train_main(["--config", str(_recipe(tmp_path, context_bias=True)), "--init-wan", str(folder),
                       "--init", str(folder), "--out", str(tmp_path / "c")] + common) == 2
    assert train_main(["--config", str(_recipe(tmp_path, context_bias=True)), "--init-wan", str(tmp_path / "none"),
                       "--out", str(tmp_path / "d")] + common) == 2
