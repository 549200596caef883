"""Imagination throughput: candidate-frames per second of ``WorldModel.imagine`` against batch size and horizon.

    python bench/imagine_throughput.py --threads 1 --out bench/results/imagine_throughput.json

For each horizon (frames per candidate) and batch size (candidates), one ``imagine`` call from a
started live stream is timed (median over ``--repeats``): every candidate is one row of one batch
through the model (guidance passes batched too), all sharing the live history's cached keys/values.
``candidate_frames_per_s = batch * horizon / latency``. Two settings are measured:

* ``full``: the model's defaults (``denoise_steps`` Euler steps, its guidance scale), every frame decoded;
* ``planner``: what ``bench/plan_eval.py`` uses (``--planner-steps`` Euler steps, guidance off) with
  only each candidate's last frame decoded (``decode="last"``), and the same with all frames decoded,
  so the decoder's share shows.

Batches run unsplit (``max_batch`` = the batch), so the curve shows where the CPU saturates.
Writes JSON to ``--out`` and a PNG next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

LONG_CALL_S = 5.0  # [s] calls longer than this are timed once


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default", help="'default', a directory, or 'random:<preset>'")
    p.add_argument("--batches", default="1,2,4,8,16,32,64", help="candidates per call")
    p.add_argument("--horizons", default="2,4,8", help="frames per candidate")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per point (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--planner-steps", type=int, default=4, help="Euler steps of the 'planner' setting")
    p.add_argument("--quick", action="store_true", help="batches 1,2,4, horizon 2, one repeat (seconds)")
    p.add_argument("--out", type=Path, default=Path("bench/results/imagine_throughput.json"))
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.horizons, args.repeats = "1,2,4", "2", 1
    return args


def time_call(model, actions: np.ndarray, repeats: int, **kwargs) -> float:
    """Median latency [s] of ``repeats`` calls; one call when it takes over LONG_CALL_S (timing noise is small then)."""
    times = []
    for r in range(repeats):
        began = time.perf_counter()
        model.imagine(actions, seed=r, shared_noise=True, max_batch=len(actions), **kwargs)
        times.append(time.perf_counter() - began)
        if times[-1] > LONG_CALL_S:
            break
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from astra_ros.model import load_world_model

    model = load_world_model(args.checkpoint)
    rng = np.random.default_rng(0)
    height, width = model.resolution
    frames = rng.integers(0, 256, (4, height, width, 3), dtype=np.uint8)
    model.start(frames, np.zeros((4, 6), np.float32), modality="twist")
    batches = [int(b) for b in args.batches.split(",")]
    horizons = [int(h) for h in args.horizons.split(",")]
    settings = {
        "full": dict(decode="all"),
        "planner_last": dict(decode="last", steps=args.planner_steps, guidance_scale=1.0),
        "planner_all": dict(decode="all", steps=args.planner_steps, guidance_scale=1.0),
    }
    model.imagine(rng.normal(0, 0.05, (2, 2, 6)).astype(np.float32), seed=0)  # warm-up
    rows = []
    for horizon in horizons:
        for name, kwargs in settings.items():
            for batch in batches:
                actions = rng.normal(0, 0.05, (batch, horizon, 6)).astype(np.float32)
                latency = time_call(model, actions, args.repeats, **kwargs)
                row = {"setting": name, "horizon": horizon, "batch": batch, "latency_s": latency,
                       "candidate_frames_per_s": batch * horizon / latency, "candidates_per_s": batch / latency}
                rows.append(row)
                print(f"{name:<13} horizon {horizon:>2}  batch {batch:>3}: {latency:7.3f} s/call  "
                      f"{row['candidate_frames_per_s']:7.1f} candidate-frames/s", flush=True)
    cfg = model.config
    result = {
        "checkpoint": args.checkpoint, "threads": args.threads, "repeats": args.repeats,
        "model": {"resolution": list(cfg.resolution), "frames_per_chunk": model.frames_per_chunk,
                  "denoise_steps": cfg.denoise_steps, "guidance_scale": cfg.guidance_scale,
                  "default_imagine_batch": model.default_imagine_batch()},
        "settings": {name: {k: v for k, v in kw.items()} for name, kw in settings.items()},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_plot:
        plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    horizons = sorted({r["horizon"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for setting, style in (("full", "-"), ("planner_last", "--"), ("planner_all", ":")):
        for horizon in horizons:
            pts = [r for r in rows if r["setting"] == setting and r["horizon"] == horizon]
            if not pts:
                continue
            b = [r["batch"] for r in pts]
            axes[0].plot(b, [r["candidate_frames_per_s"] for r in pts], style, marker="o", label=f"{setting}, N={horizon}")
            axes[1].plot(b, [r["latency_s"] for r in pts], style, marker="o", label=f"{setting}, N={horizon}")
    for ax, label in ((axes[0], "candidate-frames / s"), (axes[1], "latency per call [s]")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (candidates)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"imagine throughput, {result['checkpoint']}, {result['threads']} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
