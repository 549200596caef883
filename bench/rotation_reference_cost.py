"""What the rotation reference costs: ``imagine`` latency with ``rotation_reference`` on and off.

    python bench/rotation_reference_cost.py --threads 1 --out bench/results/rotation_reference_cost.json

A rotation-reference model turns the newest observed frame for every predicted frame and encodes the
turned views (the deltas' references), and decodes each returned frame from its own turned view. This
times one ``imagine`` call (median over ``--repeats``, calls interleaved so the machine's drift hits
both alike) of the same weights with the option on and off, for twist candidates that turn (on) and for
robot candidates, whose views do not turn (on: the encoder is skipped), at each batch size, with every
frame decoded and with only the last (what a planner asks for). The predictions of the "off" runs are
not meaningful for a model trained with the option; only their cost is compared. Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default", help="'default' or a checkpoint directory")
    p.add_argument("--batches", default="1,8,32", help="candidates per call")
    p.add_argument("--horizon", type=int, default=10, help="frames per candidate")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per point (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=Path("bench/results/rotation_reference_cost.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from astra_ros.model import WorldModel

    torch.set_num_threads(args.threads)
    models = {flag: WorldModel.from_pretrained(args.checkpoint, config_overrides={"rotation_reference": flag})
              for flag in (True, False)}
    rng = np.random.default_rng(0)
    height, width = models[True].resolution
    frames = rng.integers(0, 256, size=(4, height, width, 3), dtype=np.uint8)
    rows = []
    for modality in ("twist", "robot"):
        dim = models[True].action_dim(modality)
        history = rng.normal(0, 0.05, size=(4, dim)).astype(np.float32)
        for batch in [int(b) for b in args.batches.split(",")]:
            actions = rng.normal(0, 0.05, size=(batch, args.horizon, dim)).astype(np.float32)
            for decode in ("all", "last"):
                times = {True: [], False: []}
                for _ in range(args.repeats):
                    for flag, model in models.items():
                        model.start(frames, history, modality=modality, seed=0)
                        start = time.perf_counter()
                        model.imagine(actions, seed=0, decode=decode, max_batch=batch)
                        times[flag].append(time.perf_counter() - start)
                on, off = statistics.median(times[True]), statistics.median(times[False])
                rows.append({"modality": modality, "batch": batch, "horizon": args.horizon, "decode": decode,
                             "on_s": round(on, 4), "off_s": round(off, 4), "ratio": round(on / off, 3)})
                print(f"{modality:6s} batch {batch:3d} decode {decode:4s}: on {on:.3f} s, off {off:.3f} s, "
                      f"{on / off:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": args.checkpoint, "threads": args.threads,
                                    "machine": platform.processor() or platform.machine(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
