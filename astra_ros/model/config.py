"""The one configuration of an Astra world model, saved as ``config.json``.

Every field is an argument of the model; nothing about a checkpoint is hard-coded elsewhere.
Loading validates the JSON against these dataclasses: unknown keys, wrong types and
inconsistent values are rejected with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Contract modalities (DESIGN §2) and their per-frame action sizes.
CONTRACT_MODALITIES: dict[str, int] = {"camera": 12, "robot": 10, "twist": 6, "keys": 7}
# What the transformer's output can stand for (AstraConfig.prediction).
PREDICTIONS = ("velocity", "x0")


class ConfigError(ValueError):
    """A ``config.json`` that does not describe a valid Astra model."""


@dataclass(frozen=True)
class CodecConfig:
    """The latent codec: a diffusers autoencoder applied frame by frame."""

    kind: str = "autoencoder_kl"  # "autoencoder_kl" (small 2D VAE trained here) or "wan" (AutoencoderKLWan)
    latent_channels: int = 8  # channels of the latent frames the transformer sees
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # autoencoder_kl: width per level; spatial factor 2**(n-1)
    layers_per_block: int = 1  # autoencoder_kl: resnet layers per level
    norm_num_groups: int = 8  # autoencoder_kl: GroupNorm groups (must divide every width)
    base_dim: int = 96  # wan: base width of the 3D causal VAE
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # wan: width multipliers; spatial factor 2**(n-1)
    num_res_blocks: int = 2  # wan: resnet blocks per level
    temporal_downsample: tuple[bool, ...] = (False, True, True)  # wan: as Wan2.1 (weights differ per level); frames are still coded one by one

    @property
    def levels(self) -> tuple[int, ...]:
        """The widths (autoencoder_kl) or width multipliers (wan) of the codec's levels."""
        return self.block_out_channels if self.kind == "autoencoder_kl" else self.dim_mult

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along each image axis."""
        return 2 ** (len(self.levels) - 1)

    @property
    def temporal_factor(self) -> int:
        """Pixel frames per latent frame. Frames are coded one by one so that streams can be cut
        anywhere; Wan's VAE codes a lone frame as one latent frame (as for its first frame)."""
        return 1


@dataclass(frozen=True)
class AstraConfig:
    """Shapes, streaming limits and sampling defaults of one Astra world model."""

    # --- frames and codec
    resolution: tuple[int, int] = (64, 64)  # (H, W) pixels the model sees; inputs are resized to it
    codec: CodecConfig = field(default_factory=CodecConfig)
    # --- transformer (names follow diffusers' WanTransformer3DModel)
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (frames, rows, cols) of latent cells per token
    num_attention_heads: int = 4
    attention_head_dim: int = 48  # split into frame/row/column rotary parts as in Wan
    ffn_dim: int = 768  # hidden width of each block's MLP
    num_layers: int = 6
    freq_dim: int = 256  # sinusoidal width of the flow-time embedding
    eps: float = 1e-6  # norm epsilon
    cross_attn_norm: bool = True  # LayerNorm before cross-attention (only used when text_dim > 0)
    text_dim: int = 0  # width of an optional text/context embedding; 0 = no cross-attention (Astra default)
    # Each block adds a constant vector (``blocks.N.context_bias``) to its residual stream where Wan puts
    # its text cross-attention: Wan2.1's cross-attention folded for a fixed all-zero text context, whose
    # output is exactly that constant (model/wan_import.py). Needs text_dim 0.
    context_bias: bool = False
    rope_theta: float = 10000.0
    # --- time base
    # [s] time between the frames the model was trained on (the simulator records at 10 Hz): a live
    # stream is resampled to it, and twist actions (velocity x interval) are taken over it.
    frame_interval_s: float = 0.1
    # --- streaming
    chunk_frames: int = 2  # latent frames per autoregressive chunk
    max_history_chunks: int = 8  # KV cache bound: a chunk attends to at most this many chunks before it
    # --- actions (ACT-Adapter + MoAE)
    modalities: dict[str, int] = field(default_factory=lambda: dict(CONTRACT_MODALITIES))
    action_dim: int = 64  # shared action-feature width after the per-modality projectors
    num_experts: int = 4  # MoAE experts (1 = a single shared MLP, the no-MoAE ablation)
    expert_hidden_dim: int = 128  # hidden width of each expert MLP
    load_balance_weight: float = 0.01  # weight of the router's load-balancing loss in training
    action_dropout: float = 0.1  # probability of replacing a chunk's actions by the null action in training
    # --- flow matching
    history_noise_max: float = 0.3  # training: history chunks noised to t_h ~ U(0, this)
    history_noise: float = 0.05  # inference: fixed noise level of history chunks
    train_shift: float = 1.0  # shift of the logit-normal training time distribution (1 = none)
    sample_shift: float = 2.0  # shift of the Euler sampling schedule (diffusers FlowMatchEuler style)
    denoise_steps: int = 8  # Euler steps per chunk at inference
    guidance_scale: float = 3.0  # action-free guidance s; 1 = no guidance (single pass)
    # Per-modality overrides of guidance_scale (modality -> s): guidance helps some action kinds and
    # hurts others, so a checkpoint can carry the scale chosen for each on validation data.
    guidance_scale_by_modality: dict[str, float] = field(default_factory=dict)
    # Training: each latent cell's flow loss is weighted by 1 + this * (its change since the previous
    # frame / the batch's mean change), normalised to mean 1, so the few cells where something moves
    # (an arm in a fixed view) count for more than the static background. 0 = plain MSE.
    motion_loss_weight: float = 0.0
    # Weight of a pixel loss on the network's clean-latent estimate: the estimate and the real
    # latents decoded by the frozen codec, their MSE in [-1, 1] pixel units, on ``pixel_loss_frames``
    # target frames drawn per batch (decoding every frame would double a CPU step). Latent MSE is a
    # poor proxy for what a frame looks like with this codec: isotropic latent noise of MSE 0.05
    # decodes worse than copying the last frame (latent MSE 0.14), so the loss is put where PSNR is.
    # 0 = latent loss only (the shipped default: from stage 8 it moved nothing, model card).
    pixel_loss_weight: float = 0.0
    pixel_loss_frames: int = 16
    # --- decoding
    # Frames are decoded as the newest observed frame plus the decoded change since it,
    # decode(z_pred) - decode(z_last): what stays still keeps the camera's pixels exactly instead of
    # the codec's reconstruction of them, so the codec's error cancels where nothing moves.
    residual_decoding: bool = False
    # Residual decoding adds this fraction of the decoded change: a shrinkage of an uncertain
    # estimate towards the newest frame (where the change's error is as large as the change, a
    # smaller step lowers the expected squared error). 1 = the whole change. It trades action
    # responsiveness for PSNR (predictions with wrong actions gain more), so the default keeps 1
    # (model card, "Shrinking the predicted change").
    residual_change_scale: float = 1.0
    # Width of the anchor decoder (model/anchor_decoder.py; 0 = none): frames are decoded from their
    # latents together with the newest observed frame, whose pixels are moved along the motion read
    # from the latents, plus the decoded change the move does not explain. It starts as exactly
    # residual decoding, which it replaces, and is trained by astra-train's decoder phase.
    anchor_decoder_width: int = 0
    # Largest motion the anchor decoder looks for between latent frames, in latent cells each way.
    anchor_decoder_search: int = 3
    # --- prediction target
    # A chunk is generated as the change of its latents since the newest latent frame before it
    # (x0 = z - z_last, sampled, then z_last added back), so "nothing moves" is the network's
    # zero output instead of a copy it must reproduce through attention from noised history.
    latent_delta: bool = False
    # What the network's output is: "velocity" (noise - x0, the method's), or "x0", the clean chunk
    # itself (its change, with latent_delta), trained by the MSE on x0 and turned into the velocity
    # (x_t - x0) / t for sampling. With x0 and latent_delta a zero output copies the last frame at
    # every noise level, so a zeroed output head starts a model at exactly copy-last.
    prediction: str = "velocity"
    # With latent_delta: each predicted frame's change is taken from the newest observed frame *turned
    # by the camera rotation its actions imply* (model/view_rotation.py: ``K R K^-1`` warps it exactly
    # for a rotation, whatever the depth) and encoded, instead of from the newest latent frame; the
    # anchor decoder starts from that turned view too. ``camera`` and ``twist`` actions turn it,
    # ``robot`` and ``keys`` do not (the frame itself). Intrinsics: set per stream
    # (``WorldModel.set_intrinsics``, the node's camera_info), else a camera of ``reference_fovy_deg``.
    rotation_reference: bool = False
    # With latent_delta, each sampled chunk's change from its reference is multiplied by this before it
    # is used (decoded and kept as history): a shrinkage of an uncertain estimate towards the reference
    # (the last frame, or with rotation_reference the last frame turned), where an error as large as the
    # change itself costs more than it gains. It trades responsiveness to actions for PSNR. 1 = as sampled.
    delta_scale: float = 1.0
    # The change scale of frames more than ``delta_scale_late_after_s`` after the newest observed frame
    # (None: ``delta_scale`` throughout). A rollout's estimate grows less sure the further it runs from a
    # real frame, and the network never trained on clips longer than ``clip_frames``; a smaller scale late
    # keeps long rollouts from drifting below copying the last frame while the first second keeps its change.
    delta_scale_late: float | None = None
    delta_scale_late_after_s: float = 1.0  # [s] after the newest observed frame
    reference_fovy_deg: float = 67.5  # [deg] vertical field of view assumed without intrinsics
    # --- action input
    # Each frame's action also enters as its motion since the frame before (the camera's relative
    # transform, the change of any other modality's vector) through its own zero-initialised projector,
    # so "how far did it move since the last frame" need not be worked out through attention.
    action_motion: bool = False
    # ``robot`` actions also drawn where the camera sees them (model/arm_map.py): each token gets the
    # end-effector blob under its patch on a cells x cells grid, from the camera's pose in the arm's
    # base frame and its intrinsics (``WorldModel.set_camera_in_base``). 0 = off (the vector only).
    arm_map_cells: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    # ----- derived sizes
    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def latent_size(self) -> tuple[int, int]:
        """(h, w) latent cells per frame."""
        f = self.codec.spatial_factor
        return self.resolution[0] // f, self.resolution[1] // f

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) tokens per frame: latent cells per patch side."""
        h, w = self.latent_size
        return h // self.patch_size[1], w // self.patch_size[2]

    @property
    def tokens_per_frame(self) -> int:
        rows, cols = self.token_grid
        return rows * cols

    def delta_scales(self, first_frame_ahead: int) -> float | tuple[float, ...]:
        """Change scale of a predicted chunk whose first pixel frame is ``first_frame_ahead`` frames after the
        newest observed one (1 = the next frame): ``delta_scale`` when all of it lies within
        ``delta_scale_late_after_s``, else one scale per latent frame (late from its last pixel frame)."""
        if self.delta_scale_late is None:
            return self.delta_scale
        tf = self.codec.temporal_factor
        # A frame k intervals ahead is late when k * interval exceeds the limit (a nanosecond's slack for rounding).
        late = [(first_frame_ahead + (i + 1) * tf - 1) * self.frame_interval_s > self.delta_scale_late_after_s + 1e-9
                for i in range(self.chunk_frames)]
        if not any(late):
            return self.delta_scale
        return tuple(self.delta_scale_late if is_late else self.delta_scale for is_late in late)

    def guidance_scale_for(self, modality: str | None) -> float:
        """The default guidance scale for actions of ``modality`` (its override, else ``guidance_scale``)."""
        return float(self.guidance_scale_by_modality.get(modality, self.guidance_scale))

    @property
    def frames_per_chunk(self) -> int:
        """Pixel frames per chunk (what ``WorldModel.step`` returns)."""
        return self.chunk_frames * self.codec.temporal_factor

    # ----- JSON
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["codec"]["spatial_factor"] = self.codec.spatial_factor  # recorded for readers; ignored on load
        d["codec"]["temporal_factor"] = self.codec.temporal_factor
        return d

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AstraConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        codec = data.pop("codec", {})
        if not isinstance(codec, dict):
            raise ConfigError(f"config field 'codec' must be an object, got {type(codec).__name__}")
        codec = {k: v for k, v in codec.items() if k not in ("spatial_factor", "temporal_factor")}
        codec_cfg = CodecConfig(**_typed_fields(CodecConfig, codec, "codec."))
        return cls(codec=codec_cfg, **_typed_fields(cls, data, ""))

    @classmethod
    def from_json(cls, path: str | Path) -> "AstraConfig":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to be a model config") from None
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err


def _typed_fields(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Check keys and JSON types of ``data`` against dataclass ``cls``; convert lists to tuples."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - {"codec"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config keys {[prefix + k for k in unknown]}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for name, value in data.items():
        out[name] = coerce_field(hints[name], value, prefix + name)
    return out


def coerce_field(hint: Any, value: Any, name: str) -> Any:
    """``value`` checked against the type ``hint`` of field ``name`` (lists become tuples); ConfigError if it does not fit."""
    origin = typing.get_origin(hint)
    if hint is Any:  # free-form (a recipe's model overrides): checked where it is used
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{name}' must be true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config field '{name}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"config field '{name}' must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field '{name}' must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{name}' must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        if len(args) != 2 or args[1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config field '{name}' must have {len(args)} items, got {value!r}")
        return tuple(coerce_field(item, v, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{name}' must be an object, got {value!r}")
        _, vtype = typing.get_args(hint)
        return {str(k): coerce_field(vtype, v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(hint, types.UnionType):
        args = typing.get_args(hint)
        if len(args) == 2 and type(None) in args:  # optional: null, or the other type
            if value is None:
                return None
            try:
                return coerce_field(next(a for a in args if a is not type(None)), value, name)
            except ConfigError as err:
                raise ConfigError(f"{err} (or null)") from None
        raise ConfigError(f"unsupported config type for '{name}'")
    raise ConfigError(f"unsupported config type {hint!r} for '{name}'")


# What a config may ask for: beyond these a corrupt or hostile config.json would allocate until the
# machine runs out of memory instead of failing with a reason (Wan2.1-14B, the largest of its family,
# is 40 blocks of width 5120 with an FFN of 13824).
CONFIG_LIMITS = {"num_layers": 128, "ffn_dim": 65536, "attention_head_dim": 1024, "num_attention_heads": 128,
                 "freq_dim": 8192, "chunk_frames": 64, "max_history_chunks": 1024, "action_dim": 8192,
                 "num_experts": 256, "expert_hidden_dim": 65536, "text_dim": 16384, "anchor_decoder_width": 1024}
MAX_RESOLUTION_PX = 4096  # per side
MAX_PARAMETERS = 50e9  # a rough count over the transformer's blocks


def _check_limits(cfg: AstraConfig) -> None:
    for name, limit in CONFIG_LIMITS.items():
        value = getattr(cfg, name)
        if value > limit:  # (negative values are refused below, with the reason for each field)
            raise ConfigError(f"{name}={value} is above the limit of {limit}")
    if any(not 0 < side <= MAX_RESOLUTION_PX for side in cfg.resolution):
        raise ConfigError(f"resolution {cfg.resolution} must be within 1..{MAX_RESOLUTION_PX} px per side")
    widths = cfg.codec.levels
    if max(widths, default=0) > 4096 or cfg.codec.latent_channels > 1024 or len(widths) > 16:
        raise ConfigError(f"codec widths {widths} / latent_channels {cfg.codec.latent_channels} are beyond "
                          "what a codec needs (<= 4096 channels, <= 16 levels, <= 1024 latent channels)")
    inner = cfg.num_attention_heads * cfg.attention_head_dim
    per_block = 4 * inner * inner + 2 * inner * cfg.ffn_dim
    if cfg.num_layers * per_block > MAX_PARAMETERS:
        raise ConfigError(f"the transformer would hold ~{cfg.num_layers * per_block / 1e9:.0f} billion parameters "
                          f"(limit {MAX_PARAMETERS / 1e9:.0f} billion): num_layers={cfg.num_layers}, "
                          f"width={inner}, ffn_dim={cfg.ffn_dim}")
    if not (math.isfinite(cfg.frame_interval_s) and 1e-3 <= cfg.frame_interval_s <= 10.0):
        raise ConfigError(f"frame_interval_s must be in [0.001, 10] s, got {cfg.frame_interval_s}")


def _validate(cfg: AstraConfig) -> None:
    _check_limits(cfg)
    c = cfg.codec
    if c.kind not in ("autoencoder_kl", "wan"):
        raise ConfigError(f"codec.kind must be 'autoencoder_kl' or 'wan', got {c.kind!r}")
    if not c.levels or min(c.levels) < 1:
        raise ConfigError(f"codec needs at least one level of width >= 1, got {c.levels!r}")
    for name in ("latent_channels", "layers_per_block", "norm_num_groups", "base_dim", "num_res_blocks"):
        if getattr(c, name) < 1:
            raise ConfigError(f"codec.{name} must be >= 1, got {getattr(c, name)}")
    if c.kind == "autoencoder_kl" and any(ch % c.norm_num_groups for ch in c.block_out_channels):
        raise ConfigError(f"codec.norm_num_groups={c.norm_num_groups} must divide every block_out_channels {c.block_out_channels}")
    unknown = sorted(set(cfg.modalities) - set(CONTRACT_MODALITIES))
    if unknown:
        raise ConfigError(f"unknown action modalities {unknown}; supported: {sorted(CONTRACT_MODALITIES)}")
    for name, dim in cfg.modalities.items():
        if dim != CONTRACT_MODALITIES[name]:
            raise ConfigError(f"modality '{name}' has {CONTRACT_MODALITIES[name]} numbers per frame, config says {dim}")
    if not cfg.modalities:
        raise ConfigError("config needs at least one action modality")
    if min(cfg.patch_size) < 1:
        raise ConfigError(f"patch_size entries must be >= 1, got {cfg.patch_size}")
    h, w = cfg.resolution
    fh, fw = c.spatial_factor * cfg.patch_size[1], c.spatial_factor * cfg.patch_size[2]
    if h <= 0 or w <= 0 or h % fh or w % fw:
        raise ConfigError(f"resolution {cfg.resolution} must be positive multiples of codec factor x patch = "
                          f"({fh}, {fw})")
    if cfg.context_bias and cfg.text_dim:
        raise ConfigError("context_bias replaces the cross-attention: it needs text_dim 0")
    if cfg.patch_size[0] != 1:
        raise ConfigError("patch_size[0] must be 1: chunks are cut on latent frames")
    if cfg.attention_head_dim < 6 or cfg.attention_head_dim % 2:
        raise ConfigError(f"attention_head_dim must be even and >= 6, got {cfg.attention_head_dim}")
    positive = ("num_attention_heads", "ffn_dim", "num_layers", "freq_dim", "chunk_frames", "max_history_chunks",
                "action_dim", "num_experts", "expert_hidden_dim", "denoise_steps")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("action_dropout", "history_noise_max", "history_noise"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.sample_shift <= 0 or cfg.train_shift <= 0:
        raise ConfigError("sample_shift and train_shift must be > 0")
    if cfg.prediction not in PREDICTIONS:
        raise ConfigError(f"prediction must be one of {PREDICTIONS}, got {cfg.prediction!r}")
    if cfg.guidance_scale < 0:
        raise ConfigError(f"guidance_scale must be >= 0, got {cfg.guidance_scale}")
    for name, scale in cfg.guidance_scale_by_modality.items():
        if name not in cfg.modalities:
            raise ConfigError(f"guidance_scale_by_modality names modality '{name}', which this model does not have "
                              f"(modalities: {list(cfg.modalities)})")
        if scale < 0:
            raise ConfigError(f"guidance_scale_by_modality.{name} must be >= 0, got {scale}")
    if cfg.motion_loss_weight < 0:
        raise ConfigError(f"motion_loss_weight must be >= 0, got {cfg.motion_loss_weight}")
    if cfg.pixel_loss_weight < 0:
        raise ConfigError(f"pixel_loss_weight must be >= 0, got {cfg.pixel_loss_weight}")
    if not 0.0 < cfg.residual_change_scale <= 2.0:
        raise ConfigError(f"residual_change_scale must be in (0, 2], got {cfg.residual_change_scale}")
    if cfg.pixel_loss_frames < 1:
        raise ConfigError(f"pixel_loss_frames must be >= 1, got {cfg.pixel_loss_frames}")
    if cfg.rotation_reference and not cfg.latent_delta:
        raise ConfigError("rotation_reference needs latent_delta: true (it replaces the delta's reference frame)")
    if not 0.0 < cfg.delta_scale <= 2.0:
        raise ConfigError(f"delta_scale must be in (0, 2], got {cfg.delta_scale}")
    if cfg.delta_scale != 1.0 and not cfg.latent_delta:
        raise ConfigError("delta_scale scales the predicted change of latent_delta: set latent_delta: true")
    if cfg.delta_scale_late is not None:
        if not 0.0 < cfg.delta_scale_late <= 2.0:
            raise ConfigError(f"delta_scale_late must be in (0, 2] or null, got {cfg.delta_scale_late}")
        if not cfg.latent_delta:
            raise ConfigError("delta_scale_late scales the predicted change of latent_delta: set latent_delta: true")
    if not (math.isfinite(cfg.delta_scale_late_after_s) and cfg.delta_scale_late_after_s >= 0.0):
        raise ConfigError(f"delta_scale_late_after_s must be >= 0 s, got {cfg.delta_scale_late_after_s}")
    if not 0.0 < cfg.reference_fovy_deg < 180.0:
        raise ConfigError(f"reference_fovy_deg must be in (0, 180), got {cfg.reference_fovy_deg}")
    if not 0 <= cfg.arm_map_cells <= 16:
        raise ConfigError(f"arm_map_cells must be in 0..16 (map cells per token side; 0 = off), got {cfg.arm_map_cells}")
    if cfg.arm_map_cells and "robot" not in cfg.modalities:
        raise ConfigError("arm_map_cells draws robot actions: the model needs the 'robot' modality")
    if cfg.arm_map_cells and c.temporal_factor != 1:
        raise ConfigError("arm_map_cells needs a codec that codes frames one by one (temporal factor 1)")
    if cfg.anchor_decoder_width < 0 or cfg.anchor_decoder_search < 0:
        raise ConfigError(f"anchor_decoder_width and anchor_decoder_search must be >= 0, got "
                          f"{cfg.anchor_decoder_width} and {cfg.anchor_decoder_search}")
    if cfg.anchor_decoder_width:
        if c.spatial_factor < 2:
            raise ConfigError("anchor_decoder_width needs a codec that downsamples (spatial factor >= 2)")
        if not cfg.residual_decoding:
            raise ConfigError("anchor_decoder_width needs residual_decoding: true (the decoder generalises it)")
        if cfg.residual_change_scale != 1.0:
            raise ConfigError("residual_change_scale applies to plain residual decoding; with "
                              "anchor_decoder_width it must stay 1")


PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: a few thousand parameters, 16x16 frames.
    "tiny": dict(
        resolution=(16, 16),
        codec=CodecConfig(latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4),
        num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=2, freq_dim=32,
        chunk_frames=2, max_history_chunks=3, action_dim=16, num_experts=2, expert_hidden_dim=16,
        denoise_steps=3,
    ),
    # The CPU default: 64x64 frames, an 8x codec with 16 channels, 2x2 patches -> 16 tokens per frame,
    # 4 chunks (0.8 s at 10 Hz) of history. Few tokens per frame is what makes training affordable on a CPU.
    "cpu_default": dict(
        codec=CodecConfig(latent_channels=16, block_out_channels=(16, 32, 64, 64), norm_num_groups=8),
        num_attention_heads=4, attention_head_dim=64, ffn_dim=768, num_layers=8, max_history_chunks=4,
    ),
    # The paper's scale (docs/SCALE.md): Wan2.1-T2V-1.3B's transformer (dim 1536 = 12 heads x 128,
    # 30 blocks, FFN 8960) and VAE (base 96, 16 channels, 8x spatial), 832x480 as the official code.
    # Chunks of 4 latent frames behind 4 chunks of history: 20 latent frames in view, inside the
    # 21 (81 pixel frames) Wan2.1 was trained on. Shift 5 and 50 Euler steps are Wan2.1's text-to-video
    # sampling defaults; guidance 3 is the paper's action-free guidance. The text cross-attention is
    # folded for an all-zero context (context_bias). Frames are still coded one by one by the codec
    # (model/wan_vae.py streams Wan's 4x causal temporal compression; not yet the WorldModel's codec).
    "wan2.1-1.3b": dict(
        resolution=(480, 832),
        codec=CodecConfig(kind="wan", latent_channels=16, base_dim=96, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
                          temporal_downsample=(False, True, True)),
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
        freq_dim=256, eps=1e-6, text_dim=0, context_bias=True,
        chunk_frames=4, max_history_chunks=4,
        action_dim=256, num_experts=4, expert_hidden_dim=512,
        train_shift=5.0, sample_shift=5.0, denoise_steps=50, guidance_scale=3.0,
        frame_interval_s=1.0 / 16,  # Wan2.1's 16 fps
    ),
}


def preset(name: str, **overrides: Any) -> AstraConfig:
    """A named configuration, with keyword overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return AstraConfig(**{**PRESETS[name], **overrides})
