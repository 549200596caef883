"""``astra-bench``: inference figures of a checkpoint on this machine, in one JSON.

    astra-bench --checkpoint default --out bench/results/astra_bench.json [--quick]

Measured (not asserted), in one run at one thread count:

* the streaming step (one chunk after a full history: what ``WorldModel.step`` runs each chunk):
  ``step_seconds``, ``step_flops`` (analytic, attention included: :mod:`astra_ros.model.flops` over
  the calls the step made) with torch's own count beside it, the stage breakdown (codec encode,
  transformer, codec decode, anchor decoder, glue), and ``step_vs_matmul_peak``: the step's FLOP/s
  over this machine's float32 matmul rate measured right around each step, so the ratio survives
  a noisy machine; the same for the architecture at ``--scaled-resolution`` pixels, random weights;
* ``predicted_fps`` (and ``predicted_fps_<N>px``): frames per second of an open-loop stream;
* per-chunk latency with the KV cache vs recomputing the history for stream lengths 1..64 chunks;
* imagination candidate-frames per second against the batch size;
* ``peak_rss_mb``: the run's true peak (VmHWM), and a long stream's (10,000 frames) in its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import subprocess
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from astra_ros.cli.arguments import check_output_file, non_negative_int, positive_int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="astra-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="default", help="'default', a directory, or random:<preset>")
    p.add_argument("--out", type=Path, default=Path("out/astra_bench.json"),
                   help="JSON file of the figures (the README's are bench/results/astra_bench_quick.json)")
    p.add_argument("--quick", action="store_true", help="small sweep that finishes in under a minute")
    p.add_argument("--scaled-resolution", type=positive_int, default=128,
                   help="pixels (square) of the checkpoint's architecture, random weights, for predicted_fps_<N>px")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--compile", action="store_true",
                   help="compile the codec and anchor decoder of both step models first (torch.compile, opt-in: "
                        "minutes the first time, seconds once inductor's disk cache has them; docs/SPEED.md)")
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


def time_step(wm, chunks: int, seed: int, during=None) -> float:
    """Seconds for one ``step`` (one chunk) after observing ``chunks`` chunks; ``during``: a context
    manager entered around the step alone (a recorder)."""
    n = wm.frames_per_chunk
    video, actions, modality = _inputs(wm, chunks * n)
    wm.start(video, actions, modality=modality, seed=seed)
    with during if during is not None else contextlib.nullcontext():
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


def vm_hwm_mb() -> float:
    """This process's true peak resident memory so far [MB] (the kernel's VmHWM, not a sample)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


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
            "peak_rss_mb": round(vm_hwm_mb(), 1),
            "growth_mb": rss[-1]["rss_mb"] - rss[len(rss) // 2]["rss_mb"]}


def _long_stream_child(checkpoint: str, frames: int, threads: int) -> None:
    """Entry of the child process that measures a long stream alone (its VmHWM is that phase's)."""
    import torch

    from astra_ros.model import load_world_model

    if threads:
        torch.set_num_threads(threads)
    print(json.dumps(long_stream_memory(load_world_model(checkpoint), frames)))


def long_stream_in_child(checkpoint: str, frames: int, threads: int) -> dict:
    """:func:`long_stream_memory` in a fresh process: its peak is the model plus that stream, nothing else."""
    code = (f"from astra_ros.cli.bench import _long_stream_child; "
            f"_long_stream_child({checkpoint!r}, {int(frames)}, {int(threads)})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"long-stream child failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def at_resolution(wm, size: int):
    """The same architecture at ``size`` x ``size`` pixels with random weights (a fixed seed)."""
    import torch

    from astra_ros.model import WorldModel
    from astra_ros.model.config import AstraConfig

    config = AstraConfig.from_dict({**wm.config.to_dict(), "resolution": [size, size]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return WorldModel(config, use_cache=True).eval()


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def step_figures(models: dict[str, object], repeats: int, peak_seconds: float, fps_chunks: int) -> dict:
    """Per model: one streaming ``step`` (one chunk after a 4-chunk history, the step the live stream
    runs) timed by stage, its analytic FLOPs and an open-loop stream's frames/s; and this machine's
    matmul peak, measured right before and after every step so each ratio compares one moment's figures."""
    from astra_ros.model.step_profile import STAGES, StepRecorder

    out: dict = {name: {"step_s": [], "fps": [], "stages_s": {k: 0.0 for k in (*STAGES, "glue")}}
                 for name in models}
    peaks = []
    recorders = {name: StepRecorder(wm) for name, wm in models.items()}
    for name, wm in models.items():  # warm-up (first calls allocate)
        time_step(wm, wm.config.max_history_chunks, 0)
    for r in range(repeats):
        for name, wm in models.items():
            rec = recorders[name]
            rec.reset()
            before = matmul_peak_gflops(seconds=peak_seconds / 2)
            seconds = time_step(wm, wm.config.max_history_chunks, r, during=rec.recording())
            peaks.append((before + matmul_peak_gflops(seconds=peak_seconds / 2)) / 2)  # right around the step
            fig = out[name]
            fig["step_s"].append(seconds)
            for k in STAGES:
                fig["stages_s"][k] += rec.seconds.get(k, 0.0) / repeats
            fig["stages_s"]["glue"] += (seconds - sum(rec.seconds.values())) / repeats
            fig["flops"] = rec.flops()
            fig["calls"] = {"encoded_frames": rec.encoded, "encoder_calls": rec.encoder_calls,
                            "decoded_frames": rec.decoded, "decoder_calls": rec.decoder_calls,
                            "anchor_decoded_frames": rec.anchored,
                            "transformer_passes": [list(p) for p in rec.passes]}
            fig["ratio"] = fig.get("ratio", []) + [
                sum(f.total for f in fig["flops"].values()) / seconds / 1e9 / peaks[-1]]
            fig["fps"].append(predicted_fps(wm, fps_chunks))
    result = {"matmul_peak_gflops": _spread(peaks), "models": {}}
    for name, fig in out.items():
        flops = fig["flops"]
        total = sum(f.total for f in flops.values())
        step_s = statistics.median(fig["step_s"])
        result["models"][name] = {
            "step_seconds": _spread(fig["step_s"]),
            "step_flops": total,
            "step_attention_flops": sum(f.attention for f in flops.values()),
            "step_flops_by_stage": {k: f.total for k, f in flops.items()},
            "step_gflops_per_s": total / step_s / 1e9,
            "step_vs_matmul_peak": _spread(fig["ratio"]),
            "stage_seconds": fig["stages_s"],
            "stage_fraction": {k: v / sum(fig["stages_s"].values()) for k, v in fig["stages_s"].items()},
            "calls": fig["calls"],
            # Whether this machine, at these threads, runs the step's codec work batched (codec_batching.py).
            "batched_codec_calls": models[name].codec_calls_batched,
            "predicted_fps": _spread(fig["fps"]),
        }
    return result


def counted_step_flops(wm) -> int:
    """``torch.utils.flop_counter``'s count of one step (it counts no attention on the CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    n = wm.frames_per_chunk
    video, actions, modality = _inputs(wm, wm.config.max_history_chunks * n)
    wm.start(video, actions, modality=modality, seed=0)
    with FlopCounterMode(display=False) as counter:
        wm.step(actions[:n], seed=0)
    return int(counter.get_total_flops())


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
        batches, horizon, long_frames, step_repeats = [1, 2, 4], 4, 200, 5
    else:
        lengths, repeats, dense_max, fps_chunks = [1, 2, 4, 8, 16, 32, 48, 64], 3, 32, 16
        batches, horizon, long_frames, step_repeats = [1, 2, 4, 8, 16, 32, 64], 8, 10_000, 9
    result: dict = {"checkpoint": args.checkpoint, "quick": args.quick, "torch_threads": torch.get_num_threads(),
                    "machine": platform.processor() or platform.machine()}
    counted = counted_step_flops(cached) if cached.config.codec.kind == "autoencoder_kl" else None  # eager ops
    try:
        scaled = at_resolution(cached, args.scaled_resolution)
    except ValueError as err:  # ConfigError: e.g. not a multiple of the codec factor x patch
        print(f"astra-bench: --scaled-resolution {args.scaled_resolution}: {err}", file=sys.stderr)
        return 2
    if args.compile:
        from astra_ros.model.compiled import CompileFailed, compile_convolutions
        try:
            result["compiled"] = {name: dataclasses.asdict(compile_convolutions(model))
                                  for name, model in (("checkpoint", cached), ("scaled", scaled))}
            result["compiled"]["applies_to"] = ("the step figures, predicted_fps and imagine_frames_per_s; "
                                                "stream_chunks' recompute column and long_stream run eagerly")
        except CompileFailed as err:
            print(f"astra-bench: --compile: {err}", file=sys.stderr)
            return 2
    time_step(cached, 1, 0)  # warm-up
    # 1. The step, its FLOPs, its stages and the matmul peak, interleaved in one loop.
    steps = step_figures({"checkpoint": cached, "scaled": scaled}, step_repeats,
                         peak_seconds=0.2 if args.quick else 0.4,
                         fps_chunks=max(2, fps_chunks // 2))
    main_fig, big = steps["models"]["checkpoint"], steps["models"]["scaled"]
    result.update({
        "step_flops": main_fig["step_flops"],
        "step_attention_flops": main_fig["step_attention_flops"],
        "step_seconds": main_fig["step_seconds"]["median"],
        "matmul_peak_gflops": steps["matmul_peak_gflops"]["median"],
        "step_vs_matmul_peak": main_fig["step_vs_matmul_peak"]["median"],
        "step_stage_fraction": main_fig["stage_fraction"],
        "predicted_fps": main_fig["predicted_fps"]["median"],
        f"predicted_fps_{args.scaled_resolution}px": big["predicted_fps"]["median"],
        "step": steps,
    })
    if counted is not None:
        result["step_flops_check"] = {
            "flop_counter": counted, "analytic_without_attention": main_fig["step_flops"] - main_fig["step_attention_flops"],
            "note": "flop_counter counts no CPU flash attention; the rest (action encoder, view rotations) "
                    "is outside the analytic parts"}
    # 2. Stream length, batch, long-stream memory (its own process: its VmHWM is that phase alone).
    result["stream_chunks"] = stream_latency(cached, dense, lengths, repeats, dense_max)
    result["batch"] = {"sizes": batches, "horizon": horizon,
                       "imagine_frames_per_s": imagine_throughput(cached, batches, horizon)}
    memory = long_stream_in_child(args.checkpoint, long_frames, torch.get_num_threads())
    result["long_stream"] = memory
    result["peak_rss_mb"] = round(vm_hwm_mb(), 1)  # this whole run's true peak (both models, every phase)
    result["wall_time_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["stream_chunks"]
    print(f"{'chunks':>6} {'kv cache [s]':>13} {'recompute [s]':>14}")
    for n, a, b in zip(s["chunks"], s["kv_latency_s"], s["recompute_latency_s"]):
        print(f"{n:>6} {a:>13.3f} {('%.3f' % b) if b is not None else '-':>14}")
    size = args.scaled_resolution
    print(f"predicted frames/s: {result['predicted_fps']:.1f}; at {size}x{size} (random weights): "
          f"{result[f'predicted_fps_{size}px']:.1f}")
    print("imagine frames/s by batch: " + ", ".join(
        f"{b}: {r:.1f}" for b, r in zip(batches, result["batch"]["imagine_frames_per_s"])))
    print(f"peak RSS: {result['peak_rss_mb']:.0f} MB this run; {memory['peak_rss_mb']:.0f} MB streaming "
          f"{memory['frames']} frames alone (growth over the second half {memory['growth_mb']:+.1f} MB)")
    spread = steps["models"]["checkpoint"]["step_vs_matmul_peak"]
    print(f"step: {result['step_seconds'] * 1e3:.1f} ms, {result['step_flops'] / 1e9:.2f} GFLOP "
          f"(attention {result['step_attention_flops'] / 1e9:.2f}); matmul peak {result['matmul_peak_gflops']:.1f} "
          f"GFLOP/s; step_vs_matmul_peak {result['step_vs_matmul_peak']:.2f} "
          f"[{spread['min']:.2f}, {spread['max']:.2f}] over {spread['n']} repeats")
    print("step stages: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in result["step_stage_fraction"].items()))
    batched = main_fig["batched_codec_calls"]
    print(f"codec calls batched: {'yes' if batched else 'no'} at {torch.get_num_threads()} thread(s) "
          f"({'bit for bit as separate calls here' if batched else 'batches would round differently here'})")
    if args.compile:
        reports = result["compiled"]
        print("compiled (codec and anchor decoder): " + "; ".join(
            f"{name} in {reports[name]['seconds']:.0f} s, frames within {reports[name]['max_grey_level_difference']} "
            "grey level(s) of eager" for name in ("checkpoint", "scaled")))
    print(f"wrote {args.out} in {result['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
