"""Where a streaming step spends its time, and how many FLOPs it does: by recording the calls it makes.

:class:`StepRecorder` wraps a :class:`~astra_ros.model.world_model.WorldModel`'s parts (codec encode and
decode, transformer, anchor decoder) while it is active: each call's wall time goes to its stage and
its shape to a list, from which :meth:`StepRecorder.flops` gives the analytic FLOPs
(:mod:`astra_ros.model.flops`) of exactly what ran. Whatever the step did outside those parts
(rotations, warps, action features, cache copies, uint8 conversion) is ``glue``: the step's time
minus the parts'.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

from . import flops as F

STAGES = ("codec_encode", "transformer", "codec_decode", "anchor_decoder")


class StepRecorder:
    """Times and shapes of the calls a model's parts receive inside :meth:`recording`."""

    def __init__(self, wm) -> None:
        self.wm = wm
        self.seconds: dict[str, float] = defaultdict(float)
        self.encoded = self.decoded = self.anchored = 0  # frames through each part
        self.encoder_calls = self.decoder_calls = 0
        self.passes: list[tuple[int, int, int]] = []  # transformer (batch, query tokens, past tokens)
        self.splits: dict[int, tuple[int, int]] = {}  # pass index -> (history tokens, dropped) of fused passes

    def reset(self) -> None:
        self.seconds.clear()
        self.encoded = self.decoded = self.anchored = 0
        self.encoder_calls = self.decoder_calls = 0
        self.passes.clear()
        self.splits.clear()

    def _wrap(self, obj, name: str, stage: str, shapes):
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.seconds[stage] += time.perf_counter() - t0
            shapes(*args, **kwargs)
            return out

        previous = vars(obj).get(name)  # an instance attribute already there (a compiled forward) comes back after
        setattr(obj, name, timed)
        return obj, name, previous

    @contextmanager
    def recording(self):
        """Record every call of the parts while inside; the parts are restored on leaving."""
        wm, cfg = self.wm, self.wm.config

        def encode(frames, *a, **k):
            self.encoded += frames.shape[0] * frames.shape[1]
            self.encoder_calls += 1

        def decode(latents, *a, **k):
            self.decoded += latents.shape[0] * latents.shape[2]
            self.decoder_calls += 1

        def anchor(anchor_frames, anchor_latents, anchor_coarse, latents, coarse):
            self.anchored += latents.shape[0]

        def transformer(latents, flow_t, frame_pos, action_features=None, attention_mask=None, past_kv=None,
                        context=None, split=None):
            if attention_mask is not None:
                raise ValueError("StepRecorder counts cached streaming passes, not dense ones with a mask")
            b, _, f = latents.shape[:3]
            past = past_kv[0][0].shape[2] if past_kv else 0
            self.passes.append((b, f * cfg.tokens_per_frame, past))
            if split is not None:
                self.splits[len(self.passes) - 1] = (split[0] * cfg.tokens_per_frame, split[1])

        wrapped = [self._wrap(wm.codec, "encode", "codec_encode", encode),
                   self._wrap(wm.codec, "decode", "codec_decode", decode),
                   self._wrap(wm.transformer, "forward", "transformer", transformer)]
        if wm.anchor_decoder is not None:
            wrapped.append(self._wrap(wm.anchor_decoder, "forward", "anchor_decoder", anchor))
        try:
            yield self
        finally:
            for obj, name, previous in wrapped:
                if previous is None:
                    delattr(obj, name)  # back to the class's method
                else:
                    setattr(obj, name, previous)

    def flops(self) -> dict[str, F.Flops]:
        """Analytic FLOPs of the recorded calls by stage (:data:`STAGES`)."""
        cfg = self.wm.config
        h, w = cfg.resolution
        transformer = F.Flops()
        for i, (batch, tokens, past) in enumerate(self.passes):
            transformer = transformer + F.transformer_pass(cfg, tokens, past, batch, self.splits.get(i))
        return {"codec_encode": F.codec_encode(cfg.codec, h, w) * self.encoded,
                "transformer": transformer,
                "codec_decode": F.codec_decode(cfg.codec, h, w) * self.decoded,
                "anchor_decoder": F.anchor_decoder(cfg, h, w) * self.anchored}
