"""A diffusers-format Wan2.1 folder at full width (1536, 12 heads of 128, FFN 8960, text 4096; 2 of the 30
blocks) loads through ``load_wan_diffusers`` and gives diffusers' output, the text cross-attention folded
for an all-zero context. The 30-block check is bench/wan_full_size.py."""

import json

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from astra_ros.model import ConfigError, preset
from astra_ros.model.transformer import TIMESTEP_SCALE
from astra_ros.model.wan_import import WAN21_1_3B_TRANSFORMER, import_wan_tensors, load_wan_diffusers, safetensors_files

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32 through 2 blocks of width 1536 (measured ~1e-6); outputs are O(1)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("wan")
    wan = WanTransformer3DModel(**dict(WAN21_1_3B_TRANSFORMER, num_layers=2)).eval()  # Wan2.1-T2V-1.3B but 2 blocks
    assert wan.config.num_attention_heads * wan.config.attention_head_dim == 1536 and wan.config.ffn_dim == 8960
    wan.save_pretrained(root / "transformer", max_shard_size="150MB")  # sharded, as the published weights
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                           latents_mean=[0.1 * i for i in range(16)], latents_std=[1.0 + 0.1 * i for i in range(16)])
    vae.save_pretrained(root / "vae")
    return root, wan


def test_full_width_wan_folder_loads_and_matches_diffusers(wan_dir):
    root, wan = wan_dir
    assert len(safetensors_files(root / "transformer")) > 1
    model, report = load_wan_diffusers(root)
    cfg = model.config
    assert (cfg.inner_dim, cfg.num_attention_heads, cfg.ffn_dim, cfg.num_layers) == (1536, 12, 8960, 2)
    assert cfg.resolution == (480, 832) and cfg.context_bias and cfg.text_dim == 0
    wan_keys = set(wan.state_dict())
    # every Wan tensor is accounted for exactly once: loaded under its name, or folded
    assert set(report.loaded) | set(report.folded) == wan_keys
    assert not set(report.loaded) & set(report.folded)
    assert all(".attn2." in k or ".norm2." in k or "text_embedder" in k for k in report.folded)
    assert all(k.startswith("action_encoder.") or ".act_adapter." in k or ".action_proj." in k for k in report.fresh)
    assert len(report.vae_loaded) == len(model.codec.vae.state_dict())
    torch.testing.assert_close(model.codec.latent_std, torch.tensor([1.0 + 0.1 * i for i in range(16)]))

    torch.manual_seed(1)
    x = torch.randn(1, 16, 3, 8, 12)  # 3 latent frames of 4x6 tokens: a small resolution
    t = torch.tensor([0.7])
    zeros = torch.zeros(1, 512, 4096)  # Wan's 512 text tokens, all zero: "no text"
    with torch.no_grad():
        ref = wan(x, t * TIMESTEP_SCALE, zeros).sample
        out, _ = model.transformer(x, t[:, None].expand(1, 3).contiguous(), torch.arange(3))
        per_token_t = torch.tensor([[0.05, 0.6, 0.6]])  # history frame lightly noised, as Astra runs it
        ref_tok = wan(x, (per_token_t * TIMESTEP_SCALE).repeat_interleave(24, dim=1), zeros).sample
        out_tok, _ = model.transformer(x, per_token_t, torch.arange(3))
        for block in model.transformer.blocks:  # without the folded cross-attention the output is another
            block.context_bias.zero_()
        removed, _ = model.transformer(x, t[:, None].expand(1, 3).contiguous(), torch.arange(3))
    assert ref.abs().mean() > 0.1
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(out_tok, ref_tok, **TOL)
    assert (removed - ref).abs().max() > 100 * TOL["atol"]


def test_a_config_that_does_not_match_the_folder_is_refused(wan_dir):
    root, _ = wan_dir
    cfg = preset("wan2.1-1.3b", num_layers=30)
    with pytest.raises(ConfigError, match="num_layers"):
        load_wan_diffusers(root, cfg)
    with pytest.raises(FileNotFoundError):
        load_wan_diffusers(root / "nowhere")


def test_unmapped_and_missing_wan_tensors_are_listed_not_dropped(wan_dir):
    _, wan = wan_dir
    from astra_ros.model.transformer import AstraTransformer
    from astra_ros.model.wan_import import config_from_wan

    cfg = config_from_wan(dict(wan.config), (64, 96), preset("tiny").codec.__class__(kind="wan", latent_channels=16),
                          fold_text=True)
    model = AstraTransformer(cfg)  # a failed import may leave it half-filled; each call below fails anyway
    state = dict(wan.state_dict())
    extra = dict(state, **{"blocks.0.mystery.weight": torch.zeros(1),
                           "condition_embedder.image_embedder.ff.net.0.proj.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="2 Wan tensors cannot be imported.*mystery.*image-to-video"):
        import_wan_tensors(model, extra.items())
    lacking = {k: v for k, v in state.items() if k != "blocks.1.ffn.net.2.weight"}
    with pytest.raises(ValueError, match="lack 1 backbone tensors.*blocks.1.ffn.net.2.weight"):
        import_wan_tensors(model, lacking.items())
    no_text = {k: v for k, v in state.items() if "attn2.to_v" not in k}
    with pytest.raises(ValueError, match="cannot fold block 0"):
        import_wan_tensors(model, no_text.items())


def test_the_preset_is_the_paper_scale():
    cfg = preset("wan2.1-1.3b")
    assert cfg.resolution == (480, 832) and cfg.latent_size == (60, 104) and cfg.tokens_per_frame == 1560
    assert (cfg.inner_dim, cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim, cfg.ffn_dim) == (
        1536, 30, 12, 128, 8960)
    assert cfg.codec.kind == "wan" and cfg.codec.spatial_factor == 8 and cfg.codec.latent_channels == 16
    # the attention window (history + the chunk) stays inside Wan2.1's 21 latent frames (81 frames)
    assert (cfg.max_history_chunks + 1) * cfg.chunk_frames <= 21
    assert json.loads(json.dumps(cfg.to_dict()))["context_bias"] is True
    assert cfg.frame_interval_s == 1 / 16  # a live node feeds it Wan's 16 fps, not the simulator's 10 Hz
