"""A/B of the streaming step's faster paths against the plain ones, interleaved in one process.

    python bench/step_ab.py [--checkpoint default] [--resolution 64] [--repeats 15] [--imagine 16 6 4 | --path NAME] [--out ...]

Each repeat times one ``step`` (one chunk after a full history, as ``astra-bench``) with the plain
paths and with the faster ones (``reuse_views``: turned views encoded once; ``fuse_passes``: a history
chunk's transformer pass shared with the next prediction's; ``batch_codec_calls``: the step's turned views
encoded in one call, its frames and their turned anchors decoded in one), in alternating order, so a shared machine's load falls on both alike;
the figure is the per-repeat ratio plain / fast (its median and range). The two give the same frames
bit for bit (test/test_speed_paths.py). A resolution other than the checkpoint's uses its architecture
with random weights. ``--imagine 16 6 4 --compare-steps 4 1`` times a planner's call at 4 against 1
Euler steps per chunk instead (both on the fast paths; "plain" is the first). ``--compile`` times the eager
model ("plain") against a copy whose codec and anchor decoder are compiled ("fast"; both on the fast paths).
``--path batch_codec_calls`` (or another of the three) times a step with that one path off ("plain") and on
(the encoder half of ``batch_codec_calls`` works through the turned-view cache, so ``--path reuse_views``
switches it off too);
``--open-loop K`` the K steps after the first instead (step after step, as ``predicted_fps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from astra_ros.cli.bench import at_resolution
from astra_ros.model import load_world_model
from astra_ros.model.compiled import CompileFailed, compile_convolutions


PATHS = ("reuse_views", "fuse_passes", "batch_codec_calls")


def set_paths(wm, fast: bool, only: str | None = None) -> None:
    """Every faster path on (``fast``) or off; with ``only``, just that one switched, the others on."""
    for path in PATHS:
        setattr(wm, path, fast if only in (None, path) else True)


def timed_step(wm, reuse: bool, seed: int, only: str | None = None, open_loop: int = 0) -> float:
    cfg = wm.config
    n = wm.frames_per_chunk
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (cfg.max_history_chunks * n, *cfg.resolution, 3), dtype=np.uint8)
    actions = (rng.normal(size=(frames.shape[0], 6)) * 0.05).astype(np.float32)
    set_paths(wm, reuse, only)
    wm.start(frames, actions, modality="twist", seed=seed)
    if open_loop:  # the steps after the first: each turns a predicted frame for its references
        wm.step(actions[:n], seed=seed)
        t0 = time.perf_counter()
        for _ in range(open_loop):
            wm.step(actions[:n], seed=seed)
        return (time.perf_counter() - t0) / open_loop
    t0 = time.perf_counter()
    wm.step(actions[:n], seed=seed)
    return time.perf_counter() - t0


def timed_imagine(wm, reuse: bool, seed: int, candidates: int, frames: int, steps: int) -> float:
    """Seconds for one planner call: ``candidates`` plans of ``frames`` frames, ``steps`` Euler steps,
    shared noise, the last frame decoded (what bench/plan_eval.py's CEM asks per iteration)."""
    cfg = wm.config
    rng = np.random.default_rng(seed)
    history = rng.integers(0, 255, (cfg.max_history_chunks * wm.frames_per_chunk, *cfg.resolution, 3), dtype=np.uint8)
    actions = (rng.normal(size=(history.shape[0], 6)) * 0.05).astype(np.float32)
    plans = (rng.normal(size=(candidates, frames, 6)) * 0.05).astype(np.float32)
    set_paths(wm, reuse)
    wm.start(history, actions, modality="twist", seed=seed)
    t0 = time.perf_counter()
    wm.imagine(plans, seed=seed, steps=steps, shared_noise=True, decode="last")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--resolution", type=int, default=0, help="pixels (square); 0: the checkpoint's")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--imagine", type=int, nargs=3, metavar=("CANDIDATES", "FRAMES", "STEPS"),
                   help="time a planner's imagine call instead of a step (e.g. 16 6 4: plan_eval's CEM)")
    p.add_argument("--compare-steps", type=int, nargs=2, metavar=("A", "B"),
                   help="with --imagine: A/B of A against B Euler steps per chunk (both on the fast paths), "
                        "e.g. 4 1: the planner's 4 against the model's own 1")
    p.add_argument("--compile", action="store_true",
                   help="A/B of the eager model against a copy with its convolution stacks compiled "
                        "(astra_ros.model.compiled; both on the fast paths); the compile time is reported")
    p.add_argument("--open-loop", type=int, default=0, metavar="K",
                   help="time K steps after the first (an open-loop stream, what predicted_fps runs), per step")
    p.add_argument("--path", choices=PATHS, help="A/B of this one faster path of the step alone (the others on)")
    p.add_argument("--out", type=Path, default=Path("bench/results/step_ab.json"))
    args = p.parse_args()
    if args.compare_steps and not args.imagine:
        p.error("--compare-steps needs --imagine CANDIDATES FRAMES STEPS")
    if args.open_loop < 0:
        p.error("--open-loop takes a number of steps >= 1 (0: time the first step)")
    if args.open_loop and args.imagine:
        p.error("--open-loop times steps; --imagine an imagine call: one at a time")
    if args.path and (args.imagine or args.compile):
        p.error("--path times a step with one faster path off and on: not with --imagine or --compile")
    if args.compile and args.compare_steps:
        p.error("--compile compares eager against compiled; --compare-steps compares Euler steps: one at a time")
    torch.set_num_threads(args.threads)

    def load():
        model = load_world_model(args.checkpoint)
        return at_resolution(model, args.resolution) if args.resolution else model  # random weights: seeded

    wm = load()
    compiled = None
    if args.compile:
        compiled = load()
        try:
            report = compile_convolutions(compiled)
        except CompileFailed as error:
            raise SystemExit(f"step_ab.py: --compile: {error}") from error
        print(f"compiled {', '.join(report.modules)} in {report.seconds:.0f} s; frames differ by up to "
              f"{report.max_grey_level_difference} grey level(s) on {100 * report.differing_pixel_fraction:.3f} % "
              "of pixels")
        # "plain" is the eager model, "fast" the compiled one
        timed = lambda b, seed: (timed_imagine(compiled if b else wm, True, seed, *args.imagine) if args.imagine  # noqa: E731
                                 else timed_step(compiled if b else wm, True, seed, open_loop=args.open_loop))
    elif args.compare_steps:  # "plain" is A steps, "fast" B steps, both on the fast paths
        candidates, frames, _ = args.imagine
        timed = lambda b, seed: timed_imagine(wm, True, seed, candidates, frames, args.compare_steps[int(b)])  # noqa: E731
    elif args.imagine:
        timed = lambda reuse, seed: timed_imagine(wm, reuse, seed, *args.imagine)  # noqa: E731
    else:
        timed = lambda reuse, seed: timed_step(wm, reuse, seed, args.path, args.open_loop)  # noqa: E731
    for reuse in (False, True):  # warm-up
        timed(reuse, 0)
    plain, fast = [], []
    for r in tqdm(range(args.repeats), desc="A/B repeats"):
        order = (False, True) if r % 2 == 0 else (True, False)
        for reuse in order:
            (fast if reuse else plain).append(timed(reuse, r))
    ratios = [a / b for a, b in zip(plain, fast)]
    result = {"checkpoint": args.checkpoint, "resolution": list(wm.config.resolution), "threads": args.threads,
              "compiled": None if compiled is None else dataclasses.asdict(report),
              "timed": (f"imagine {args.imagine[:2]}, Euler steps {args.compare_steps[0]} (plain) vs "
                        f"{args.compare_steps[1]} (fast)" if args.compare_steps
                        else f"imagine {args.imagine}" if args.imagine else "step")
              + (", eager (plain) vs compiled (fast)" if args.compile else "")
              + (f", only {args.path} switched" if args.path else "")
              + (f", {args.open_loop} open-loop steps after the first" if args.open_loop else ""),
              "repeats": args.repeats, "plain_step_s": plain, "fast_step_s": fast,
              "speedup": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["speedup"]
    print(f"{result['timed']} plain {statistics.median(plain) * 1e3:.1f} ms, fast {statistics.median(fast) * 1e3:.1f} ms (medians); "
          f"per-repeat speedup {s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}] over {args.repeats}")


if __name__ == "__main__":
    main()
