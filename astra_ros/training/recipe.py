"""Training recipes: one YAML file says what model to build and how to train it."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from astra_ros.data.yaml_files import DuplicateKeyError, load_yaml_unique_keys

from astra_ros.model.config import PRESETS, AstraConfig, CodecConfig, ConfigError, coerce_field


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable YAML text file ({err})") from err
    try:
        return load_yaml_unique_keys(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    except DuplicateKeyError as err:
        raise ConfigError(f"{path}: {err}") from err


@dataclass(frozen=True)
class TrainRecipe:
    """Everything ``astra-train`` needs besides the data; saved beside every checkpoint."""

    preset: str = "cpu_default"  # model preset (astra_ros.model.config.PRESETS)
    # Overrides of the preset's fields; with --init, of the checkpoint's (how it trains and samples,
    # e.g. latent_delta; fields that change weight shapes fail to load).
    model: dict[str, Any] = field(default_factory=dict)
    clip_frames: int = 8  # frames per training clip (a multiple of frames_per_chunk)
    batch_size: int = 8  # clips per step and per process
    steps: int = 1000  # world-model optimisation steps
    lr: float = 3e-4  # AdamW peak learning rate
    warmup_steps: int = 100  # linear warm-up, then ``lr_decay``
    lr_decay: str = "constant"  # after warm-up: "constant", or "cosine" down to min_lr_ratio * lr at the phase's end
    min_lr_ratio: float = 0.1  # final learning rate of the cosine decay, as a fraction of the peak
    weight_decay: float = 0.01  # AdamW decay of the world-model and decoder phases (the codec phase uses none)
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.999  # EMA of the weights; the EMA is what gets released
    # Measure each modality's action mean/std on the training windows when the world phase starts and
    # standardise actions with them (the projectors are rescaled, so an --init model starts unchanged).
    measure_action_statistics: bool = False
    # Also read every twist bag as a ``keys`` episode (its commands thresholded into one key per frame,
    # as the predictor node does with its default thresholds), so the keys modality learns from the
    # same drives; the bag's windows then appear once per modality.
    twist_bags_as_keys: bool = False
    # Relative sampling weight of each modality's training windows, e.g. {robot: 2.0} to draw arm
    # windows twice as often as their count alone would; modalities not named weigh 1.0. Empty:
    # every window is equally likely (the batches of earlier runs, unchanged).
    modality_weights: dict[str, float] = field(default_factory=dict)
    # With ``arm_map_cells`` in the model: the share of ``robot`` clips trained without their end-effector
    # maps, so that a stream whose camera pose is unknown still gets the vector-only prediction.
    arm_map_dropout: float = 0.2
    # The share of world-model clips whose history after the first chunk is the model's own open-loop rollout
    # from that chunk (its sampler, no gradient), each later chunk still trained towards the real future:
    # what a long rollout feeds back, so the network learns to correct its drift. Costs a rollout per such
    # clip and step. 0: every history is real (earlier runs, unchanged).
    rollout_history_fraction: float = 0.0
    # The modalities whose clips may get a rolled-out history (empty: all). A rollout of the arm from a
    # history that already blurred it taught the network to hedge (docs/RESULTS.md), so a run can keep
    # it to the turning modalities.
    rollout_history_modalities: tuple[str, ...] = ()
    # The end-effector map projector's learning rate as a multiple of ``lr`` (it starts from zero).
    arm_map_lr_multiple: float = 1.0
    # Zero the transformer's output projection before training (after --init / --init-transformer):
    # with ``prediction: x0`` and ``latent_delta`` in ``model`` the model then starts as an exact copy
    # of the last frame, which training can only move where the data says something moves.
    reset_output_head: bool = False
    codec_steps: int = 0  # autoencoder steps before the world model (0 = keep the codec as initialised/loaded)
    codec_lr: float = 1e-3
    codec_batch_frames: int = 16  # frames per autoencoder step (drawn from the sampled clips)
    codec_kl_weight: float = 1e-6  # KL weight of the autoencoder (small: we want a sharp, compact code)
    # Anchor-decoder phase, after the world model (needs ``anchor_decoder_width`` in the model): each
    # step draws ``decoder_clips`` windows of ``decoder_context_frames`` observed frames and
    # ``decoder_horizon_frames`` after them, and trains the decoder to turn the newest observed frame
    # plus each later frame's latents into that frame (the codec and the transformer stay frozen).
    # The latents are the real ones, except for a ``decoder_predicted_share`` of the frames, which
    # get the world model's own rollout over the horizon with the true actions (its sampler, as at
    # inference). 0 by default: tried on the default (share 0.5, model card), it hedged towards the
    # blurred predictions and lost action sensitivity instead of gaining PSNR.
    decoder_steps: int = 0
    decoder_lr: float = 1e-3
    decoder_clips: int = 4
    decoder_context_frames: int = 4
    decoder_horizon_frames: int = 10
    decoder_predicted_share: float = 0.0
    checkpoint_every: int = 200  # steps between checkpoints (and at the end)
    log_every: int = 10  # steps between loss CSV rows
    seed: int = 0
    num_threads: int = 0  # torch threads per process (0 = torch's default)
    # "fp32", or "bf16": the training forward passes under bfloat16 autocast (weights, optimizer,
    # EMA, the loss and the codec's encoding of clips stay fp32). Much faster where the hardware
    # multiplies bf16 (CPUs with AMX / AVX512-BF16, GPUs); see bench/train_step.py.
    precision: str = "fp32"

    def model_config(self) -> AstraConfig:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; known: {sorted(PRESETS)}")
        if not isinstance(self.model, dict):
            raise ConfigError(f"model must be a mapping of config fields, got {self.model!r}")
        fields = {**PRESETS[self.preset], **self.model}
        if isinstance(fields.get("codec"), CodecConfig):
            fields["codec"] = dataclasses.asdict(fields["codec"])
        try:  # from_dict names unknown or mistyped fields
            return AstraConfig.from_dict(fields)
        except ConfigError as err:
            raise ConfigError(f"model: {err}") from err

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainRecipe":
        data = _read_yaml(Path(path))
        if data is None:  # an empty file would train 1,000 steps of defaults nobody chose
            raise ConfigError(f"{path}: the recipe is empty; see config/default/01-base.yaml for one")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a training recipe must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown recipe keys {unknown}; known: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            if hints[name] is float and isinstance(value, str):
                # YAML 1.1 reads 3e-4 (no dot) as a string; take it as the number it means
                try:
                    value = float(value)
                except ValueError:
                    pass
            try:
                data[name] = coerce_field(hints[name], value, name)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}".replace("config field", "recipe field")) from err
        recipe = cls(**data)
        try:
            recipe.validate()
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
        return recipe

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(dataclasses.asdict(self), sort_keys=False))

    def validate(self) -> None:
        cfg = self.model_config()
        if self.clip_frames % cfg.frames_per_chunk or self.clip_frames < 2 * cfg.frames_per_chunk:
            raise ConfigError(f"clip_frames={self.clip_frames} must be a multiple of frames_per_chunk="
                              f"{cfg.frames_per_chunk} and hold at least two chunks")
        for name in ("batch_size", "checkpoint_every", "log_every", "codec_batch_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if min(self.steps, self.codec_steps, self.decoder_steps, self.warmup_steps) < 0:
            raise ConfigError("steps, codec_steps, decoder_steps and warmup_steps must be >= 0")
        if self.seed < 0 or self.num_threads < 0:
            raise ConfigError(f"seed and num_threads must be >= 0, got {self.seed} and {self.num_threads}")
        if self.steps + self.codec_steps + self.decoder_steps == 0:
            raise ConfigError("steps, codec_steps and decoder_steps are all 0: nothing to train")
        if self.decoder_steps:  # whether the model has an anchor decoder: the trainer checks (--init may bring one)
            for name in ("decoder_clips", "decoder_context_frames", "decoder_horizon_frames"):
                if getattr(self, name) < 1:
                    raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
            n = cfg.frames_per_chunk
            if self.decoder_context_frames % n or self.decoder_horizon_frames % n:
                raise ConfigError(f"decoder_context_frames={self.decoder_context_frames} and decoder_horizon_frames="
                                  f"{self.decoder_horizon_frames} must be multiples of frames_per_chunk={n}")
            if not 0.0 <= self.decoder_predicted_share <= 1.0:
                raise ConfigError(f"decoder_predicted_share must be in [0, 1], got {self.decoder_predicted_share}")
        for name in ("lr", "codec_lr", "decoder_lr", "grad_clip"):
            # a negative max norm in clip_grad_norm_ flips every gradient: training would ascend the loss
            if not 0.0 < getattr(self, name) < float("inf"):
                raise ConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "codec_kl_weight"):
            if not 0.0 <= getattr(self, name) < float("inf"):
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.lr_decay not in ("constant", "cosine"):
            raise ConfigError(f"lr_decay must be 'constant' or 'cosine', got {self.lr_decay!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.arm_map_lr_multiple <= 1000.0:
            raise ConfigError(f"arm_map_lr_multiple must be in (0, 1000], got {self.arm_map_lr_multiple}")
        if not 0.0 <= self.rollout_history_fraction <= 1.0:
            raise ConfigError(f"rollout_history_fraction must be in [0, 1], got {self.rollout_history_fraction}")
        if self.rollout_history_fraction > 0 and self.clip_frames < 3 * cfg.frames_per_chunk:
            raise ConfigError(f"rollout_history_fraction needs clips of at least 3 chunks (clip_frames >= "
                              f"{3 * cfg.frames_per_chunk}): the first is observed, the last only a target")
        if not isinstance(self.rollout_history_modalities, (list, tuple)):
            raise ConfigError("rollout_history_modalities must be a list of modality names, got "
                              f"{self.rollout_history_modalities!r}")
        unknown = sorted(set(self.rollout_history_modalities) - set(cfg.modalities))
        if unknown:
            raise ConfigError(f"rollout_history_modalities names modalities {unknown} the model does not have "
                              f"({list(cfg.modalities)})")
        if self.rollout_history_modalities and self.rollout_history_fraction == 0:
            raise ConfigError("rollout_history_modalities says which clips get rolled-out histories, but "
                              "rollout_history_fraction is 0: set a fraction, or leave the modalities out")
        if not 0.0 <= self.arm_map_dropout <= 1.0:
            raise ConfigError(f"arm_map_dropout must be in [0, 1], got {self.arm_map_dropout}")
        if not isinstance(self.modality_weights, dict):
            raise ConfigError(f"modality_weights must be a mapping of modality to weight, got {self.modality_weights!r}")
        unknown = sorted(set(self.modality_weights) - set(cfg.modalities))
        if unknown:
            raise ConfigError(f"modality_weights names modalities {unknown} the model does not have "
                              f"({list(cfg.modalities)})")
        for name, weight in self.modality_weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight < float("inf"):
                raise ConfigError(f"modality_weights[{name!r}] must be a finite number >= 0, got {weight!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
