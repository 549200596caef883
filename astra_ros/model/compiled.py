"""Opt-in ``torch.compile`` of the model's convolution stacks: the codec's encoder and decoder and the
anchor decoder.

They are most of a streaming step (codec and anchor decoder 60-70 % of it, docs/SPEED.md), and between
their convolutions run GroupNorm, SiLU, upsampling and additions that eager PyTorch launches one by one;
compiled, those fuse. It is opt-in because it costs minutes of compiling the first time (inductor keeps
its artefacts on disk, so a later process compiles the same shapes in seconds), needs a C++ compiler,
and its fused kernels round differently: frames may differ from the eager ones by a grey level on a few
pixels. :func:`compile_convolutions` compiles, warms up on the shapes a stream uses, checks the frames
against the eager ones and undoes itself when anything fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .codec_batching import forget

# Largest difference [grey levels, of 255] accepted between compiled and eager frames (measured: 1, on
# 0.03 % of the pixels of a 128 px step); a kernel bug differs by tens.
GREY_LEVEL_TOLERANCE = 2


class CompileFailed(RuntimeError):
    """torch.compile could not compile the model here, or its frames disagree with the eager ones."""


@dataclass(frozen=True)
class CompileReport:
    seconds: float  # compiling and warming up, on this process
    max_grey_level_difference: int  # compiled vs eager frames of the warm-up stream
    differing_pixel_fraction: float
    modules: tuple[str, ...]


def compilable_modules(model) -> dict[str, nn.Module]:
    """The modules :func:`compile_convolutions` compiles, by name."""
    if model.config.codec.kind != "autoencoder_kl":
        raise CompileFailed(f"compiling is offered for the autoencoder_kl codec, not {model.config.codec.kind!r}")
    modules = {"codec.encoder": model.codec.vae.encoder, "codec.decoder": model.codec.vae.decoder}
    if model.anchor_decoder is not None:
        modules["anchor_decoder"] = model.anchor_decoder
    return modules


def _probe_frames(model, context_frames: int | None) -> np.ndarray:
    """A short stream on a twin of ``model`` (its own stream, the same weights; the model's own is left
    alone) making the calls a node makes: start from ``context_frames`` (default: a full history), two steps,
    a live forecast (one candidate, every frame decoded, then only the last), and a 2-candidate imagine.
    Returns every frame it produced (uint8)."""
    stream = model.twin()
    cfg = model.config
    n = model.frames_per_chunk
    rng = np.random.default_rng(0)
    count = context_frames or cfg.max_history_chunks * n
    frames = rng.integers(0, 256, (count, *cfg.resolution, 3), dtype=np.uint8)
    modality = "twist" if "twist" in model.modalities else model.modalities[0]
    dim = model.action_dim(modality)
    actions = (rng.normal(size=(count, dim)) * 0.05).astype(np.float32)
    plans = (rng.normal(size=(2, 2 * n, dim)) * 0.05).astype(np.float32)
    stream.start(frames, actions, modality=modality, seed=0)
    out = [stream.step(actions[:n], seed=0), stream.step(actions[:n], seed=1)]  # the second in open loop
    stream.start(frames, actions, modality=modality, seed=0)
    out += [stream.imagine(plans[:1], seed=0), stream.imagine(plans[:1], seed=0, decode=[2 * n - 1]),
            stream.imagine(plans, seed=0, shared_noise=True)]
    return np.concatenate([np.asarray(o).reshape(-1, *cfg.resolution, 3) for o in out])


class _WarmedForward:
    """A module's forward that runs compiled for the input shapes met while ``learning`` (the warm-up's,
    checked against the eager frames) and eagerly for any other: a new shape would otherwise compile
    inside whichever thread meets it (minutes, unchecked)."""

    def __init__(self, eager, compiled) -> None:
        self.eager, self.compiled = eager, compiled
        self.shapes: set[tuple] = set()
        self.learning = True

    @staticmethod
    def _key(args, kwargs) -> tuple:
        return tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
                     for a in (*args, *kwargs.values())) + tuple(kwargs)

    def __call__(self, *args, **kwargs):
        key = self._key(args, kwargs)
        if self.learning:
            self.shapes.add(key)
        return (self.compiled if key in self.shapes else self.eager)(*args, **kwargs)


def _restore(model, modules: dict[str, nn.Module]) -> None:
    for module in modules.values():
        module.__dict__.pop("forward", None)  # back to the class's own forward
    forget(model.codec)  # eager kernels again: batching is probed afresh


def compile_convolutions(model, context_frames: int | None = None, threads: int | None = None) -> CompileReport:
    """Compile ``model``'s codec encoder and decoder and its anchor decoder in place (their weights and
    state dict unchanged), warm them up and check them against the eager frames.

    ``context_frames``: what the caller starts its streams from (the warm-up does the same); ``threads``: the
    torch threads the model will run on. Inductor writes the thread count into the kernels it generates,
    so compile on the threads that will run them (default: the current setting).

    Raises :class:`CompileFailed` (the model then runs eagerly, as before) when torch.compile fails here
    (no C++ compiler, an unsupported operation) or the compiled frames differ by more than
    ``GREY_LEVEL_TOLERANCE`` grey levels. Calls of shapes the warm-up did not make run eagerly.
    """
    modules = compilable_modules(model)
    if any("forward" in module.__dict__ for module in modules.values()):
        raise CompileFailed("the model's convolution stacks are compiled already")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            eager = _probe_frames(model, context_frames)
        started = time.perf_counter()
        for module in modules.values():  # an instance attribute over the class's method
            module.forward = _WarmedForward(module.forward, torch.compile(module.forward))
        forget(model.codec)  # the warm-up's start probes batching on the compiled kernels (and compiles its shapes)
        with torch.no_grad():
            compiled = _probe_frames(model, context_frames)
        for module in modules.values():
            module.forward.learning = False
        seconds = time.perf_counter() - started
    except Exception as error:  # inductor raises many kinds (no compiler, lowering errors, ...)
        _restore(model, modules)
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise CompileFailed(f"torch.compile failed here ({type(error).__name__}: {first_line[:300]}); the model "
                            "runs uncompiled") from error
    finally:
        torch.set_num_threads(before)
    difference = np.abs(compiled.astype(np.int16) - eager.astype(np.int16))
    worst = int(difference.max())
    if worst > GREY_LEVEL_TOLERANCE:
        _restore(model, modules)
        raise CompileFailed(f"compiled frames differ from the eager ones by up to {worst} grey levels (accepted: "
                            f"{GREY_LEVEL_TOLERANCE}); the model runs uncompiled")
    return CompileReport(seconds=seconds, max_grey_level_difference=worst,
                         differing_pixel_fraction=float((difference > 0).mean()), modules=tuple(modules))


def compile_or_explain(model, context_frames: int | None = None,
                       threads: int | None = None) -> tuple[CompileReport | None, str]:
    """:func:`compile_convolutions` for a service that should run on, compiled or not: the report (None when
    it failed) and one line saying what happened."""
    try:
        report = compile_convolutions(model, context_frames, threads)
    except CompileFailed as error:
        return None, str(error)
    return report, (f"compiled {', '.join(report.modules)} in {report.seconds:.0f} s; frames within "
                    f"{report.max_grey_level_difference} grey level(s) of the eager ones")
