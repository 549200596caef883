"""A/B of the allocator setting (astra_ros/model/allocator.py): the streaming step with glibc's defaults
against the step with its freed activations kept for the next one.

    python bench/allocator_ab.py [--checkpoint default] [--resolution 128] [--pairs 4] [--threads 2] [--out ...]

The setting is process-wide and applied when the first model is built, so each side runs in its own
process (``ASTRA_KEEP_FREED_MEMORY=0`` for the defaults); the two kinds of process alternate, pair after
pair, so a shared machine's load falls on both alike, and the figure is the per-pair ratio of frames
per second (median and range). Each process streams open loop (``astra-bench``'s ``predicted_fps``)
and counts the step's minor page faults and kernel seconds (counts, not times, for the cause).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from astra_ros.cli.bench import _inputs, at_resolution
from astra_ros.model import allocator, load_world_model
checkpoint, size, threads, chunks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
wm = load_world_model(checkpoint)
if size != wm.resolution[0]:
    wm = at_resolution(wm, size)
n = wm.frames_per_chunk
video, actions, modality = _inputs(wm, 2 * n)
wm.start(video, actions, modality=modality, seed=0)
for _ in range(3):
    wm.step(actions[:n])
usage, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(chunks):
    wm.step(actions[:n])
seconds, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"fps": chunks * n / seconds, "faults_per_step": (after.ru_minflt - usage.ru_minflt) / chunks,
                  "kernel_s_per_step": (after.ru_stime - usage.ru_stime) / chunks,
                  "user_s_per_step": (after.ru_utime - usage.ru_utime) / chunks,
                  "kept": allocator.keep_freed_memory()}))
"""


def run(keep: bool, args) -> dict:
    env = {**os.environ, "ASTRA_KEEP_FREED_MEMORY": "1" if keep else "0"}
    done = subprocess.run([sys.executable, "-c", CHILD, args.checkpoint, str(args.resolution), str(args.threads),
                           str(args.chunks)], capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"benchmark process failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--resolution", type=int, default=128, help="pixels (square); not the checkpoint's: random weights")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--chunks", type=int, default=20, help="streaming steps timed per process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/results/allocator_ab.json"))
    args = p.parse_args()
    sides: dict[str, list[dict]] = {"defaults": [], "kept": []}
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for keep in order:
            sides["kept" if keep else "defaults"].append(run(keep, args))
        print(f"pair {i + 1}/{args.pairs}: " + ", ".join(f"{k} {v[-1]['fps']:.2f} frames/s" for k, v in sides.items()),
              flush=True)
    if any(r["kept"] for r in sides["defaults"]) or not all(r["kept"] for r in sides["kept"]):
        raise SystemExit("the allocator setting did not apply as asked (not glibc?)")
    ratios = [k["fps"] / d["fps"] for d, k in zip(sides["defaults"], sides["kept"])]

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in sides[side])

    result = {"resolution": args.resolution, "threads": args.threads, "pairs": args.pairs, "chunks": args.chunks,
              "fps_ratio_kept_over_defaults": {"median": statistics.median(ratios), "min": min(ratios),
                                               "max": max(ratios)},
              **{side: {key: med(side, key) for key in ("fps", "faults_per_step", "kernel_s_per_step",
                                                        "user_s_per_step")} for side in sides},
              "runs": sides}
    print(f"{args.resolution} px, {args.threads} threads: kept / defaults {result['fps_ratio_kept_over_defaults']['median']:.2f}x "
          f"[{min(ratios):.2f}, {max(ratios):.2f}]; frames/s {result['defaults']['fps']:.2f} -> {result['kept']['fps']:.2f}; "
          f"minor faults per step {result['defaults']['faults_per_step']:.0f} -> {result['kept']['faults_per_step']:.0f}; "
          f"kernel s per step {result['defaults']['kernel_s_per_step']:.3f} -> {result['kept']['kernel_s_per_step']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
