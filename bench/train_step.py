"""Training-step time of the world model in fp32 and under bfloat16 autocast (recipe ``precision``).

    python bench/train_step.py --threads 2 --out bench/results/train_step.json

Times what one world-phase step of ``astra-train`` does after the clips are sampled: the codec
encodes the batch (fp32 in both settings, as the trainer does), then the flow-matching loss of
the transformer (forward under autocast for ``bf16``), its backward pass and an AdamW step.
Random clips and actions of the model's shapes; the two settings alternate in rounds so that
the machine's drifting speed hits both alike, and the median per setting is reported with the
ratio. Also records the machine's matmul throughput in fp32 and bf16 (2048^3), which says
whether bf16 has hardware behind it here (AMX / AVX512-BF16 on x86). Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from contextlib import nullcontext
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default", help="'default', a directory, or 'random:<preset>'")
    p.add_argument("--batch", type=int, default=8, help="clips per step (the default recipes use 8)")
    p.add_argument("--clip-frames", type=int, default=10, help="frames per clip (the default recipes use 10)")
    p.add_argument("--rounds", type=int, default=4, help="rounds of steps per setting, alternating")
    p.add_argument("--steps-per-round", type=int, default=3, help="timed steps per setting and round")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quick", action="store_true", help="2 rounds of 1 step (seconds)")
    p.add_argument("--out", type=Path, default=Path("bench/results/train_step.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps_per_round = 2, 1
    return args


def matmul_gflops(dtype, size: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * size**3 / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from astra_ros.model import load_world_model
    from astra_ros.model.flow import flow_matching_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from astra_ros.training.trainer import BF16_NORM_WARNING

    warnings.filterwarnings("ignore", message=BF16_NORM_WARNING)  # as astra-train does
    model = load_world_model(args.checkpoint)
    model.train()
    model.codec.eval()
    h, w = model.resolution
    encoder = model.transformer.action_encoder
    frames = torch.rand(args.batch, args.clip_frames, 3, h, w) * 2 - 1
    actions = torch.randn(args.batch, args.clip_frames, encoder.max_action_size) * 0.1
    modality_ids = torch.arange(args.batch) % len(model.modalities)
    optimizer = torch.optim.AdamW(model.transformer.parameters(), lr=1e-6)
    generator = torch.Generator().manual_seed(0)

    def step(precision: str) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            latents = model.codec.encode(frames)
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        with cast:
            loss = flow_matching_loss(model.transformer, latents, actions, modality_ids, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        return time.perf_counter() - start

    settings = ("fp32", "bf16")
    for precision in settings:  # warm-up: first steps allocate and pick kernels
        step(precision)
        step(precision)
    times: dict[str, list[float]] = {p: [] for p in settings}
    for _ in range(args.rounds):
        for precision in settings:
            times[precision] += [step(precision) for _ in range(args.steps_per_round)]
    median = {p: statistics.median(t) for p, t in times.items()}
    result = {
        "benchmark": "train_step",
        "checkpoint": args.checkpoint,
        "batch": args.batch,
        "clip_frames": args.clip_frames,
        "threads": args.threads,
        "step_s_median": median,
        "step_s_all": times,
        "bf16_speedup": median["fp32"] / median["bf16"],
        "clips_per_s": {p: args.batch / s for p, s in median.items()},
        "matmul_gflops": {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)},
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    for p in settings:
        print(f"{p}: {median[p]:.3f} s per step (median of {len(times[p])}), {args.batch / median[p]:.1f} clips/s")
    print(f"bf16 speed-up: {result['bf16_speedup']:.2f}x; matmul {result['matmul_gflops']['fp32']:.0f} GFLOP/s fp32, "
          f"{result['matmul_gflops']['bf16']:.0f} GFLOP/s bf16")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
