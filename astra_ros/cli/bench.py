"""``astra-bench``: inference figures of a checkpoint on this machine, in one JSON.

    astra-bench --checkpoint default --out bench/results/astra_bench.json [--quick]

Measured (not asserted): per-chunk streaming latency with the KV cache vs recomputing the
history for stream lengths 1..64 chunks; predicted frames per second of a live stream;
imagination candidate-frames per second against the batch size; resident memory over a long
stream (10,000 frames); and the transformer's achieved FLOP/s next to this machine's own float32
matmul peak measured in the same run, so the ratio survives a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from astra_ros.cli.arguments import check_output_file, non_negative_int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="astra-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="default", help="'default', a directory, or random:<preset>")
    p.add_argument("--out", type=Path, default=Path("out/astra_bench.json"),
                   help="JSON file of the figures (the README's are bench/results/astra_bench.json)")
    p.add_argument("--quick", action="store_true", help="small sweep that finishes in under a minute")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    check_output_file(p, args.out, (".json",))
    return args


def _inputs(wm, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    h, w = wm.resolution
    modality = "twist" if "twist" in wm.modalities else wm.modalities[0]
    video = rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8)
    actions = (rng.normal(size=(frames, wm.action_dim(modality))) * 0.05).astype(np.float32)
    return video, actions, modality


def time_step(wm, chunks: int, seed: int) -> float:
    """Seconds for one ``step`` (one chunk) after observing ``chunks`` chunks."""
    n = wm.frames_per_chunk
    video, actions, modality = _inputs(wm, chunks * n)
    wm.start(video, actions, modality=modality, seed=seed)
    t0 = time.perf_counter()
    wm.step(actions[:n], seed=seed)
    return time.perf_counter() - t0


def stream_latency(cached, dense, lengths: list[int], repeats: int, dense_max: int) -> dict:
    """Median per-chunk latency at each stream length; repeats sweep all lengths in turn."""
    kv = {n: [] for n in lengths}
    rec = {n: [] for n in lengths if n <= dense_max}
    for r in range(repeats):
        for n in lengths:
            kv[n].append(time_step(cached, n, r))
            if n in rec:
                rec[n].append(time_step(dense, n, r))
    return {
        "chunks": lengths,
        "kv_latency_s": [statistics.median(kv[n]) for n in lengths],
        "recompute_latency_s": [statistics.median(rec[n]) if n in rec else None for n in lengths],
    }


def predicted_fps(wm, chunks: int) -> float:
    """Frames per second of an open-loop stream (predict, decode, append), after a short history."""
    n = wm.frames_per_chunk
    video, actions, modality = _inputs(wm, 2 * n)
    wm.start(video, actions, modality=modality, seed=0)
    t0 = time.perf_counter()
    for _ in range(chunks):
        wm.step(actions[:n])
    return chunks * n / (time.perf_counter() - t0)


def imagine_throughput(wm, batches: list[int], horizon: int) -> list[float]:
    """Candidate-frames per second of ``imagine`` for each batch size."""
    video, actions, modality = _inputs(wm, 2 * wm.frames_per_chunk)
    wm.start(video, actions, modality=modality, seed=0)
    rates = []
    for b in batches:
        cand = (np.random.default_rng(b).normal(size=(b, horizon, wm.action_dim(modality))) * 0.05).astype(np.float32)
        t0 = time.perf_counter()
        wm.imagine(cand, seed=0)
        rates.append(b * horizon / (time.perf_counter() - t0))
    return rates


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 2**20


def long_stream_memory(wm, frames: int, samples: int = 20) -> dict:
    """Resident memory sampled while observing ``frames`` frames chunk by chunk (the node's path)."""
    n = wm.frames_per_chunk
    video, actions, modality = _inputs(wm, n)
    wm.start(video, actions, modality=modality, seed=0)
    chunks = frames // n
    every = max(1, chunks // samples)
    rss = []
    t0 = time.perf_counter()
    for c in range(chunks):
        wm.observe(video, actions)
        if c % every == 0 or c == chunks - 1:
            rss.append({"frames": (c + 1) * n, "rss_mb": round(_rss_mb(), 1)})
    return {"frames": chunks * n, "samples": rss, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": max(s["rss_mb"] for s in rss),
            "growth_mb": rss[-1]["rss_mb"] - rss[len(rss) // 2]["rss_mb"]}


def matmul_peak_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """This machine's float32 matmul rate [GFLOP/s] with the current torch threads."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - t0) / 1e9


def transformer_gflops(wm, repeats: int = 3) -> dict:
    """FLOPs of one guided denoising step of a chunk (counted by torch) over its measured time."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg = wm.config
    video, actions, modality = _inputs(wm, cfg.max_history_chunks * wm.frames_per_chunk)
    wm.start(video, actions, modality=modality, seed=0)
    b = 2  # action and action-free passes
    h, w = cfg.latent_size
    x = torch.randn(b, cfg.codec.latent_channels, cfg.chunk_frames, h, w)
    t = torch.full((b, cfg.chunk_frames), 0.5)
    pos = torch.arange(wm.stream.next_frame, wm.stream.next_frame + cfg.chunk_frames)
    feats = torch.zeros(b, cfg.chunk_frames, cfg.action_dim)
    past = wm.stream.cache.materialize(b)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            wm.transformer(x, t, pos, feats, past_kv=past)
        flops = counter.get_total_flops()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            wm.transformer(x, t, pos, feats, past_kv=past)
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"flops_per_step": int(flops), "seconds_per_step": seconds, "gflops": flops / seconds / 1e9}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from astra_ros.model import load_world_model

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        cached, dense = (load_world_model(args.checkpoint, use_cache=True),
                         load_world_model(args.checkpoint, use_cache=False))
    except ValueError as err:
        print(f"astra-bench: cannot load checkpoint: {err}", file=sys.stderr)
        return 2
    dense.load_state_dict(cached.state_dict())
    if args.quick:
        lengths, repeats, dense_max, fps_chunks = [1, 2, 8, 16], 1, 8, 4
        batches, horizon, long_frames = [1, 2, 4], 4, 200
    else:
        lengths, repeats, dense_max, fps_chunks = [1, 2, 4, 8, 16, 32, 48, 64], 3, 32, 16
        batches, horizon, long_frames = [1, 2, 4, 8, 16, 32, 64], 8, 10_000
    time_step(cached, 1, 0)  # warm-up
    result: dict = {"checkpoint": args.checkpoint, "quick": args.quick, "torch_threads": torch.get_num_threads(),
                    "machine": platform.processor() or platform.machine()}
    result["stream_chunks"] = stream_latency(cached, dense, lengths, repeats, dense_max)
    result["predicted_fps"] = predicted_fps(cached, fps_chunks)
    result["batch"] = {"sizes": batches, "horizon": horizon,
                       "imagine_frames_per_s": imagine_throughput(cached, batches, horizon)}
    memory = long_stream_memory(cached, long_frames)
    result["long_stream"] = memory
    result["peak_rss_mb"] = memory["peak_rss_mb"]
    result["matmul_peak_gflops"] = matmul_peak_gflops()
    tf = transformer_gflops(cached)
    result["transformer_gflops"] = tf["gflops"]
    result["transformer"] = tf
    result["transformer_vs_matmul_peak"] = tf["gflops"] / result["matmul_peak_gflops"]
    result["wall_time_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["stream_chunks"]
    print(f"{'chunks':>6} {'kv cache [s]':>13} {'recompute [s]':>14}")
    for n, a, b in zip(s["chunks"], s["kv_latency_s"], s["recompute_latency_s"]):
        print(f"{n:>6} {a:>13.3f} {('%.3f' % b) if b is not None else '-':>14}")
    print(f"predicted frames/s: {result['predicted_fps']:.1f}")
    print("imagine frames/s by batch: " + ", ".join(
        f"{b}: {r:.1f}" for b, r in zip(batches, result["batch"]["imagine_frames_per_s"])))
    print(f"peak RSS over {memory['frames']} frames: {memory['peak_rss_mb']:.0f} MB "
          f"(growth over the second half {memory['growth_mb']:+.1f} MB)")
    print(f"transformer {tf['gflops']:.1f} GFLOP/s vs matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s "
          f"({100 * result['transformer_vs_matmul_peak']:.0f} %)")
    print(f"wrote {args.out} in {result['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
