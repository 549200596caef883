"""Wan2.1 weights in diffusers format load into the Astra transformer and give the same output."""

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from astra_ros.model import CodecConfig
from astra_ros.model.codec import LatentCodec
from astra_ros.model.transformer import TIMESTEP_SCALE, AstraTransformer
from astra_ros.model.wan_import import config_from_wan, load_wan_transformer, map_wan_key


def _tiny_wan(**overrides):
    torch.manual_seed(0)
    kwargs = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                  text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True)
    kwargs.update(overrides)
    return WanTransformer3DModel(**kwargs).eval()


def test_tiny_random_wan_and_astra_give_equal_outputs():
    wan = _tiny_wan()
    cfg = config_from_wan(dict(wan.config), resolution=(32, 48), codec=CodecConfig(latent_channels=4))
    ours = AstraTransformer(cfg).eval()
    left = load_wan_transformer(ours, wan.state_dict())
    assert left and all(k.startswith("action_encoder.") or ".act_adapter." in k or ".action_proj." in k for k in left)
    x = torch.randn(2, 4, 3, 4, 6)
    context = torch.randn(2, 5, 16)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        reference = wan(x, t * TIMESTEP_SCALE, context).sample
        out, _ = ours(x, t[:, None].expand(2, 3).contiguous(), torch.arange(3), context=context)
        # Wan 2.2's per-token timesteps agree too (frame 0 less noisy than the rest)
        per_token_t = torch.tensor([[0.1, 0.5, 0.5], [0.2, 0.9, 0.9]])
        ref_tok = wan(x, (per_token_t * TIMESTEP_SCALE).repeat_interleave(4 * 6 // 4, dim=1), context).sample
        out_tok, _ = ours(x, per_token_t, torch.arange(3), context=context)
    assert reference.abs().mean() > 0.1
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_tok, ref_tok, atol=1e-5, rtol=1e-5)


def test_unsupported_and_mismatched_wan_weights_are_refused():
    with pytest.raises(ValueError, match="image-to-video"):
        map_wan_key("condition_embedder.image_embedder.ff.net.0.proj.weight")
    with pytest.raises(ValueError, match="unknown Wan transformer key"):
        map_wan_key("blocks.0.mystery.weight")
    wan = _tiny_wan(ffn_dim=40)
    cfg = config_from_wan(dict(_tiny_wan().config), resolution=(32, 48), codec=CodecConfig(latent_channels=4))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_wan_transformer(AstraTransformer(cfg), wan.state_dict())


def test_wan_vae_loads_into_the_codec_and_codes_single_frames():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                           temperal_downsample=[False], latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    codec = LatentCodec(CodecConfig(kind="wan", latent_channels=4, base_dim=8, dim_mult=(1, 2), num_res_blocks=1,
                                    temporal_downsample=(False,))).eval()
    codec.vae.load_state_dict(vae.state_dict())
    frames = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = codec.encode(frames)
        assert z.shape == (1, 4, 3, 8, 8)  # one latent frame per frame, spatial factor 2
        ref = vae.encode(frames[:, 1].unsqueeze(2)).latent_dist.mode()[:, :, 0]
        torch.testing.assert_close(z[:, :, 1], ref, atol=1e-5, rtol=1e-5)
        assert codec.decode(z).shape == frames.shape
