"""Import Wan2.1 weights in diffusers format into an Astra model.

Key map, diffusers ``WanTransformer3DModel`` -> ``AstraTransformer`` (N = block index):

=====================================================  =============================================
diffusers key                                          astra_ros key
=====================================================  =============================================
patch_embedding.{weight,bias}                          same
condition_embedder.time_embedder.linear_{1,2}.*        same
condition_embedder.time_proj.*                         same
condition_embedder.text_embedder.linear_{1,2}.*        same (``text_dim`` > 0) or folded (``context_bias``)
blocks.N.attn1.{to_q,to_k,to_v,to_out.0,norm_q,norm_k}.*  same
blocks.N.attn2.{to_q,to_k,to_v,to_out.0,norm_q,norm_k}.*  same (``text_dim`` > 0) or folded (``context_bias``)
blocks.N.norm2.{weight,bias}                           same (``cross_attn_norm``) or folded
blocks.N.ffn.net.0.proj.*, blocks.N.ffn.net.2.*        same
blocks.N.scale_shift_table                             same
scale_shift_table, proj_out.*                          same
condition_embedder.image_embedder.*,                   not supported (Wan I2V image branch): rejected
blocks.N.attn2.{add_k_proj,add_v_proj,norm_added_k}.*
-- (folded text branch)                                blocks.N.context_bias
-- (new in Astra)                                      blocks.N.act_adapter.* (identity),
                                                       blocks.N.action_proj.* (zero),
                                                       action_encoder.* (MoAE, random)
=====================================================  =============================================

**The text cross-attention** (``condition_embedder.text_embedder.*``, ``blocks.N.attn2.*``,
``blocks.N.norm2.*``) has no input in the action-only model. With ``text_dim`` > 0 it loads as above
and needs a context at every call. With ``context_bias`` (the ``wan2.1-1.3b`` preset) it is *folded*
for an all-zero text context (S tokens of zeros, what Wan sees for "no text"): every context token is
then the same vector e = text_embedder(0), so every key is the same, the softmax is uniform whatever
the query, and the cross-attention output is exactly ``to_out.0(to_v(e))`` for every token, a
constant per block stored as ``blocks.N.context_bias``. q, k and their norms and ``norm2`` then have
no effect; they are listed as folded in the :class:`WanImportReport`, never silently dropped.

The names were chosen equal on purpose, so the map is a checked identity on the supported keys.
New Astra layers keep their initialisation, which leaves the imported backbone's output unchanged
for any action until they are trained (``test_wan_import`` checks the outputs are equal).
``AutoencoderKLWan`` weights load into ``LatentCodec(kind="wan")`` unchanged (``codec.vae.*``), its
``latents_mean``/``latents_std`` into the codec's latent statistics.

:func:`load_wan_diffusers` reads a directory as ``save_pretrained`` writes it (``config.json`` and
``diffusion_pytorch_model.safetensors``, or shards named by ``*.safetensors.index.json``), either a
``WanTransformer3DModel`` folder or a pipeline folder with ``transformer/`` and optionally ``vae/``,
tensor by tensor so that only one copy of the weights is ever in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import PRESETS, AstraConfig, CodecConfig, ConfigError
from .transformer import AstraTransformer

# diffusers ``WanTransformer3DModel`` arguments of Wan2.1-T2V-1.3B (its transformer/config.json);
# the class's own defaults are the 14B model's.
WAN21_1_3B_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6,
)

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
# The text branch: loaded with text_dim > 0, folded into blocks.N.context_bias with context_bias.
TEXT_WAN_KEYS = [
    r"condition_embedder\.text_embedder\.linear_[12]\.(weight|bias)",
    r"blocks\.\d+\.attn2\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)",
    r"blocks\.\d+\.attn2\.norm_[qk]\.weight",
    r"blocks\.\d+\.norm2\.(weight|bias)",
]
# Astra's own layers: never in a Wan checkpoint, they keep their initialisation.
ASTRA_ONLY = re.compile(r"(blocks\.\d+\.(act_adapter|action_proj)|action_encoder)\.")
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
                    fold_text: bool = False, **astra_fields: Any) -> AstraConfig:
    """An AstraConfig whose backbone matches a diffusers ``WanTransformer3DModel`` config
    (``fold_text``: the text cross-attention folded into ``context_bias`` instead of kept)."""
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
        text_dim=0 if fold_text else wan_config.get("text_dim", 4096),
        context_bias=fold_text,
        **astra_fields,
    )


@dataclass
class WanImportReport:
    """What became of every tensor of an import (each Wan key is in exactly one of the first two)."""

    loaded: list[str] = field(default_factory=list)  # Wan keys copied under the same name
    folded: list[str] = field(default_factory=list)  # Wan text-branch keys folded into context_bias
    fresh: list[str] = field(default_factory=list)  # Astra keys left at their initialisation (new layers)
    vae_loaded: list[str] = field(default_factory=list)  # AutoencoderKLWan keys copied into codec.vae
    source: str = ""

    def summary(self) -> str:
        vae = f", {len(self.vae_loaded)} VAE tensors" if self.vae_loaded else ", no VAE"
        return (f"Wan import from {self.source or 'a state dict'}: {len(self.loaded)} tensors loaded, "
                f"{len(self.folded)} text-branch tensors folded into blocks.N.context_bias, "
                f"{len(self.fresh)} Astra tensors at their initialisation{vae}")


@torch.no_grad()
def zero_context_bias(text: dict[str, torch.Tensor], block: int) -> torch.Tensor:
    """Block ``block``'s cross-attention output for an all-zero text context: to_out(to_v(e)),
    e = text_embedder(0) = linear_2(gelu_tanh(linear_1.bias)); computed in float64."""
    def get(name: str) -> torch.Tensor:
        return text[name].double()

    e = F.linear(F.gelu(get("condition_embedder.text_embedder.linear_1.bias"), approximate="tanh"),
                 get("condition_embedder.text_embedder.linear_2.weight"),
                 get("condition_embedder.text_embedder.linear_2.bias"))
    v = F.linear(e, get(f"blocks.{block}.attn2.to_v.weight"), get(f"blocks.{block}.attn2.to_v.bias"))
    return F.linear(v, get(f"blocks.{block}.attn2.to_out.0.weight"), get(f"blocks.{block}.attn2.to_out.0.bias"))


# The text-branch tensors the fold reads (the others do not change a zero context's output).
_FOLD_INPUTS = re.compile(r"condition_embedder\.text_embedder\.linear_(1\.bias|2\.(weight|bias))"
                          r"|blocks\.\d+\.attn2\.(to_v|to_out\.0)\.(weight|bias)")


@torch.no_grad()
def import_wan_tensors(model: AstraTransformer, tensors: Iterable[tuple[str, torch.Tensor]]) -> WanImportReport:
    """Copy diffusers Wan tensors ``(key, tensor)`` into ``model`` one at a time (any order).

    Every key must map (unknown and image-to-video keys are all listed in one error), match in shape,
    and every backbone tensor of ``model`` must be filled. With ``config.context_bias`` the text branch
    is folded (module docstring); with ``text_dim`` > 0 it loads; with neither it is refused.
    """
    fold = model.config.context_bias
    ours = model.state_dict()
    report = WanImportReport()
    unknown, mismatched, fold_inputs = [], [], {}
    for key, value in tensors:
        try:
            name = map_wan_key(key)
        except ValueError as err:
            unknown.append(str(err))
            continue
        if fold and any(re.fullmatch(p, key) for p in TEXT_WAN_KEYS):
            report.folded.append(key)
            if _FOLD_INPUTS.fullmatch(key):
                fold_inputs[key] = value.detach().clone()
            continue
        if name not in ours:
            unknown.append(f"Wan key {key!r} has no place in this model (text branch: set text_dim, or "
                           "context_bias to fold it)")
            continue
        if ours[name].shape != value.shape:
            mismatched.append(f"{key}: Wan {tuple(value.shape)}, astra_ros {tuple(ours[name].shape)}")
            continue
        ours[name].copy_(value)  # state_dict tensors share storage with the parameters
        report.loaded.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} Wan tensors cannot be imported: " + "; ".join(unknown[:20])
                         + (" ..." if len(unknown) > 20 else ""))
    if mismatched:
        raise ValueError(f"shape mismatch for {len(mismatched)} Wan tensors: " + "; ".join(mismatched[:10]))
    filled = set(report.loaded)
    if fold:
        for i, block in enumerate(model.blocks):
            try:
                bias = zero_context_bias(fold_inputs, i)
            except KeyError as err:
                raise ValueError(f"cannot fold block {i}'s cross-attention: the Wan weights lack {err}") from err
            block.context_bias.copy_(bias.to(block.context_bias.dtype))
            filled.add(f"blocks.{i}.context_bias")
    left = sorted(k for k in ours if k not in filled)
    missing_backbone = [k for k in left if not ASTRA_ONLY.match(k)]
    if missing_backbone:
        raise ValueError(f"the Wan weights lack {len(missing_backbone)} backbone tensors, e.g. {missing_backbone[:3]}")
    report.fresh = left
    return report


def load_wan_transformer(model: AstraTransformer, wan_state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy a diffusers Wan state dict into ``model``; returns the Astra keys left at their init."""
    return import_wan_tensors(model, wan_state_dict.items()).fresh


# ----------------------------------------------------------------------------- diffusers directories

def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err


def safetensors_files(directory: Path) -> list[Path]:
    """The weight files of a diffusers model folder: the shards its index names, or its one file."""
    indexes = sorted(directory.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise ValueError(f"{directory} holds several shard indexes {[p.name for p in indexes]}; keep one variant")
    if indexes:
        names = sorted(set(_read_json(indexes[0]).get("weight_map", {}).values()))
        files = [directory / n for n in names]
        absent = [str(f) for f in files if not f.is_file()]
        if not files or absent:
            raise ValueError(f"{indexes[0]} names missing shards {absent[:3]}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if len(files) != 1:
        bins = sorted(p.name for p in directory.glob("*.bin"))
        hint = f" (only {bins}: convert to safetensors, pickles are not loaded)" if bins else ""
        raise ValueError(f"{directory} must hold one .safetensors file or a shard index, found "
                         f"{[p.name for p in files]}{hint}")
    return files


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of ``files``, read one at a time (peak memory: one tensor beyond the model)."""
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


def find_wan_parts(directory: str | Path) -> tuple[Path, Path | None]:
    """(transformer folder, VAE folder or None) of a diffusers Wan model or pipeline folder."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")

    def kind(folder: Path) -> str | None:
        cfg = folder / "config.json"
        return _read_json(cfg).get("_class_name") if cfg.is_file() else None

    if kind(root) == "WanTransformer3DModel":
        return root, None
    if kind(root / "transformer") != "WanTransformer3DModel":
        raise ValueError(f"{root} is neither a WanTransformer3DModel folder nor a pipeline folder with "
                         "transformer/config.json of that class")
    vae = root / "vae"
    if vae.exists() and kind(vae) != "AutoencoderKLWan":
        raise ValueError(f"{vae} is not an AutoencoderKLWan folder (config.json _class_name {kind(vae)!r})")
    return root / "transformer", (vae if vae.exists() else None)


def codec_from_wan_vae(vae_config: dict[str, Any]) -> CodecConfig:
    """The CodecConfig of a Wan2.1 ``AutoencoderKLWan`` config; ValueError for what the codec cannot hold."""
    unsupported = {k: vae_config.get(k) for k in ("attn_scales", "patch_size", "is_residual", "decoder_base_dim")
                   if vae_config.get(k) not in (None, [], False)}
    if unsupported:
        raise ValueError(f"AutoencoderKLWan options {unsupported} (Wan 2.2 style) are not supported")
    return CodecConfig(kind="wan", latent_channels=vae_config.get("z_dim", 16), base_dim=vae_config.get("base_dim", 96),
                       dim_mult=tuple(vae_config.get("dim_mult", (1, 2, 4, 4))),
                       num_res_blocks=vae_config.get("num_res_blocks", 2),
                       temporal_downsample=tuple(vae_config.get("temperal_downsample", (False, True, True))))


BACKBONE_FIELDS = ("patch_size", "num_attention_heads", "attention_head_dim", "ffn_dim", "num_layers", "freq_dim",
                   "eps", "text_dim", "context_bias", "cross_attn_norm")


def wan_model_config(directory: str | Path, config: AstraConfig | None = None) -> AstraConfig:
    """The AstraConfig for the Wan weights in ``directory``: ``config`` checked against them, or (None) the
    ``wan2.1-1.3b`` preset with its backbone and codec taken from the directory's configs."""
    transformer_dir, vae_dir = find_wan_parts(directory)
    wan_cfg = _read_json(transformer_dir / "config.json")
    codec = codec_from_wan_vae(_read_json(vae_dir / "config.json")) if vae_dir else None
    if config is None:
        base = {k: v for k, v in PRESETS["wan2.1-1.3b"].items() if k not in ("codec", "resolution", *BACKBONE_FIELDS)}
        return config_from_wan(wan_cfg, PRESETS["wan2.1-1.3b"]["resolution"],
                               codec or PRESETS["wan2.1-1.3b"]["codec"], fold_text=True, **base)
    expected = config_from_wan(wan_cfg, config.resolution, config.codec, fold_text=config.context_bias)
    wrong = [f"{k}: config {getattr(config, k)!r}, Wan {getattr(expected, k)!r}" for k in BACKBONE_FIELDS
             if getattr(config, k) != getattr(expected, k)]
    if codec is not None and codec != config.codec:
        wrong.append(f"codec: config {config.codec}, Wan VAE {codec}")
    if wrong:
        hint = (" (set context_bias: true to fold Wan's text cross-attention, as the wan2.1-1.3b preset does)"
                if not config.context_bias and not config.text_dim and wan_cfg.get("text_dim") else "")
        raise ConfigError(f"the model config does not match the Wan weights in {directory}: " + "; ".join(wrong) + hint)
    return config


@torch.no_grad()
def load_wan_vae(codec: torch.nn.Module, vae_dir: Path) -> list[str]:
    """Copy an ``AutoencoderKLWan`` folder into ``codec`` (a LatentCodec of kind wan), its latents_mean/std
    into the codec's statistics. Every key must match both ways."""
    vae_cfg = _read_json(vae_dir / "config.json")
    ours = codec.vae.state_dict()
    seen, problems = [], []
    for key, value in iter_safetensors(safetensors_files(vae_dir)):
        if key not in ours:
            problems.append(f"unexpected {key}")
        elif ours[key].shape != value.shape:
            problems.append(f"{key}: file {tuple(value.shape)}, codec {tuple(ours[key].shape)}")
        else:
            ours[key].copy_(value)
            seen.append(key)
    problems += [f"missing {k}" for k in sorted(set(ours) - set(seen))]
    if problems:
        raise ValueError(f"{vae_dir} does not match the codec: {len(problems)} problems, e.g. {problems[:5]}")
    c = codec.latent_mean.numel()
    for name, buffer in (("latents_mean", codec.latent_mean), ("latents_std", codec.latent_std)):
        values = vae_cfg.get(name)
        if values is not None:
            if len(values) != c:
                raise ValueError(f"{vae_dir}/config.json {name} has {len(values)} entries, the codec {c} channels")
            buffer.copy_(torch.tensor(values, dtype=buffer.dtype))
    return seen


def load_wan_diffusers(directory: str | Path, config: AstraConfig | None = None):
    """A ``WorldModel`` holding the diffusers-format Wan2.1 weights in ``directory`` (transformer, and the
    VAE where the folder has one) and the :class:`WanImportReport` of what became of every tensor.

    ``config``: the Astra model to build (checked against the Wan configs); None = the ``wan2.1-1.3b``
    preset with the directory's backbone. Its action layers keep their initialisation, so the model
    starts as the Wan backbone's exact function for any action.
    """
    from .world_model import WorldModel

    transformer_dir, vae_dir = find_wan_parts(directory)
    config = wan_model_config(directory, config)
    model = WorldModel(config)
    report = import_wan_tensors(model.transformer, iter_safetensors(safetensors_files(transformer_dir)))
    report.source = str(directory)
    if vae_dir is not None:
        report.vae_loaded = load_wan_vae(model.codec, vae_dir)
    return model.eval(), report
