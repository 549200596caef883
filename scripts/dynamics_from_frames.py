#!/usr/bin/env python3
"""Recompute ``metrics.json["dynamics"]`` from the frames ``astra-eval --save-frames DIR`` wrote.

    .venv/bin/python scripts/dynamics_from_frames.py DIR [--out dynamics.json] [--change-threshold 8] [--seed 0]

Pooled-MSE and changed-pixel PSNR, gains over copy-last with bootstrap intervals, sensitivity per
scenario, per-second gains (docs/EVALUATION.md), from nothing but the .npz files: with the same
threshold and seed it gives astra-eval's numbers exactly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from astra_ros.eval.dynamics import CHANGE_THRESHOLD, clip_errors, dynamics_summary
from astra_ros.eval.frames import load_clip_frames
from astra_ros.eval.report import dynamics_lines, write_metrics_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frames", type=Path, help="the --save-frames directory")
    parser.add_argument("--out", type=Path, help="write the summary as JSON here")
    parser.add_argument("--change-threshold", type=float, default=CHANGE_THRESHOLD, help="[grey levels of 255]")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (astra-eval uses its --seed)")
    args = parser.parse_args(argv)
    files = sorted(args.frames.glob("*.npz"))
    if not files:
        print(f"no .npz files in {args.frames}", file=sys.stderr)
        return 2
    errors, interval = [], None
    for path in files:
        data = load_clip_frames(path)
        interval = data["frame_interval_s"]
        errors.append(clip_errors(data["observed_last"], data["real"], data["model"], data["shuffled"],
                                  data["scenario"], args.change_threshold, ceiling=data["ceiling"]))
    summary = dynamics_summary(errors, interval, seed=args.seed, threshold=args.change_threshold)
    print("\n".join(dynamics_lines(summary)))
    if args.out:
        write_metrics_json(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
