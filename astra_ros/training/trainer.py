"""The training loop: codec phase, then the world model with flow matching, on ROS 2 bags.

Runs as one process or under ``torchrun`` (DistributedDataParallel, gloo on CPU / nccl on GPU,
one GPU per process: ``cuda:LOCAL_RANK``): every process samples its own clips, gradients are
averaged, and at the end the processes check that their weights are identical. Clips and all
random draws stay on the CPU (the generators are CPU ones), so a run's sequence of clips and
noise does not depend on the device. Rank 0 writes the loss CSV and plot, resumable
training states and the released checkpoint (EMA weights, ``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from astra_ros.data.bags import BagError
from astra_ros.data.clips import ClipDataset
from astra_ros.model import CheckpointError, WorldModel
from astra_ros.model.config import AstraConfig, ConfigError
from astra_ros.model.precision import UnreliablePrecision, require_bf16_agrees, transformer_probe

# The loop's parts and the data plan live in their own modules; imported by name here, where callers
# (tests, astra-train) have always found them.
from .arm_maps import ArmMapBatches, world_param_groups
from .components import (  # noqa: F401
    EMA,
    CodecObjective,
    DecoderObjective,
    Objective,
    init_distributed,
    learning_rate,
    training_device,
    weights_digest,
)
from .data import DataSource, resolve_sources, training_episodes, training_plan  # noqa: F401
from .init import init_from, load_codec, load_transformer
from .interrupt import DeferredInterrupt
from .recipe import TrainRecipe
from .references import chunk_references, clip_intrinsics, turned_anchors
from .rollouts import eligible_rows, rolled_out_history, rollout_rows
from .state import load_optimizer_state, load_train_state, read_state_meta, save_train_state

log = logging.getLogger("astra_train")

STATE_DIR = "train_state"
LOSS_COLUMNS = ["step", "phase", "loss", "part_a", "part_b", "lr", "steps_per_s", "elapsed_s"]
# Recipe fields a resumed run may change: how long it goes on (a cosine schedule stretches with it, and
# the rate where it stopped jumps: warned) and how it reports.
RESUME_MAY_CHANGE = frozenset({"steps", "decoder_steps", "checkpoint_every", "log_every", "num_threads"})


def _loss_rows_up_to(path: Path, step: int) -> list[list[str]]:
    """The rows of an existing loss CSV logged at or before ``step`` (none if there is no file)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) <= step]


# Under bf16 autocast the q/k RMS norms see bf16 inputs and fp32 weights and take the unfused path;
# nothing is wrong, so this warning is silenced (here and in bench/train_step.py).
BF16_NORM_WARNING = "Mismatch dtype between input and weight"


def _recipe_defaults() -> dict[str, Any]:
    """Each recipe field's default as a state's JSON holds it (tuples -> lists)."""
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(TrainRecipe)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    return json.loads(json.dumps(defaults))


class Trainer:
    def __init__(self, recipe: TrainRecipe, data: Sequence[DataSource | Path | str], out_dir: Path, *, resume: bool = False,
                 init_checkpoint: str | None = None, init_codec: str | None = None,
                 init_transformer: str | None = None, stop_after: int | None = None,
                 progress: bool = True, device: str = "auto") -> None:
        self.recipe = recipe
        self.out = Path(out_dir)
        self.resume = resume
        self.stop_after = stop_after  # stop (as if interrupted) after this many total steps
        self.progress = progress
        self.device = training_device(device, int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.is_available())
        self.dist = init_distributed(self.device)
        if recipe.num_threads:
            torch.set_num_threads(recipe.num_threads)
        if recipe.precision == "bf16":
            warnings.filterwarnings("ignore", message=BF16_NORM_WARNING)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: several times faster, ample for training
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(recipe.seed)  # identical initial weights on every rank
        # Before the model is built and the (slow) bags decoded: a missing or changed state, or a
        # finished run about to be overwritten, fails now.
        saved = self._check_resumable() if resume else None
        if not resume:
            self._refuse_to_overwrite()
        if saved is not None and saved.get("model_config") is not None:
            # The state holds every weight, so the model is the one it was trained as, whatever
            # --init built it from the first time (a preset model would silently train another).
            if init_checkpoint or init_codec or init_transformer:
                log.info("--resume: the model comes from %s; --init options are not needed", self.out / STATE_DIR)
            try:
                self.model = WorldModel(AstraConfig.from_dict(saved["model_config"])).train()
            except (ConfigError, TypeError) as err:
                raise CheckpointError(f"cannot resume from {self.out / STATE_DIR}: its model config is invalid ({err})") from err
        elif init_checkpoint:
            self.model = self._init_from(init_checkpoint, recipe.model).train()
        else:
            self.model = WorldModel(recipe.model_config()).train()
            if init_codec:
                load_codec(self.model, init_codec)
            if init_transformer:
                load_transformer(self.model, init_transformer)
        if recipe.reset_output_head:  # before the EMA copies the weights; a resume loads its own
            self.model.transformer.zero_output_head()
        self.model.to(self.device)
        self.config = self.model.config
        if self.config.rotation_reference and recipe.decoder_steps and recipe.decoder_predicted_share > 0:
            raise ConfigError("decoder_predicted_share > 0 rolls the world model out from latents alone, and "
                              "rotation_reference needs the observed frame's pixels: set it to 0")
        n = self.config.frames_per_chunk  # checked again here: --init may bring other chunks than the preset
        if recipe.clip_frames % n or recipe.clip_frames < 2 * n:
            raise ConfigError(f"clip_frames={recipe.clip_frames} must be a multiple of the model's frames_per_chunk={n} "
                              "and hold at least two chunks")
        if recipe.decoder_steps and self.model.anchor_decoder is None:
            raise ConfigError("decoder_steps needs a model with an anchor decoder: set anchor_decoder_width in the "
                              "recipe's model (with --init, a checkpoint without one starts it as residual decoding)")
        for phase, phase_steps in (("codec", recipe.codec_steps), ("world", recipe.steps),
                                   ("decoder", recipe.decoder_steps)):
            if 0 < phase_steps < recipe.warmup_steps:
                log.warning("warmup_steps=%d is longer than the %s phase (%d steps): its rate never reaches the peak",
                            recipe.warmup_steps, phase, phase_steps)
        # Each bag with its profile (None: this project's topics), sorted by path: the batches of a seed do
        # not depend on the order the data is given in. Missing topics of every profile fail here, at once.
        sources = resolve_sources(data)
        self.bags = [bag for bag, _ in sources]
        # How each bag is read (its profile's modality, topics and conventions; None: the defaults).
        self.readings = {bag.name: profile.reading() if profile else None for bag, profile in sources}
        if saved is not None and saved.get("bags") is not None:
            self._check_same_data(saved["bags"], saved.get("readings"))
        # Rank 0 decodes the bags into the shared cache first; the others then read it.
        if not self.dist.is_main:
            dist.barrier()
        plan = training_plan(sources, recipe.twist_bags_as_keys)
        self.dataset = ClipDataset([e.bag for e in plan], [e.modality for e in plan], recipe.clip_frames,
                                   self.config.resolution, self.out / "cache", frame_format="float",
                                   topics=[e.topics for e in plan], conventions=[e.conventions for e in plan],
                                   frame_interval_s=self.config.frame_interval_s)
        if self.dist.is_main and self.dist.world_size > 1:
            dist.barrier()
        if len(self.dataset) == 0:
            raise BagError(f"no usable clip of {recipe.clip_frames} frames in {len(self.bags)} bags "
                           f"({self.dataset.stats.summary()})")
        unknown = sorted(set(self.dataset.modalities) - set(self.config.modalities))
        if unknown:
            raise BagError(f"the data has modalities {unknown} that the model does not know ({self.model.modalities})")
        self.window_probabilities = self._window_probabilities(recipe.modality_weights)
        self.decoder_dataset = self.dataset
        decoder_frames = recipe.decoder_context_frames + recipe.decoder_horizon_frames
        if recipe.decoder_steps and decoder_frames != recipe.clip_frames:
            self.decoder_dataset = self.dataset.with_clip_frames(decoder_frames)
            if len(self.decoder_dataset) == 0:
                raise BagError(f"no usable clip of {decoder_frames} frames (decoder_context_frames + "
                               f"decoder_horizon_frames) in {len(self.bags)} bags")
        self.ema = EMA(self.model)
        self.torch_gen = torch.Generator().manual_seed(recipe.seed * 1000 + self.dist.rank)
        self.numpy_gen = np.random.default_rng(recipe.seed * 1000 + self.dist.rank)
        self._arm_maps = ArmMapBatches(self.model, recipe) if self.config.arm_map_cells else None
        self._elapsed_before_s = 0.0  # training time of the run being resumed
        self._t_start = time.perf_counter()

    def _refuse_to_overwrite(self) -> None:
        """A fresh run into a directory that holds a training state would replace it and cut its loss
        CSV without a word: refuse, and say how to go on instead."""
        try:
            step = read_state_meta(self.out / STATE_DIR).get("step", "?")
        except CheckpointError:
            return  # no (readable) state: nothing a fresh run could lose but a partial first save
        raise ConfigError(f"{self.out} already holds a training run (state at step {step}): continue it with "
                          "--resume, or give another --out (or delete this one) to start afresh")

    def _check_resumable(self) -> dict[str, Any]:
        """Refuse --resume when there is no state, or when the recipe differs from the one the state was
        trained with in anything but :data:`RESUME_MAY_CHANGE` (a different batch, rate or seed would
        silently make the run neither the old one nor a new one). Returns the state's JSON part."""
        meta = read_state_meta(self.out / STATE_DIR)
        saved = meta.get("recipe")
        if saved is None:
            log.warning("the training state predates recipe checks: make sure the recipe is the one it was trained with")
            return meta
        now = json.loads(json.dumps(dataclasses.asdict(self.recipe)))  # as JSON stored it (tuples -> lists)
        saved = {**_recipe_defaults(), **saved}  # a field newer than the state was at its default then
        changed = sorted(k for k in set(now) | set(saved) if now.get(k) != saved.get(k))
        refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
        if refused:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in refused)
            raise ConfigError(f"--resume with a recipe that differs from the one {self.out / STATE_DIR} was trained "
                              f"with ({detail}); only {sorted(RESUME_MAY_CHANGE)} may change on resume")
        self._check_phase_lengths(meta, saved)
        if changed:
            log.info("resuming with changed %s", ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed))
        self._warn_stretched_cosine(meta, saved)
        return meta

    def _warn_stretched_cosine(self, meta: dict[str, Any], saved: dict[str, Any]) -> None:
        """A cosine schedule is laid over the phase's length: a longer run stretches it, so the rate
        jumps up where the state stopped (no new warm-up, not a restart). Said with the numbers."""
        r, step, phase = self.recipe, int(meta.get("step", 0)), meta.get("phase")
        key = {"world": "steps", "decoder": "decoder_steps"}.get(phase)
        if r.lr_decay != "cosine" or key is None or saved.get(key) == getattr(r, key):
            return
        local = step - r.codec_steps - (r.steps if phase == "decoder" else 0)
        before = learning_rate(local, int(saved[key]), r, 1.0)
        after = learning_rate(local, int(getattr(r, key)), r, 1.0)
        log.warning("lr_decay cosine with %s %s -> %s: the schedule stretches over the new length, so the rate at "
                    "step %d goes from %.2f to %.2f of its peak (no new warm-up) and decays to the floor by the "
                    "new end",
                    key, saved[key], getattr(r, key), step, before, after)

    def _check_phase_lengths(self, meta: dict[str, Any], saved: dict[str, Any]) -> None:
        """A changed ``steps`` / ``decoder_steps`` may lengthen or shorten the phase the state is in, or a
        later one, but not move a boundary the run has crossed: the phases are placed by step number, so
        done decoder steps would be counted as world steps (and the decoder run again from its warm-up)."""
        step, phase, r = int(meta.get("step", 0)), meta.get("phase"), self.recipe
        world_done = max(0, step - r.codec_steps)  # codec_steps cannot change on resume
        if phase == "world" and r.steps < world_done:
            raise ConfigError(f"--resume with steps={r.steps}: the state has already run {world_done} world-model "
                              f"steps (give steps >= {world_done})")
        if phase == "decoder":
            if r.steps != saved.get("steps"):
                raise ConfigError(f"--resume with steps {saved.get('steps')} -> {r.steps}: the state is in the decoder "
                                  f"phase, after its world-model steps, which can no longer change (start a new run "
                                  f"with --init from this one to train the world model on)")
            decoder_done = step - r.codec_steps - r.steps
            if r.decoder_steps < decoder_done:
                raise ConfigError(f"--resume with decoder_steps={r.decoder_steps}: the state has already run "
                                  f"{decoder_done} decoder steps (give decoder_steps >= {decoder_done})")

    def _check_same_data(self, saved: list[str], saved_readings: dict[str, Any] | None) -> None:
        """Refuse --resume on other bags than the state was trained on (compared by name, so a moved
        data directory still resumes), or on the same bags read through other profiles: other data would
        make its clips neither the old run's nor a new one's."""
        now = sorted(bag.name for bag in self.bags)
        if now != sorted(saved):
            missing, added = sorted(set(saved) - set(now)), sorted(set(now) - set(saved))
            raise ConfigError(f"--resume with other data than {self.out / STATE_DIR} was trained on: {len(saved)} bags "
                              f"then, {len(now)} now (missing {missing[:3]}, added {added[:3]}); give the same --data, "
                              "or start a new run from its checkpoint with --init")
        if saved_readings is not None:  # states before profiles did not record them
            changed = sorted(name for name in now if saved_readings.get(name) != self.readings[name])
            if changed:
                raise ConfigError(f"--resume with {len(changed)} bags read through another profile than "
                                  f"{self.out / STATE_DIR} was trained with ({', '.join(changed[:3])}): give the same "
                                  "--profile, or start a new run from its checkpoint with --init")

    def _window_probabilities(self, weights: dict[str, float]) -> np.ndarray | None:
        """Each window's sampling probability under ``modality_weights`` (None: uniform)."""
        if not weights:
            return None
        modalities = np.array(self.dataset.window_modalities())
        p = np.array([float(weights.get(m, 1.0)) for m in modalities])
        if p.sum() <= 0:
            raise ConfigError(f"modality_weights {weights} give every training window weight 0")
        p /= p.sum()
        shares = ", ".join(f"{m} {p[modalities == m].sum():.0%} (of windows: {np.mean(modalities == m):.0%})"
                           for m in sorted(set(modalities)))
        log.info("batches drawn by modality_weights: %s", shares)
        return p

    # The checkpoint a run starts from (astra_ros.training.init), here where tests have called it.
    _init_from = staticmethod(init_from)

    # ------------------------------------------------------------------ data
    def sample_batch(self, decoder: bool = False) -> tuple[torch.Tensor, ...]:
        """Random windows: frames (B, T, 3, H, W), actions (B, T, Dmax) zero-padded, modality ids (B,),
        intrinsics (B, 3, 3) at the frames' size and the camera in the robot base (B, 4, 4) (NaN: unknown).
        ``decoder``: the decoder phase's ``decoder_clips`` longer windows, drawn uniformly."""
        enc = self.model.transformer.action_encoder
        dataset = self.decoder_dataset if decoder else self.dataset
        count = self.recipe.decoder_clips if decoder else self.recipe.batch_size
        if self.window_probabilities is None or decoder:  # integers(), not choice(): the draws of runs before modality_weights
            picks = self.numpy_gen.integers(len(dataset), size=count)
        else:
            picks = self.numpy_gen.choice(len(dataset), size=count, p=self.window_probabilities)
        items = [dataset[int(i)] for i in picks]
        frames = torch.stack([it["frames"] for it in items])
        actions = torch.zeros(len(items), dataset.clip_frames, enc.max_action_size)
        for b, it in enumerate(items):
            actions[b, :, : it["actions"].shape[-1]] = it["actions"]
        ids = torch.tensor([enc.modality_index(it["modality"]) for it in items])
        return frames, actions, ids, *(torch.stack([it[key] for it in items]) for key in ("intrinsics", "camera_in_base"))

    # ------------------------------------------------------------------ loop
    def run(self) -> Path:
        r = self.recipe
        state_dir = self.out / STATE_DIR
        start_step = 0
        meta = None
        if self.resume:
            meta = load_train_state(state_dir, model=self.model, ema=self.ema.model, torch_gen=self.torch_gen,
                                    numpy_gen=self.numpy_gen, rank=self.dist.rank, world_size=self.dist.world_size)
            start_step = int(meta["step"])
            self._elapsed_before_s = float(meta.get("elapsed_s", 0.0))
            log.info("resuming at step %d (%s phase) from %s", start_step, meta["phase"], state_dir)
        bounds = {"codec": (0, r.codec_steps), "world": (r.codec_steps, r.codec_steps + r.steps),
                  "decoder": (r.codec_steps + r.steps, r.codec_steps + r.steps + r.decoder_steps)}
        total = bounds["decoder"][1]
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            r.to_yaml(self.out / "recipe.yaml")
            log.info("training on %d bags (%s), %d clips; %d codec + %d world + %d decoder steps on %d process(es)",
                     len(self.bags), ", ".join(sorted(set(self.dataset.modalities))), len(self.dataset),
                     r.codec_steps, r.steps, r.decoder_steps, self.dist.world_size)
        step = start_step
        bar = tqdm(total=total, initial=start_step, desc="astra-train", disable=not (self.progress and self.dist.is_main))
        csv_file = None
        if self.dist.is_main:
            # Rows logged after the state being resumed were written by steps that are now run again.
            kept = _loss_rows_up_to(self.out / "loss.csv", start_step) if self.resume else []
            # Written beside it and swapped in: a kill while rewriting must not empty the run's history.
            fresh = self.out / "loss.csv.tmp"
            with open(fresh, "w", newline="") as handle:
                csv.writer(handle).writerows([LOSS_COLUMNS] + kept)
            os.replace(fresh, self.out / "loss.csv")
            csv_file = open(self.out / "loss.csv", "a", newline="")
            writer = csv.writer(csv_file)
        # elapsed_s goes on from the resumed state's time, so the curves' time axis stays one run's
        t_start = time.perf_counter() - self._elapsed_before_s
        t_last, last_step = time.perf_counter(), step
        self._t_start = t_start
        interrupt = DeferredInterrupt.install(enabled=self.dist.world_size == 1)
        try:
            for current in ("codec", "world", "decoder"):
                begin, end = bounds[current]
                if step >= end:
                    continue
                mid_phase = meta is not None and meta["phase"] == current  # resumed inside this phase
                if current == "world" and r.measure_action_statistics and not mid_phase:
                    self._measure_action_statistics()  # a resumed run loaded them with the weights
                if current == "decoder" and not mid_phase:
                    # The decoder learns the released (EMA) transformer's predictions, and the EMA of the
                    # frozen transformer must not drift back to the raw weights while the decoder trains.
                    self.model.load_state_dict(self.ema.model.state_dict())
                if r.precision == "bf16" and current != "decoder":
                    self._check_bf16_agrees(current)
                optimizer, wrapped, params = self._phase_setup(current)
                if mid_phase:
                    load_optimizer_state(state_dir, optimizer)  # continue its moments
                meta = None
                while step < end:
                    if interrupt.requested or (self.stop_after is not None and step >= self.stop_after):
                        self._checkpoint(step, current, optimizer)  # a clean stop, resumable with --resume
                        self._plot_loss()
                        log.info("stopped at step %d %s; saved in %s, continue with --resume", step,
                                 "on Ctrl-C" if interrupt.requested else "as asked", self.out)
                        return self.out
                    peak = {"codec": r.codec_lr, "world": r.lr, "decoder": r.decoder_lr}[current]
                    local = step - begin
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(local, end - begin, r, peak) * group.get("lr_multiple", 1.0)
                    loss, part_a, part_b = self._train_step(current, wrapped, optimizer, params, step)
                    step += 1
                    self.ema.update(self.model, r.ema_decay, updates=local + 1)  # counts restart per phase
                    bar.update(1)
                    now = time.perf_counter()
                    rate = (step - last_step) / max(now - t_last, 1e-9)
                    if step % r.log_every == 0 or step == end:
                        bar.set_postfix(phase=current, loss=f"{loss:.4f}", steps_s=f"{rate:.2f}")
                        if csv_file is not None:
                            writer.writerow([step, current, f"{loss:.6f}", f"{part_a:.6f}", f"{part_b:.6f}",
                                             f"{optimizer.param_groups[0]['lr']:.3g}", f"{rate:.3f}",
                                             f"{now - t_start:.1f}"])
                            csv_file.flush()
                        t_last, last_step = now, step
                    if current == "codec" and step == end:
                        self._finish_codec_phase()
                    if step % r.checkpoint_every == 0 or step == end:
                        self._checkpoint(step, current, optimizer)
        finally:
            interrupt.restore()
            bar.close()
            if csv_file is not None:
                csv_file.close()
        self._check_ranks_agree()
        if self.dist.is_main:
            self._plot_loss()
            log.info("done: %s (EMA weights), loss curve %s", self.out / "model.safetensors", self.out / "loss.png")
        return self.out

    def _plot_loss(self) -> None:
        if self.dist.is_main:
            from .plots import plot_loss

            plot_loss(self.out / "loss.csv", self.out / "loss.png", prediction=self.config.prediction)

    def _phase_setup(self, phase: str):
        r = self.recipe
        if phase == "codec":
            self.model.transformer.requires_grad_(False)
            self.model.codec.requires_grad_(True)
            objective: nn.Module = CodecObjective(self.model, r.codec_kl_weight)
            params = list(self.model.codec.parameters())
            optimizer = torch.optim.AdamW(params, lr=r.codec_lr, weight_decay=0.0)
        elif phase == "world":
            self.model.codec.requires_grad_(False)
            self.model.codec.eval()
            self.model.transformer.requires_grad_(True)
            objective = Objective(self.model)
            params = list(self.model.transformer.parameters())
            optimizer = torch.optim.AdamW(world_param_groups(self.model, r), lr=r.lr, weight_decay=r.weight_decay)
        else:
            self.model.requires_grad_(False)
            self.model.codec.eval()
            self.model.transformer.eval()  # samples as at inference
            self.model.anchor_decoder.requires_grad_(True)
            objective = DecoderObjective(self.model)
            params = list(self.model.anchor_decoder.parameters())
            optimizer = torch.optim.AdamW(params, lr=r.decoder_lr, weight_decay=r.weight_decay)
        if self.dist.world_size > 1:
            # Unused parameters are normal: a batch may hold one modality, and top-1 routing skips experts.
            objective = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
        return optimizer, objective, params

    def _autocast(self):
        """bfloat16 autocast of a forward pass when the recipe asks for it."""
        if self.recipe.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _train_step(self, phase: str, objective: nn.Module, optimizer, params,
                    step: int) -> tuple[float, float, float]:
        """One optimiser step of ``phase``; ``step`` (the run's) draws the clips trained on their own rollouts."""
        frames, actions, ids, intrinsics, camera_in_base = self.sample_batch(decoder=phase == "decoder")
        if phase == "decoder":
            with torch.no_grad():  # fp32 throughout: a small network, and no bf16 check of its kernels
                inputs = self._decoder_inputs(frames.to(self.device), actions, ids, intrinsics)
            loss, a, b = objective(*inputs)
        elif phase == "codec":
            images = frames.flatten(0, 1)
            pick = self.numpy_gen.choice(len(images), size=min(self.recipe.codec_batch_frames, len(images)), replace=False)
            with self._autocast():
                loss, a, b = objective(images[torch.from_numpy(pick)].to(self.device), self.torch_gen)
        else:
            references = arm_maps = history = None
            with torch.no_grad():
                latents = self.model.codec.encode(frames.to(self.device))  # (B, C, T, h, w), fp32 as at inference
                if self.config.rotation_reference:
                    references = chunk_references(self.model, frames.to(self.device), actions, ids, intrinsics, latents)
                if self._arm_maps is not None:
                    arm_maps = self._arm_maps(actions, ids, clip_intrinsics(self.model, intrinsics), camera_in_base).to(self.device)
                rows = rollout_rows(self.recipe.rollout_history_fraction, len(frames), self.recipe.seed, step,
                                    eligible_rows(ids, self.model.transformer.action_encoder.modality_names,
                                                  self.recipe.rollout_history_modalities))
                if rows.any():
                    history, references = rolled_out_history(self.model, rows, frames, actions, ids, intrinsics,
                                                             camera_in_base, latents, references,
                                                             seed=(self.recipe.seed * 1_000_003 + step) * 4096)
            with self._autocast():
                loss, a, b = objective(latents, actions.to(self.device), ids.to(self.device), self.torch_gen,
                                       references=references, arm_maps=arm_maps, history=history)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} in the {phase} phase; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, self.recipe.grad_clip)
        if not torch.isfinite(norm):  # stepping would write NaN into every weight, then into a checkpoint
            raise FloatingPointError(f"the gradient became {float(norm)} in the {phase} phase (loss {float(loss):.4g}); "
                                     "lower the learning rate")
        optimizer.step()
        return float(loss.detach()), float(a), float(b)

    @torch.no_grad()
    def _decoder_inputs(self, frames: torch.Tensor, actions: torch.Tensor, ids: torch.Tensor,
                        intrinsics: torch.Tensor):
        """The anchor decoder's inputs for every future frame of the clips: the newest observed frame,
        its latents and their decoding; the future frame's latents (rolled out by the frozen world
        model with the true actions, or the real ones) and their decoding; the real frame; which
        frames got predicted latents."""
        r, model = self.recipe, self.model
        context = r.decoder_context_frames
        latents = model.codec.encode(frames)  # (B, C, T, h, w)
        future = latents[:, :, context:]
        b, c, horizon = future.shape[:3]
        predicted = torch.rand((b, horizon), generator=self.torch_gen) < r.decoder_predicted_share
        if predicted.any():  # only then roll the world model out: the sampler costs more than the decoder
            rolled = future.clone()
            names = model.transformer.action_encoder.modality_names
            for index in ids.unique().tolist():  # one rollout per modality: its own guidance and action size
                rows = (ids == index).nonzero().flatten()
                name = names[index]
                acts = actions[rows][:, :, :model.action_dim(name)]
                rolled[rows] = model.roll_out_latents(latents[rows, :, :context], acts, name, self.torch_gen)
            future = torch.where(predicted.to(self.device)[:, None, :, None, None], rolled, future)
        anchor, anchor_latents = frames[:, context - 1], latents[:, :, context - 1]
        anchor_coarse = model.codec.decode(anchor_latents[:, :, None])[:, 0]
        flat = future.transpose(1, 2).flatten(0, 1)  # (B*N, C, h, w), clip-major like the frames below
        coarse = model.codec.decode(future).flatten(0, 1)
        repeat = lambda x: x.repeat_interleave(horizon, dim=0)  # noqa: E731
        anchors = (repeat(anchor), repeat(anchor_latents), repeat(anchor_coarse))
        if self.config.rotation_reference:  # the anchor turned for each future frame, as at inference
            turned, turned_latents = turned_anchors(model, frames, actions, ids, intrinsics, context - 1)
            anchors = (turned.flatten(0, 1), turned_latents.transpose(1, 2).flatten(0, 1),
                       model.codec.decode(turned_latents).flatten(0, 1))
        return (*anchors, flat, coarse,
                frames[:, context:].flatten(0, 1), predicted.flatten().to(self.device))

    @torch.no_grad()
    def _check_bf16_agrees(self, phase: str) -> None:
        """Refuse a bf16 phase whose forward pass disagrees with fp32 on this machine's kernels.

        A backend bug here is silent otherwise: oneDNN's bf16 convolution once scrambled the patch
        embedding on AMX CPUs, and an hour of training learned from scrambled tokens. Two fixed
        clips (own generators, so the training's sequence of clips and noise is unchanged).
        """
        rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
        frames = torch.stack([self.dataset[int(i)]["frames"] for i in rng.integers(len(self.dataset), size=2)])
        frames = frames.to(self.device)
        if phase == "codec":
            vae = self.model.codec.vae
            images = frames.flatten(0, 1)
            forward = lambda: vae.decode(vae.encode(images).latent_dist.mode()).sample  # noqa: E731
        else:
            latents = self.model.codec.encode(frames)
            b, _, f = latents.shape[:3]
            times = torch.rand((b, f), generator=gen).to(self.device)
            frame_pos = torch.arange(f)  # on the CPU, like every caller of rope_angles
            forward = transformer_probe(self.model.transformer, latents, times, frame_pos)
        try:
            error = require_bf16_agrees(forward, self.device.type, f"the {phase} phase", "train with 'precision: fp32'")
        except UnreliablePrecision as failure:
            raise ConfigError(str(failure)) from failure
        log.info("%s phase in bf16: forward pass within %.2f%% of fp32", phase, 100 * error)

    @torch.no_grad()
    def _finish_codec_phase(self) -> None:
        """Measure latent statistics (averaged over ranks) and start the EMA from the trained codec."""
        frames = torch.cat([self.sample_batch()[0] for _ in range(4)]).to(self.device)
        self.model.codec.eval()
        self.model.codec.set_latent_statistics(frames)
        if self.dist.world_size > 1:
            for buf in (self.model.codec.latent_mean, self.model.codec.latent_std):
                dist.all_reduce(buf)
                buf /= self.dist.world_size
        self.ema.copy_from(self.model)

    @torch.no_grad()
    def _measure_action_statistics(self) -> None:
        """Standardise actions by their statistics over every training window (identical on every rank:
        all ranks read the same windows), then restart the EMA from the rescaled model."""
        encoder = self.model.transformer.action_encoder
        measured = encoder.set_action_statistics(self.dataset.actions_by_modality())
        for name, (mean, std) in measured.items():
            log.info("%s actions: mean %s, std %s", name, np.round(mean, 4).tolist(), np.round(std, 4).tolist())
            if encoder.uses_motion:
                idx, d = encoder.modality_index(name), encoder.modality_dims[name]
                log.info("%s motion per frame: std %s", name, np.round(encoder.motion_std[idx, :d].tolist(), 4).tolist())
        self.ema.copy_from(self.model)

    def _checkpoint(self, step: int, phase: str, optimizer) -> None:
        generators = [(self.torch_gen.get_state(), self.numpy_gen.bit_generator.state)]
        if self.dist.world_size > 1:  # every rank's, so that each resumes its own clips and noise
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, (generators[0][0].tolist(), generators[0][1]))
            generators = [(torch.tensor(t, dtype=torch.uint8), n) for t, n in gathered]
        if not self.dist.is_main:
            return
        extra = {"recipe": dataclasses.asdict(self.recipe), "elapsed_s": time.perf_counter() - self._t_start,
                 "model_config": self.config.to_dict(), "bags": [bag.name for bag in self.bags],
                 "readings": self.readings}
        save_train_state(self.out / STATE_DIR, model=self.model, ema=self.ema.model, optimizer=optimizer,
                         step=step, phase=phase, generators=generators, extra=extra)
        self.ema.model.save_pretrained(self.out)

    def _check_ranks_agree(self) -> None:
        digest = weights_digest(self.model)
        digests = [digest]
        if self.dist.world_size > 1:
            digests = [None] * self.dist.world_size
            dist.all_gather_object(digests, digest)
        if self.dist.is_main:
            (self.out / "ranks.json").write_text(json.dumps({"weights_sha256": digests}, indent=2) + "\n")
        if len(set(digests)) != 1:
            raise RuntimeError(f"processes ended with different weights: {digests}")
