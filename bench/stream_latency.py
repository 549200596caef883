"""Per-chunk streaming latency with the KV cache vs recomputing the whole history.

    python bench/stream_latency.py --out bench/results/stream_latency.json

For each stream length L (history chunks already observed), one ``WorldModel.step`` of one
chunk is timed (median over repeats; each repeat sweeps every length) (denoising with guidance + decoding + appending to the history), with the
cache and without it (every denoising step recomputes the history with the block-causal
mask). Both models have the same weights; the ratio is measured inside one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch
from tqdm import tqdm

from astra_ros.cli.bench import time_step
from astra_ros.model import WorldModel, load_world_model
from astra_ros.model.checkpoint import DEFAULT_CHECKPOINT


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default", help="'default', a directory, or 'random' (cpu_default preset)")
    p.add_argument("--lengths", default="1,2,4,8,12,16,24,32", help="stream lengths in chunks")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per length (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", type=Path, default=Path("bench/results/stream_latency.json"))
    return p.parse_args()


def load(checkpoint: str, use_cache: bool) -> WorldModel:
    if checkpoint == "random" or (checkpoint == "default" and not (DEFAULT_CHECKPOINT / "model.safetensors").exists()):
        return load_world_model("random:cpu_default", use_cache=use_cache)
    return load_world_model(checkpoint, use_cache=use_cache)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    cached, dense = load(args.checkpoint, True), load(args.checkpoint, False)
    dense.load_state_dict(cached.state_dict())
    time_step(cached, 1, 0)  # warm-up
    # Repeats sweep all lengths in turn, so a change in machine load hits every length alike.
    kv: dict[int, list[float]] = {n: [] for n in lengths}
    dense_t: dict[int, list[float]] = {n: [] for n in lengths}
    for r in tqdm(range(args.repeats), desc="repeats"):
        for length in lengths:
            kv[length].append(time_step(cached, length, r))
            dense_t[length].append(time_step(dense, length, r))
    rows = [{"chunks": n, "kv_latency_s": statistics.median(kv[n]),
             "recompute_latency_s": statistics.median(dense_t[n])} for n in lengths]
    cfg = cached.config
    result = {
        "stream_chunks": lengths,
        "kv_latency_s": [r["kv_latency_s"] for r in rows],
        "recompute_latency_s": [r["recompute_latency_s"] for r in rows],
        "max_history_chunks": cfg.max_history_chunks,
        "frames_per_chunk": cfg.frames_per_chunk,
        "denoise_steps": cfg.denoise_steps,
        "guidance_scale": cfg.guidance_scale,
        "checkpoint": args.checkpoint,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    by_len = {r["chunks"]: r for r in rows}
    if 2 in by_len and 32 in by_len:
        result["kv_ratio_32_vs_2"] = by_len[32]["kv_latency_s"] / by_len[2]["kv_latency_s"]
        result["speedup_at_32"] = by_len[32]["recompute_latency_s"] / by_len[32]["kv_latency_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'chunks':>6} {'kv cache [s]':>13} {'recompute [s]':>14} {'speed-up':>9}")
    for r in rows:
        print(f"{r['chunks']:>6} {r['kv_latency_s']:>13.3f} {r['recompute_latency_s']:>14.3f} "
              f"{r['recompute_latency_s'] / r['kv_latency_s']:>8.1f}x")
    for key in ("kv_ratio_32_vs_2", "speedup_at_32"):
        if key in result:
            print(f"{key}: {result[key]:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
