#!/usr/bin/env python3
"""Compare two models on the same clips from their ``astra-eval --save-frames`` directories, paired.

    .venv/bin/python scripts/compare_frames.py A_FRAMES B_FRAMES [--frames 20:40] [--out compare.json]

Both directories must hold the same clips (same bags, start frames and real futures: run astra-eval with
the same bags and flags). Per scenario and overall: pooled PSNR of A and of B over all pixels and over the
changed pixels (where the real future differs from the last observed frame), the difference A - B with a
95 % interval from resampling the *clips* (the same draw for both models: a paired bootstrap, much tighter
than two separate intervals), and the share of clips where A's error is lower. ``--frames START:STOP`` scores
only the predicted frames START to STOP-1 (0 = the first predicted frame; at 10 Hz, 20:40 is a 4 s rollout's
seconds 3-4).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from astra_ros.eval.dynamics import CHANGE_THRESHOLD, bootstrap_gain, clip_errors
from astra_ros.eval.frames import load_clip_frames


def paired_errors(a_dir: Path, b_dir: Path, threshold: float = CHANGE_THRESHOLD,
                  frames: slice = slice(None)) -> list[dict]:
    """Per clip: scenario and the error sums of A and B over the predicted ``frames``, all pixels and changed pixels."""
    a_files = sorted(p.name for p in a_dir.glob("*.npz"))
    b_files = sorted(p.name for p in b_dir.glob("*.npz"))
    if not a_files or a_files != b_files:
        raise SystemExit(f"{a_dir} and {b_dir} must hold the same clip files ({len(a_files)} vs {len(b_files)})")
    rows = []
    for name in a_files:
        a, b = load_clip_frames(a_dir / name), load_clip_frames(b_dir / name)
        if (a["bag"], a["start_frame"]) != (b["bag"], b["start_frame"]) or not np.array_equal(a["real"], b["real"]):
            raise SystemExit(f"{name}: the two directories hold different clips ({a['bag']}@{a['start_frame']} vs "
                             f"{b['bag']}@{b['start_frame']})")
        if frames.stop is not None and frames.stop > len(a["real"]):
            raise SystemExit(f"{name}: frames {frames.start}:{frames.stop} reach past the clip's {len(a['real'])} "
                             "predicted frames")
        ea = clip_errors(a["observed_last"], a["real"], a["model"], None, a["scenario"], threshold)
        eb = clip_errors(b["observed_last"], b["real"], b["model"], None, b["scenario"], threshold)
        rows.append({"scenario": a["scenario"], "a_se": ea.model_se[frames].sum(), "b_se": eb.model_se[frames].sum(),
                     "count": ea.count[frames].sum(), "a_changed_se": ea.changed_model_se[frames].sum(),
                     "b_changed_se": eb.changed_model_se[frames].sum(), "changed_count": ea.changed_count[frames].sum()})
    return rows


def compare(rows: list[dict], seed: int = 0) -> dict[str, dict]:
    """Per scenario and ``all``: pooled PSNR of A and B, A - B with its paired 95 % interval, A's win share."""
    out = {}
    for group in ["all"] + sorted({r["scenario"] for r in rows}):
        sel = [r for r in rows if group == "all" or r["scenario"] == group]
        col = {k: np.array([r[k] for r in sel], dtype=np.float64) for k in sel[0] if k != "scenario"}
        rng = np.random.default_rng(seed)
        whole = bootstrap_gain(col["a_se"], col["b_se"], col["count"], rng)
        changed = bootstrap_gain(col["a_changed_se"], col["b_changed_se"], col["changed_count"], rng)
        out[group] = {"clips": len(sel),
                      "psnr_a": whole["model"], "psnr_b": whole["copy_last"], "a_minus_b": whole["gain"],
                      "a_minus_b_ci95": whole["gain_ci95"],
                      "changed_psnr_a": changed["model"], "changed_psnr_b": changed["copy_last"],
                      "changed_a_minus_b": changed["gain"], "changed_a_minus_b_ci95": changed["gain_ci95"],
                      "a_better_share": float(np.mean(col["a_se"] < col["b_se"]))}
    return out


def _frame_range(text: str) -> slice:
    start, sep, stop = text.partition(":")
    try:
        if not sep or int(start) < 0 or int(stop) <= int(start):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP with 0 <= START < STOP, got {text!r}") from None
    return slice(int(start), int(stop))


def _interval(ci) -> str:
    return f"{ci[0]:+.2f} to {ci[1]:+.2f}" if ci else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="model A's --save-frames directory")
    parser.add_argument("b", type=Path, help="model B's --save-frames directory (the same clips)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    parser.add_argument("--change-threshold", type=float, default=CHANGE_THRESHOLD, help="[grey levels of 255]")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--frames", type=_frame_range, default=slice(None),
                        help="START:STOP: score only these predicted frames (0-based, STOP excluded)")
    args = parser.parse_args(argv)
    result = compare(paired_errors(args.a, args.b, args.change_threshold, args.frames), args.seed)
    print("| set | clips | pooled PSNR A | B | A - B (paired 95 %) | changed-pixel A | B | A - B (paired 95 %) | A better |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for group, r in result.items():
        print(f"| {group} | {r['clips']} | {r['psnr_a']:.2f} | {r['psnr_b']:.2f} | {r['a_minus_b']:+.2f} "
              f"({_interval(r['a_minus_b_ci95'])}) | {r['changed_psnr_a']:.2f} | {r['changed_psnr_b']:.2f} | "
              f"{r['changed_a_minus_b']:+.2f} ({_interval(r['changed_a_minus_b_ci95'])}) | {r['a_better_share']:.2f} |")
    if args.out:
        frames = None if args.frames.stop is None else [args.frames.start, args.frames.stop]
        args.out.write_text(json.dumps({"frames": frames, **result}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
