"""Where one predictor tick spends its time, and what the candidate optimisations buy.

    python bench/profile_inference.py [--checkpoint default] [--repeats 5] [--out bench/results/profile_inference.json]

A tick is what the predictor node runs per prediction: ``start`` on the observation window
(context 4 frames) then ``imagine`` of the horizon (4 frames). The breakdown times the codec's
encoder, the transformer (every call: history appends, denoising steps, both guidance passes)
and the codec's decoder. Variants are timed interleaved (round-robin over repeats) in one run so
that their ratios survive a noisy shared machine; medians are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from astra_ros.model import WorldModel


class StageTimer:
    """Wall time per stage, collected by wrapping the model's modules' methods."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, obj, name: str, stage: str) -> None:
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.totals[stage] += time.perf_counter() - t0
            return out

        setattr(obj, name, timed)


def tick(wm: WorldModel, frames: np.ndarray, actions: np.ndarray, future: np.ndarray, **imagine_kwargs) -> np.ndarray:
    wm.start(frames, actions, modality="twist", seed=0)
    return wm.imagine(future[None], seed=0, **imagine_kwargs)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/profile_inference.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wm = WorldModel.from_pretrained(args.checkpoint)
    base_config = wm.config
    rng = np.random.default_rng(0)
    h, w = wm.resolution
    frames = rng.integers(0, 255, (4, h, w, 3), dtype=np.uint8)
    actions = (rng.normal(size=(4, 6)) * 0.1).astype(np.float32)
    future = (rng.normal(size=(4, 6)) * 0.1).astype(np.float32)

    # 1. Breakdown of the configured tick
    timer = StageTimer()
    timer.wrap(wm.codec, "encode", "codec_encode")
    timer.wrap(wm.codec, "decode", "codec_decode")
    calls = {"n": 0}
    transformer_forward = wm.transformer.forward

    def counted(*a, **k):
        calls["n"] += 1
        t0 = time.perf_counter()
        out = transformer_forward(*a, **k)
        timer.totals["transformer"] += time.perf_counter() - t0
        return out

    wm.transformer.forward = counted
    tick(wm, frames, actions, future)  # warm-up
    timer.totals.clear()
    calls["n"] = 0
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        tick(wm, frames, actions, future)
    total = (time.perf_counter() - t0) / args.repeats
    stages = {k: v / args.repeats for k, v in timer.totals.items()}
    stages["other"] = total - sum(stages.values())
    breakdown = {"tick_s": total, "stages_s": stages, "share": {k: v / total for k, v in stages.items()},
                 "transformer_calls_per_tick": calls["n"] / args.repeats}
    wm.transformer.forward = transformer_forward
    print(json.dumps(breakdown, indent=1))

    # 2. Variants, interleaved
    steps = base_config.denoise_steps

    def configured(**changes):
        def run():
            wm.config = dataclasses.replace(base_config, **changes)
            try:
                return tick(wm, frames, actions, future)
            finally:
                wm.config = base_config
        return run

    def with_bf16():
        wm.set_precision("bfloat16")
        try:
            return tick(wm, frames, actions, future)
        finally:
            wm.set_precision("float32")

    variants = {
        f"baseline ({steps} steps, s={base_config.guidance_scale:g}, fp32)": configured(),
        "transformer in bfloat16 (set_precision)": with_bf16,
        f"{steps // 2} steps": configured(denoise_steps=max(1, steps // 2)),
        f"{max(1, steps // 4)} steps": configured(denoise_steps=max(1, steps // 4)),
        "guidance off (s=1, one pass)": configured(guidance_scale=1.0),
        f"{max(1, steps // 4)} steps, s=1": configured(denoise_steps=max(1, steps // 4), guidance_scale=1.0),
    }
    reference = variants[next(iter(variants))]()
    times: dict[str, list[float]] = {k: [] for k in variants}
    deviation: dict[str, float] = {}
    for name, fn in variants.items():  # warm-up, and how far each variant's frames move from the baseline
        out = fn()
        deviation[name] = float(np.abs(out.astype(np.int16) - reference.astype(np.int16)).mean())
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base_name = next(iter(variants))
    base_median = statistics.median(times[base_name])
    table = {name: {"tick_s": statistics.median(t), "speedup": base_median / statistics.median(t),
                    "mean_abs_diff_vs_baseline_u8": deviation[name]} for name, t in times.items()}
    for name, row in table.items():
        print(f"{name:40s} {row['tick_s'] * 1e3:8.1f} ms  x{row['speedup']:.2f}  |diff| {row['mean_abs_diff_vs_baseline_u8']:.1f}")
    result = {"checkpoint": args.checkpoint, "threads": args.threads, "repeats": args.repeats,
              "context_frames": 4, "horizon": 4, "breakdown": breakdown, "variants": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
