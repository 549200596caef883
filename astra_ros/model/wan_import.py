"""Import Wan2.1 weights in diffusers format into an Astra model.

Key map, diffusers ``WanTransformer3DModel`` -> ``AstraTransformer`` (N = block index):

=====================================================  =============================================
diffusers key                                          astra_ros key
=====================================================  =============================================
patch_embedding.{weight,bias}                          same
condition_embedder.time_embedder.linear_{1,2}.*        same
condition_embedder.time_proj.*                         same
condition_embedder.text_embedder.linear_{1,2}.*        same (needs ``text_dim`` > 0)
blocks.N.attn1.{to_q,to_k,to_v,to_out.0,norm_q,norm_k}.*  same
blocks.N.attn2.{to_q,to_k,to_v,to_out.0,norm_q,norm_k}.*  same (needs ``text_dim`` > 0)
blocks.N.norm2.{weight,bias}                           same (``cross_attn_norm``)
blocks.N.ffn.net.0.proj.*, blocks.N.ffn.net.2.*        same
blocks.N.scale_shift_table                             same
scale_shift_table, proj_out.*                          same
condition_embedder.image_embedder.*,                   not supported (Wan I2V image branch): rejected
blocks.N.attn2.{add_k_proj,add_v_proj,norm_added_k}.*
-- (new in Astra)                                      blocks.N.act_adapter.* (identity),
                                                       blocks.N.action_proj.* (zero),
                                                       action_encoder.* (MoAE, random)
=====================================================  =============================================

The names were chosen equal on purpose, so the map is a checked identity on the supported keys.
New Astra layers keep their initialisation, which leaves the imported backbone's output unchanged
for any action until they are trained (``test_wan_import`` checks the outputs are equal).
``AutoencoderKLWan`` weights load into ``LatentCodec(kind="wan")`` unchanged (``codec.vae.*``).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .config import AstraConfig, CodecConfig
from .transformer import AstraTransformer

# Patterns of diffusers keys that load under the same name, and those we refuse.
SUPPORTED_WAN_KEYS = [
    r"patch_embedding\.(weight|bias)",
    r"condition_embedder\.time_embedder\.linear_[12]\.(weight|bias)",
    r"condition_embedder\.time_proj\.(weight|bias)",
    r"condition_embedder\.text_embedder\.linear_[12]\.(weight|bias)",
    r"blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)",
    r"blocks\.\d+\.attn[12]\.norm_[qk]\.weight",
    r"blocks\.\d+\.norm2\.(weight|bias)",
    r"blocks\.\d+\.ffn\.net\.(0\.proj|2)\.(weight|bias)",
    r"blocks\.\d+\.scale_shift_table",
    r"scale_shift_table",
    r"proj_out\.(weight|bias)",
]
UNSUPPORTED_WAN_KEYS = [
    r"condition_embedder\.image_embedder\..*",
    r"blocks\.\d+\.attn2\.(add_k_proj|add_v_proj|norm_added_k)\..*",
]


def map_wan_key(key: str) -> str:
    """The astra_ros name of one diffusers Wan key; ValueError for keys Astra cannot hold."""
    if any(re.fullmatch(p, key) for p in UNSUPPORTED_WAN_KEYS):
        raise ValueError(f"Wan key {key!r} belongs to the image-to-video branch, which astra_ros does not support")
    if any(re.fullmatch(p, key) for p in SUPPORTED_WAN_KEYS):
        return key
    raise ValueError(f"unknown Wan transformer key {key!r}")


def config_from_wan(wan_config: dict[str, Any], resolution: tuple[int, int], codec: CodecConfig | None = None,
                    **astra_fields: Any) -> AstraConfig:
    """An AstraConfig whose backbone matches a diffusers ``WanTransformer3DModel`` config."""
    if wan_config.get("image_dim") or wan_config.get("added_kv_proj_dim"):
        raise ValueError("Wan image-to-video checkpoints (image_dim / added_kv_proj_dim) are not supported")
    if wan_config.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        raise ValueError(f"only qk_norm='rms_norm_across_heads' is supported, got {wan_config.get('qk_norm')!r}")
    in_ch, out_ch = wan_config.get("in_channels", 16), wan_config.get("out_channels", 16)
    if out_ch not in (None, in_ch):
        raise ValueError(f"in_channels ({in_ch}) and out_channels ({out_ch}) must match")
    codec = codec or CodecConfig(kind="wan", latent_channels=in_ch)
    if codec.latent_channels != in_ch:
        raise ValueError(f"codec has {codec.latent_channels} latent channels, the Wan transformer expects {in_ch}")
    return AstraConfig(
        resolution=resolution,
        codec=codec,
        patch_size=tuple(wan_config.get("patch_size", (1, 2, 2))),
        num_attention_heads=wan_config.get("num_attention_heads", 40),
        attention_head_dim=wan_config.get("attention_head_dim", 128),
        ffn_dim=wan_config.get("ffn_dim", 13824),
        num_layers=wan_config.get("num_layers", 40),
        freq_dim=wan_config.get("freq_dim", 256),
        eps=wan_config.get("eps", 1e-6),
        cross_attn_norm=wan_config.get("cross_attn_norm", True),
        text_dim=wan_config.get("text_dim", 4096),
        **astra_fields,
    )


@torch.no_grad()
def load_wan_transformer(model: AstraTransformer, wan_state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy a diffusers Wan state dict into ``model``; returns the Astra keys left at their init.

    Every Wan key must map and match in shape; every backbone key of ``model`` must be filled.
    """
    ours = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in wan_state_dict.items():
        name = map_wan_key(key)
        if name not in ours:
            raise ValueError(f"Wan key {key!r} has no place in this model (is text_dim set for cross-attention?)")
        if ours[name].shape != value.shape:
            raise ValueError(f"shape mismatch for {key!r}: Wan {tuple(value.shape)}, astra_ros {tuple(ours[name].shape)}")
        mapped[name] = value
    astra_only = re.compile(r"(blocks\.\d+\.(act_adapter|action_proj)|action_encoder)\.")
    left = sorted(k for k in ours if k not in mapped)
    missing_backbone = [k for k in left if not astra_only.match(k)]
    if missing_backbone:
        raise ValueError(f"the Wan state dict lacks {len(missing_backbone)} backbone tensors, e.g. {missing_backbone[:3]}")
    model.load_state_dict(mapped, strict=False)
    return left
