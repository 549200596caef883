"""``WorldModel``: the rollout API of DESIGN §2 (a contract) over codec + transformer + stream.

    wm = WorldModel.from_pretrained("default")
    wm.start(frames, actions, modality="twist")     # observed history
    future = wm.step(actions_next_chunk)           # uint8 (n, H, W, 3), appended to the history
    wm.observe(real_frames, real_actions)          # real frames replace predictions
    candidates = wm.imagine(batch_of_actions)      # uint8 (B, N, H, W, 3), live stream untouched
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .allocator import keep_freed_memory
from .anchor_decoder import AnchorDecoder
from .arm_map import ArmMapInputs
from .checkpoint import load_config, load_weights, resolve_checkpoint, save_checkpoint
from .codec import LatentCodec
from .config import AstraConfig
from .frame_coding import FrameCoding
from .image_error import psnr
from .imagination import ImagineCancelled, Imagination, as_generator, checked_guidance  # noqa: F401 (re-exported)
from .inputs import InputChecks
from .precision import require_bf16_agrees, transformer_probe
from .streaming import StreamingRollout
from .transformer import AstraTransformer
from .turned_views import TurnedViewCache
from .view_rotation import chain_rotations, intrinsics_from_fov


# Copy-last error of a latent cell (mean over channels, latents of unit scale) below which
# ``one_shot_error`` counts it as still: two renders of an unchanged view differ by about 1e-3.
STILL_CELL_MSE = 0.01


class WorldModel(Imagination, FrameCoding, ArmMapInputs, InputChecks, nn.Module):
    """An Astra world model with one live stream."""

    def __init__(self, config: AstraConfig, use_cache: bool = True) -> None:
        super().__init__()
        keep_freed_memory()  # once per process: a step's activations are not page-faulted in again
        self.config = config
        self.codec = LatentCodec(config.codec)
        self.transformer = AstraTransformer(config)
        self.anchor_decoder = (AnchorDecoder(config.codec.latent_channels, config.codec.spatial_factor,
                                             config.anchor_decoder_width, config.anchor_decoder_search)
                               if config.anchor_decoder_width else None)
        self._init_stream_state(use_cache)
        self.eval()

    def _init_stream_state(self, use_cache: bool) -> None:
        """Everything of the live stream (not the weights): what :meth:`twin` gives a fresh copy of."""
        self.stream = StreamingRollout(self.transformer, use_cache=use_cache)
        self._modality: str | None = None
        self._pending_frames: list[torch.Tensor] = []  # observed latent frames not yet a whole chunk
        self._pending_actions: list[torch.Tensor] = []
        # Newest observed frame (1, 3, H, W) in [-1, 1], the codec's reconstruction of it and its
        # latents (1, C, h, w): the reference of residual (and anchor) decoding.
        self._anchor: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # Action of the newest frame in the history (None: it had none); the motion input's reference.
        self._last_action: torch.Tensor | None = None
        # rotation_reference: the action of the newest frame in the history (None: it had none, so nothing
        # turns) and that frame's camera rotation relative to the anchor (float64 (3, 3)).
        self._turn_action: torch.Tensor | None = None
        self._turn_rotation = torch.eye(3, dtype=torch.float64)
        # ... and that frame's pixels (1, 3, H, W) and latents (1, C, h, w): observed, or decoded from a
        # prediction. The next chunk's references are this frame turned (None before any frame).
        self._turn_frame: tuple[torch.Tensor, torch.Tensor] | None = None
        # Turned views of the newest observed frame encoded in this step() or imagine() call (its
        # references and its decoding's). reuse_views False: every view encoded where it is used (the
        # plain path, which tests compare with).
        self._views = TurnedViewCache()
        self.reuse_views = True
        # Appended history chunks wait for the next prediction and share its transformer pass
        # (StreamingRollout.append_history's ``defer``). False: a pass of their own (the plain path).
        self.fuse_passes = True
        # A step's codec work in fewer, larger calls where that keeps every bit (codec_batching.py): the
        # turned views its references and its decoding need encoded in one batch, its frames and their
        # turned anchors decoded in one. False: a call for each (the plain path).
        self.batch_codec_calls = True
        # Intrinsics (3, 3) at the model's resolution for rotation_reference; None: reference_fovy_deg.
        self._intrinsics: torch.Tensor | None = None
        # The stream and last action as they were before the first step() since the newest observed
        # frame (None: no predictions in the history). observe() restores them, so real frames replace
        # predictions instead of following them (DESIGN §2), evicted observed chunks included.
        self._before_predictions: tuple[StreamingRollout, torch.Tensor | None] | None = None
        # One stream of noise per entry point, so an unseeded call to one leaves the others reproducible.
        self._observe_generator = torch.Generator().manual_seed(0)
        self._imagine_generator = torch.Generator().manual_seed(1)
        self._step_generator = torch.Generator().manual_seed(2)

    def twin(self) -> "WorldModel":
        """Another stream over the same weights and camera geometry (a node's ``~/imagine`` thread)."""
        twin = WorldModel.__new__(WorldModel)
        nn.Module.__init__(twin)
        twin.config = self.config
        twin.codec, twin.transformer, twin.anchor_decoder = self.codec, self.transformer, self.anchor_decoder
        twin._init_stream_state(self.stream.use_cache)
        twin._intrinsics, twin._camera_in_base = self._intrinsics, self._camera_in_base
        twin.reuse_views, twin.fuse_passes = self.reuse_views, self.fuse_passes
        twin.batch_codec_calls = self.batch_codec_calls
        twin.stream.compute_dtype = self.stream.compute_dtype
        return twin.eval()

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path_or_name: str | Path = "default", device: str | torch.device = "cpu",
                        use_cache: bool = True, config_overrides: dict | None = None) -> "WorldModel":
        """Load ``config.json`` + ``model.safetensors`` from a directory, or ``"default"`` (embedded).

        ``config_overrides`` replace fields of the stored config before the weights load (how the
        model trains or samples; a field that changes weight shapes fails with CheckpointError).
        """
        path = resolve_checkpoint(path_or_name)
        config = load_config(path)
        if config_overrides:
            config = AstraConfig.from_dict({**config.to_dict(), **config_overrides})
        model = cls(config, use_cache=use_cache)
        load_weights(model, path)
        return model.to(device).eval()

    def save_pretrained(self, path: str | Path) -> Path:
        return save_checkpoint(self, self.config, path)

    # ------------------------------------------------------------------ facts
    @property
    def modalities(self) -> list[str]:
        return list(self.config.modalities)

    def action_dim(self, modality: str) -> int:
        self._check_modality(modality)
        return self.config.modalities[modality]

    @property
    def frames_per_chunk(self) -> int:
        return self.config.frames_per_chunk

    @property
    def resolution(self) -> tuple[int, int]:
        return self.config.resolution

    @property
    def device(self) -> torch.device:
        return self.transformer.scale_shift_table.device

    @property
    def modality(self) -> str | None:
        """The modality of the live stream (set by ``start``)."""
        return self._modality

    @property
    def history_frames(self) -> int:
        """Frames in the live history (observed or predicted), counting evicted ones."""
        return self.stream.next_frame * self.config.codec.temporal_factor

    @property
    def _frames_ahead(self) -> int:
        """Frames step() predicted since the newest observed frame (their change scale, ``delta_scales``): what the
        live stream grew by since the fork observe() would go back to."""
        if self._before_predictions is None:
            return 0
        return self.history_frames - self._before_predictions[0].next_frame * self.config.codec.temporal_factor

    def expert_usage(self) -> dict[str, list[float]]:
        return self.transformer.action_encoder.expert_usage()

    # ------------------------------------------------------------------ stream
    # ------------------------------------------------------------------ precision
    PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}

    @property
    def precision(self) -> str:
        """``"float32"`` or ``"bfloat16"``: the transformer's compute precision at inference."""
        return next(k for k, v in self.PRECISIONS.items() if v == self.stream.compute_dtype)

    def set_precision(self, precision: str) -> "WorldModel":
        """Run the transformer in ``"bfloat16"`` (autocast; weights stay float32) or ``"float32"``.

        bfloat16 pays on CPUs with native bf16 matrix instructions (AVX512-BF16, AMX) and on GPUs;
        ``bench/profile_inference.py`` measures it. Applies to the next ``start`` (resets the stream).
        Before switching to bfloat16 one forward pass runs in both precisions; raises
        :class:`~astra_ros.model.precision.UnreliablePrecision` (and stays in float32) when they
        disagree beyond bf16 rounding, as a backend bug makes them.
        """
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(self.PRECISIONS)}, got {precision!r}")
        if self.PRECISIONS[precision] is torch.bfloat16:
            require_bf16_agrees(self._precision_probe_forward(), self.device.type, "this model's transformer",
                                "run it in float32")
        self.reset()
        self.stream.compute_dtype = self.PRECISIONS[precision]
        return self

    def _precision_probe_forward(self):
        """A fixed forward pass of the transformer (seeded latents over two chunks and flow times)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(0)
        frames = 2 * cfg.chunk_frames
        latents = torch.randn((1, cfg.codec.latent_channels, frames, *cfg.latent_size), generator=gen).to(self.device)
        times = torch.rand((1, frames), generator=gen).to(self.device)
        frame_pos = torch.arange(frames)  # on the CPU, like every caller of rope_angles
        return transformer_probe(self.transformer, latents, times, frame_pos)

    def reset(self) -> None:
        """Forget the live stream."""
        self.stream.reset()
        self._modality = None
        self._pending_frames.clear()
        self._pending_actions.clear()
        self._anchor = None
        self._last_action = None
        self._turn_action = None
        self._turn_rotation = torch.eye(3, dtype=torch.float64)
        self._turn_frame = None
        self._views.clear()
        self._before_predictions = None

    # ------------------------------------------------------------------ rotation reference
    def set_intrinsics(self, K: np.ndarray | torch.Tensor | None) -> None:
        """Camera intrinsics (3, 3) [px] *at the model's resolution* for ``rotation_reference`` (scale a
        camera_info's with ``PinholeIntrinsics.scaled``); None: a centred camera of the config's
        ``reference_fovy_deg``. Kept across ``start``."""
        if K is None:
            self._intrinsics = None
            return
        matrix = torch.as_tensor(np.asarray(K, dtype=np.float64))
        if matrix.shape != (3, 3) or not torch.isfinite(matrix).all() or matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
            raise ValueError(f"intrinsics must be a finite 3x3 matrix with positive focal lengths, got {np.asarray(K).tolist()}")
        self._intrinsics = matrix

    @property
    def intrinsics(self) -> torch.Tensor:
        """Intrinsics (3, 3) at the model's resolution that ``rotation_reference`` uses now."""
        if self._intrinsics is not None:
            return self._intrinsics
        return intrinsics_from_fov(self.config.reference_fovy_deg, *self.resolution)

    def _rotations_after_turn(self, actions: torch.Tensor) -> torch.Tensor:
        """The camera rotations (B, T, 3, 3) of frames with the live modality's ``actions`` (B, T, D), each
        relative to the newest observed frame, chained on from the frame the next chunk turns."""
        return chain_rotations(self._modality, actions, self._turn_action, self._turn_rotation)

    @torch.no_grad()
    def start(self, frames: np.ndarray, actions: np.ndarray | None = None, modality: str = "camera",
              seed: int | None = None) -> None:
        """Reset the stream and observe ``frames`` uint8 (T, H, W, 3) with ``actions`` (T, D) or None.

        Only whole chunks enter the history: when T is not a multiple of ``frames_per_chunk`` the
        oldest T mod n frames are dropped, so the newest frames are always part of it. ``seed``
        seeds the noise of the history (observe), of unseeded step() calls and of unseeded
        imagine() calls, each drawn from its own generator.
        """
        self._check_modality(modality)
        frames_t = self._frames_to_tensor(frames, "frames")
        n = self.frames_per_chunk
        t = frames_t.shape[0]
        if t < n:
            raise ValueError(f"start() needs at least frames_per_chunk={n} frames, got {t}")
        actions_t = self._actions_to_tensor(actions, modality, t, "actions") if actions is not None else None
        self.reset()
        self._modality = modality
        base = 0 if seed is None else int(seed)
        self._observe_generator = torch.Generator().manual_seed(base)
        self._imagine_generator = torch.Generator().manual_seed(base + 1)
        self._step_generator = torch.Generator().manual_seed(base + 2)
        keep = (t // n) * n
        self._observe_tensors(frames_t[t - keep:], actions_t[t - keep:] if actions_t is not None else None)
        if self._codec_batching_wanted:
            self._codec_batching_exact()  # probed here, once per thread count, rather than inside a step

    @torch.no_grad()
    def observe(self, frames: np.ndarray, actions: np.ndarray | None = None) -> None:
        """Append real frames uint8 (T, H, W, 3) and their actions (T, D) to the history.

        They are the frames that followed the newest *observed* frame: chunks that :meth:`step`
        predicted since then leave the history first (the real frames replace them). Frames are
        buffered until they fill a chunk; a partly filled chunk is not yet history.
        """
        self._require_started("observe")
        frames_t = self._frames_to_tensor(frames, "frames")
        actions_t = (self._actions_to_tensor(actions, self._modality, frames_t.shape[0], "actions")
                     if actions is not None else None)
        self._observe_tensors(frames_t, actions_t)

    @torch.no_grad()
    def reconstruct(self, frames: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """``frames`` uint8 (T, H, W, 3) through the codec, decoded the way predictions are.

        With residual decoding that is relative to the newest observed frame, so this shows what
        a prediction of exactly the right latents would look like: the ceiling of any transformer
        on this codec (astra-eval's ``codec_ceiling``; the whole change is added, whatever
        ``residual_change_scale`` says, since exact latents need no shrinking). ``actions`` (T, D) of
        the started modality, the frames' own: with ``rotation_reference`` each frame is then decoded
        from the newest observed frame turned to it, as a prediction right after :meth:`start` is;
        without them from that frame unturned. Leaves the stream untouched.
        """
        self._require_started("reconstruct")
        x = self._frames_to_tensor(frames, "frames")
        rotations = None
        if actions is not None and self.config.rotation_reference:
            actions_t = self._actions_to_tensor(actions, self._modality, x.shape[0], "actions")
            rotations = self._rotations_after_turn(actions_t[None])
        latents = self.codec.encode(x[None].to(self.device))
        return self._decode(latents, change_scale=1.0, rotations=rotations)[0]  # exact latents: their whole change

    @torch.no_grad()
    def one_shot_error(self, frames: np.ndarray, actions: np.ndarray, seed: int | None = None) -> dict[str, float]:
        """How well the network alone knows the next chunk: a health check of a checkpoint.

        ``frames`` uint8 (frames_per_chunk, H, W, 3) are the real frames that followed the live
        history and ``actions`` (frames_per_chunk, D) their actions. The network's one-step estimate
        of their latents from pure noise (one Euler step from t = 1, action-conditioned, no guidance:
        ``noise - v``, or the output itself for an x0 model; its estimate of the mean future) is
        compared with the real latents, and so is a copy of the
        newest history latent. Returns both mean squared errors in latent units, ``one_shot`` and
        ``copy_last``: a network whose estimate is not below copying the last frame has not learned
        to predict, whatever its loss says, and sampling will not fix it. Also ``still_cells``, the
        fraction of latent cells (positions of a frame) that did not change (copy error, mean over
        channels, below :data:`STILL_CELL_MSE`), and ``one_shot_still``, the estimate's MSE on them
        (NaN when there are none): where copying is exact, this is what the network adds. And
        ``one_shot_psnr`` / ``copy_last_psnr`` [dB]: both decoded the way predictions are, against the
        real frames (mean over the chunk's frames, capped at 100 dB): with this codec a lower latent
        MSE need not decode to a better frame, so the probe shows both. Leaves the stream untouched.
        """
        self._require_started("one_shot_error")
        if self._pending_frames or self.stream.reference is None:
            raise ValueError("one_shot_error() needs whole history chunks and nothing pending: it compares "
                             "with the frames right after the history")
        n = self.frames_per_chunk
        x = self._frames_to_tensor(frames, "frames")
        if x.shape[0] != n:
            raise ValueError(f"one_shot_error() takes the {n} frames of one chunk, got {x.shape[0]}")
        actions_t = self._actions_to_tensor(actions, self._modality, n, "actions")
        target = self.codec.encode(x[None].to(self.device))
        features = self._features(actions_t[None], 1, previous=self._last_action)
        gen = as_generator(seed, None, self._imagine_generator)
        reference = rotations = None
        if self.config.rotation_reference:
            rotations = self._rotations_after_turn(actions_t[None])
            reference = self._turned_reference(*self._turn_frame, self._turn_rotation.T @ rotations)
        estimate = self.stream.predict_chunk(features, None, 1.0, steps=1, generator=gen, reference=reference)
        copy = self.stream.reference.to(target).expand_as(target)
        estimate_cells = (estimate - target).pow(2).mean(dim=1)  # (1, frames, h, w)
        copy_cells = (copy - target).pow(2).mean(dim=1)
        still = copy_cells < STILL_CELL_MSE
        real = self._to_uint8(x[None])[0]  # at model size
        return {"one_shot": float(estimate_cells.mean()), "copy_last": float(copy_cells.mean()),
                "still_cells": float(still.float().mean()),
                "one_shot_still": float(estimate_cells[still].mean()) if still.any() else float("nan"),
                "one_shot_psnr": float(psnr(self._decode(estimate, rotations=rotations)[0], real).mean()),
                "copy_last_psnr": float(psnr(self._decode(copy)[0], real).mean())}

    @property
    def pending_frames(self) -> int:
        """Observed frames waiting for their chunk to fill."""
        return len(self._pending_frames)

    def _observe_tensors(self, frames: torch.Tensor, actions: torch.Tensor | None) -> None:
        if self._before_predictions is not None:  # the real frames replace what step() predicted
            compute_dtype = self.stream.compute_dtype
            self.stream, self._last_action = self._before_predictions
            self.stream.compute_dtype = compute_dtype  # set_precision() may have run since
            self._before_predictions = None
        latents = self.codec.encode(frames[None].to(self.device))  # (1, C, T, h, w)
        if self.config.residual_decoding or self.config.rotation_reference:
            newest = frames[-1:].to(self.device)
            self._anchor = (newest, self.codec.decode(latents[:, :, -1:])[:, 0], latents[:, :, -1])
            self._turn_action = actions[-1] if actions is not None else None
            self._turn_rotation = torch.eye(3, dtype=torch.float64)
            self._turn_frame = (newest, latents[:, :, -1])
        for i in range(latents.shape[2]):
            self._pending_frames.append(latents[:, :, i])
            self._pending_actions.append(actions[i] if actions is not None else None)
        cf = self.config.chunk_frames
        while len(self._pending_frames) >= cf:
            chunk = torch.stack(self._pending_frames[:cf], dim=2)  # (1, C, cf, h, w)
            acts = self._pending_actions[:cf]
            del self._pending_frames[:cf], self._pending_actions[:cf]
            features = self._features(acts, batch=1, previous=self._last_action)
            self._last_action = acts[-1]
            self.stream.append_history(chunk, features, generator=self._observe_generator, defer=self.fuse_passes)

    def _features(self, actions: list[torch.Tensor | None] | torch.Tensor | None, batch: int,
                  modality: str | None = None, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Action features (batch, chunk_frames, A); frames without actions get the null feature.

        ``previous`` (D,) or (batch, D) is the action of the frame before the chunk (None: unknown),
        the reference of the first frame's motion when the model takes motion inputs.
        """
        cfg = self.config
        enc = self.transformer.action_encoder
        cf = cfg.chunk_frames
        padded = torch.zeros(batch, cf, enc.max_action_size, device=self.device)
        dropped = torch.ones(batch, cf, dtype=torch.bool, device=self.device)
        if isinstance(actions, torch.Tensor):  # (batch, cf, D)
            padded[..., : actions.shape[-1]] = actions.to(self.device)
            dropped[:] = False
        elif actions is not None:
            for i, a in enumerate(actions):
                if a is not None:
                    padded[:, i, : a.shape[-1]] = a.to(self.device)
                    dropped[:, i] = False
        mid = enc.modality_index(modality or self._modality)
        ids = torch.full((batch,), mid, dtype=torch.long, device=self.device)
        motion = None
        if enc.uses_motion:
            before = None
            if previous is not None:
                before = torch.zeros(batch, enc.max_action_size, device=self.device)
                before[:, : previous.shape[-1]] = previous.to(self.device)
            motion = enc.motion(padded, ids, before)
            # A frame whose predecessor carried no action has no known motion.
            predecessor_known = torch.cat([torch.full((batch, 1), previous is not None, device=self.device),
                                           ~dropped[:, :-1]], dim=1)
            motion[~predecessor_known] = 0.0
        features = enc(padded, ids, dropped, motion)[0]
        return self.transformer.add_arm_maps(features, self._chunk_arm_maps(padded, dropped, modality or self._modality))

    @torch.no_grad()
    def step(self, actions: np.ndarray, seed: int | None = None, generator: torch.Generator | None = None,
             guidance_scale: float | None = None) -> np.ndarray:
        """Predict the next frames for ``actions`` (k * frames_per_chunk, D); returns uint8 (k*n, H, W, 3).

        Predictions are appended to the history (noised), so repeated calls roll out open-loop; the
        next :meth:`observe` takes them out again and puts the real frames in their place.
        """
        self._require_started("step")
        self._require_whole_chunks("step")
        guidance_scale = checked_guidance(guidance_scale)
        n = self.frames_per_chunk
        actions_t = self._actions_to_tensor(actions, self._modality, None, "actions")
        if actions_t.shape[0] == 0 or actions_t.shape[0] % n:
            raise ValueError(f"step() takes actions for whole chunks: a multiple of frames_per_chunk={n} rows, "
                             f"got {actions_t.shape[0]}")
        gen = as_generator(seed, generator, self._step_generator)
        self._views.clear()  # views are shared within one call (see turned_views.py)
        if self._before_predictions is None:
            self._before_predictions = (self.stream.fork(), self._last_action)
        frames = []
        batched = self.codec_calls_batched
        # The anchor views decoding looks up, encoded with the references: only where the cache serves them.
        encode_anchors = batched and self.reuse_views and n >= 2
        for c in range(actions_t.shape[0] // n):
            chunk_actions = actions_t[None, c * n:(c + 1) * n]  # (1, n, D)
            features = self._features(chunk_actions, 1, previous=self._last_action)
            self._last_action = chunk_actions[0, -1]
            reference = rotations = None
            if self.config.rotation_reference:
                rotations = self._rotations_after_turn(chunk_actions)
                reference = self._turned_reference(*self._turn_frame, self._turn_rotation.T @ rotations,
                                                   anchor_rotations=rotations if encode_anchors else None)
            latents = self._predict(self.stream, features, gen, guidance_scale, reference=reference,
                                    first_frame_ahead=self._frames_ahead + 1)
            decoded = self._decode_float(latents, rotations, together=batched)  # (1, n, 3, H, W)
            if rotations is not None:  # the next chunk turns this chunk's newest frame
                self._turn_action, self._turn_rotation = chunk_actions[0, -1], rotations[0, -1]
                self._turn_frame = (decoded[:, -1], latents[:, :, -1])
            frames.append(decoded)
            self.stream.append_history(latents, features, generator=gen, defer=self.fuse_passes)
        return self._to_uint8(torch.cat(frames, dim=1))[0]

    @torch.no_grad()
    def roll_out_latents(self, history: torch.Tensor, actions: torch.Tensor, modality: str,
                         generator: torch.Generator, history_generator: torch.Generator | None = None) -> torch.Tensor:
        """Open-loop futures of B clips, each from its own history, in latents (training and analysis).

        ``history`` (B, C, H, h, w) are the observed latents (H a multiple of ``chunk_frames``),
        ``actions`` (B, H + N, D) the actions of the observed and the N future frames. Returns the
        predicted latents (B, C, N, h, w), sampled as :meth:`start` + :meth:`step` sample them (the
        history noised with ``history_generator``, default ``generator``). Leaves the live stream alone.
        """
        cf = self.config.chunk_frames
        if self.config.rotation_reference:
            raise ValueError("roll_out_latents() has latents only, and rotation_reference turns the newest observed "
                             "frame's pixels: roll out through start() and imagine()")
        b, _, observed = history.shape[:3]
        if observed % cf or actions.shape[1] % cf or actions.shape[1] <= observed or actions.shape[0] != b:
            raise ValueError(f"roll_out_latents() takes whole chunks of {cf} frames, history and actions of the same "
                             f"clips and more actions than history, got {tuple(history.shape)} and {tuple(actions.shape)}")
        stream = StreamingRollout(self.transformer, use_cache=True, compute_dtype=self.stream.compute_dtype)
        previous = None
        out = []
        for start in range(0, actions.shape[1], cf):
            chunk_actions = actions[:, start:start + cf].to(self.device)
            features = self._features(chunk_actions, b, modality, previous=previous)
            previous = chunk_actions[:, -1]
            if start < observed:
                stream.append_history(history[:, :, start:start + cf].to(self.device), features,
                                      generator=history_generator or generator, defer=self.fuse_passes)
                continue
            latents = self._predict(stream, features, generator, None, modality=modality,
                                    first_frame_ahead=(start - observed) * self.codec.temporal_factor + 1)
            out.append(latents)
            stream.append_history(latents, features, generator=generator, defer=self.fuse_passes)
        return torch.cat(out, dim=2)

    def _predict(self, stream: StreamingRollout, features: torch.Tensor, gen: torch.Generator,
                 guidance_scale: float | None, shared_noise: bool = False, steps: int | None = None,
                 noise: torch.Tensor | None = None, modality: str | None = None,
                 reference: torch.Tensor | None = None, first_frame_ahead: int = 1) -> torch.Tensor:
        """One chunk's latents for action ``features`` (B, chunk_frames, A), the null features
        of ``modality`` giving the action-free branch of guidance; ``reference`` (B, C, chunk_frames,
        h, w) the per-frame delta reference (``rotation_reference``); ``first_frame_ahead``: how many
        frames after the newest observed one the chunk's first frame lies (its change scale)."""
        scale = self.guidance_scale_for(modality) if guidance_scale is None else float(guidance_scale)
        null = self._features(None, features.shape[0], modality) if scale != 1.0 else None
        steps = self.config.denoise_steps if steps is None else steps
        return stream.predict_chunk(features, null, scale, steps, generator=gen,
                                    shared_noise=shared_noise, noise=noise, reference=reference,
                                    delta_scale=self.config.delta_scales(first_frame_ahead))

    def guidance_scale_for(self, modality: str | None = None) -> float:
        """The guidance scale used when a call passes none: the config's for ``modality`` (default:
        the live stream's)."""
        return self.config.guidance_scale_for(modality or self._modality)
