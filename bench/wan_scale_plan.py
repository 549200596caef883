"""The compute plan of the ``wan2.1-1.3b`` preset, counted: FLOPs and memory per streamed chunk at
832x480, per training clip, and the latency they imply on H100s (docs/SCALE.md quotes this JSON).

    nice -n 10 python bench/wan_scale_plan.py --out bench/results/wan_scale_plan.json

* FLOPs are counted analytically (matmuls and attention, 2 per multiply-add) and the formula is checked
  against torch's FlopCounterMode on the real model at full width (1 block, run on the meta device,
  so nothing is computed). The VAE is counted by FlopCounterMode on the full AutoencoderKLWan at
  832x480, also on the meta device.
* Memory: weights, KV cache per chunk of history, the largest activations of a streamed forward, and
  per-GPU training memory (AdamW, DDP) with and without per-block activation checkpointing.
* Latency = FLOPs / (peak x efficiency). Peak: H100 SXM dense bf16 989 TFLOP/s (NVIDIA's datasheet).
  Efficiency: measured here as the fraction of this CPU's own matmul peak that one full-width Astra
  block reaches on a real chunk shape (``--measure``), and the 0.4 that large bf16 transformer jobs
  commonly reach on H100s; both are reported, neither is a GPU measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM5, dense (no sparsity)
H100_MEMORY_GB = 80.0
ASSUMED_GPU_EFFICIENCY = 0.4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-chunks", type=int, default=5, help="chunks per training clip (5 x 4 = 20 latent frames)")
    p.add_argument("--measure", action="store_true", help="time one full-width block on this CPU (about a minute)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/wan_scale_plan.json"))
    return p.parse_args(argv)


def linear_flops_per_token(cfg) -> float:
    """Matmul FLOPs per token per block: q, k, v, out (4 d^2), ACT-Adapter (d^2), FFN (2 d F), actions (A d)."""
    d, f = cfg.inner_dim, cfg.ffn_dim
    return 2.0 * (5 * d * d + 2 * d * f + cfg.action_dim * d)


def forward_flops(cfg, queries: int, keys: int, attention_pairs: float | None = None) -> dict[str, float]:
    """One transformer forward: ``queries`` tokens attending to ``keys`` keys (``attention_pairs``:
    query-key pairs actually computed, default queries x keys)."""
    d, layers = cfg.inner_dim, cfg.num_layers
    pairs = queries * keys if attention_pairs is None else attention_pairs
    patch = 2.0 * queries * d * cfg.codec.latent_channels * 4 * 2  # patch embedding and output projection
    linear = layers * queries * linear_flops_per_token(cfg) + patch
    attention = layers * 4.0 * pairs * d  # QK^T and AV
    return {"linear": linear, "attention": attention, "total": linear + attention}


def check_formula(cfg) -> dict[str, float]:
    """FlopCounterMode on a 1-block full-width model (meta device) vs the formula, queries with a past."""
    import dataclasses

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from astra_ros.model.transformer import AstraTransformer

    small = dataclasses.replace(cfg, num_layers=1)
    rows, cols = 6, 10
    frames, past = 2, 5 * rows * cols // 4  # 2 query frames, a past of 75 tokens
    with torch.device("meta"):
        model = AstraTransformer(small)
        x = torch.zeros(1, 16, frames, 2 * rows, 2 * cols)
        kv = [(torch.zeros(1, cfg.num_attention_heads, past, cfg.attention_head_dim),) * 2]
        feats = torch.zeros(1, frames, cfg.action_dim)
        flow_t = torch.zeros(1, frames)
    with FlopCounterMode(display=False) as counter:  # frame positions stay on the CPU (rotary angles)
        model(x, flow_t, torch.arange(frames), feats, past_kv=kv)
    q = frames * rows * cols
    counted = counter.get_total_flops()
    formula = forward_flops(small, q, q + past)["total"]
    return {"counted": counted, "formula": formula, "ratio": counted / formula}


def vae_flops() -> dict[str, float]:
    """FLOPs of Wan2.1's VAE at 832x480 (meta device): encoding the first frame and a group of 4, decoding one latent."""
    import torch
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    from astra_ros.model.wan_vae import WanStreamDecoder, WanStreamEncoder

    with torch.device("meta"):
        vae = AutoencoderKLWan().eval()
        enc, dec = WanStreamEncoder(vae), WanStreamDecoder(vae)
        out = {}
        with torch.no_grad():
            for name, fn in (("encode_first_frame", lambda: enc.push(torch.zeros(1, 3, 1, 480, 832))),
                             ("encode_group_of_4_frames", lambda: enc.push(torch.zeros(1, 3, 4, 480, 832))),
                             ("decode_first_latent", lambda: dec.push(torch.zeros(1, 16, 1, 60, 104))),
                             ("decode_latent_to_4_frames", lambda: dec.push(torch.zeros(1, 16, 1, 60, 104)))):
                with FlopCounterMode(display=False) as counter:
                    fn()
                out[name] = counter.get_total_flops()
    return out


def measure_block_efficiency(cfg, threads: int) -> dict[str, float]:
    """Achieved FLOP/s of one full-width block on a real streamed shape (1 latent frame of 1560 tokens
    against 4 frames of cached keys) as a fraction of this CPU's fp32 matmul peak (4096^3); best of 5
    runs, with the range over them (the machine is shared)."""
    import dataclasses

    import torch

    from astra_ros.model.transformer import AstraTransformer

    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    start = time.perf_counter()
    for _ in range(3):
        a @ b
    peak = 3 * 2 * 4096**3 / (time.perf_counter() - start)
    small = dataclasses.replace(cfg, num_layers=1)
    model = AstraTransformer(small).eval()
    n = cfg.tokens_per_frame
    x = torch.randn(1, 16, 1, *cfg.latent_size)
    kv = [(torch.randn(1, cfg.num_attention_heads, 4 * n, cfg.attention_head_dim),) * 2]
    feats = torch.zeros(1, 1, cfg.action_dim)
    with torch.no_grad():
        model(x, torch.full((1, 1), 0.5), torch.tensor([4]), feats, past_kv=kv)  # warm-up
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model(x, torch.full((1, 1), 0.5), torch.tensor([4]), feats, past_kv=kv)
            times.append(time.perf_counter() - start)
    flops = forward_flops(small, n, 5 * n)["total"]
    best = min(times)
    return {"matmul_peak_gflops": peak / 1e9, "block_gflops": flops / best / 1e9, "block_s": best,
            "block_s_all": times, "efficiency": flops / best / peak,
            "efficiency_range": [flops / max(times) / peak, flops / best / peak], "threads": threads}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from astra_ros.model import preset
    from astra_ros.model.transformer import AstraTransformer

    cfg = preset("wan2.1-1.3b")
    with torch.device("meta"):
        params = sum(p.numel() for p in AstraTransformer(cfg).parameters())
    d, layers = cfg.inner_dim, cfg.num_layers
    n = cfg.tokens_per_frame
    chunk = n * cfg.chunk_frames
    window = chunk * (cfg.max_history_chunks + 1)
    passes = 2 if cfg.guidance_scale != 1.0 else 1
    step = forward_flops(cfg, chunk, window)
    forwards = cfg.denoise_steps * passes + 1  # + the pass that stores the finished chunk's keys/values
    bf16 = 2
    kv_per_chunk = 2 * layers * chunk * d * bf16
    vae = vae_flops()
    decode_chunk = vae["decode_latent_to_4_frames"] * cfg.chunk_frames
    encode_chunk = vae["encode_group_of_4_frames"] * cfg.chunk_frames
    inference = {
        "tokens_per_frame": n, "chunk_tokens": chunk, "attention_window_tokens": window,
        "pixel_frames_per_chunk": 4 * cfg.chunk_frames, "seconds_of_video_per_chunk_at_16fps": 4 * cfg.chunk_frames / 16,
        "forward_tflop": {k: v / 1e12 for k, v in step.items()},
        "forwards_per_chunk": forwards,
        "transformer_tflop_per_chunk": forwards * step["total"] / 1e12,
        "vae_decode_tflop_per_chunk": decode_chunk / 1e12, "vae_encode_tflop_per_chunk": encode_chunk / 1e12,
        "weights_gb_bf16": params * bf16 / 1e9,
        "kv_cache_gb_per_history_chunk_bf16": kv_per_chunk / 1e9,
        "kv_cache_gb_full_window_bf16": kv_per_chunk * cfg.max_history_chunks / 1e9,
        # one block's largest live tensors in a forward (bf16): FFN hidden (pre and post GELU), q/k/v/out,
        # the window's keys/values joined for attention, per guidance pass (both passes batched)
        "activation_gb_peak_bf16": passes * (2 * chunk * cfg.ffn_dim + 4 * chunk * d + 2 * window * d) * bf16 / 1e9,
        "attention_scores_gb_if_materialised_bf16": passes * cfg.num_attention_heads * chunk * window * bf16 / 1e9,
    }
    total_chunk = inference["transformer_tflop_per_chunk"] + inference["vae_decode_tflop_per_chunk"]
    # Training: a clip of K chunks = K-1 noised history chunks + K target chunks in one block-causal pass
    k = args.train_chunks
    tokens = (2 * k - 1) * chunk
    pairs_sparse = k * k * chunk * chunk  # history c sees c+1 history chunks, target j sees j history + itself
    fwd_sparse = forward_flops(cfg, tokens, tokens, pairs_sparse)
    fwd_dense = forward_flops(cfg, tokens, tokens)  # SDPA with a boolean mask computes every pair
    per_block_acts = tokens * (10 * d + 2 * cfg.ffn_dim) * bf16
    states = params * 16  # fp32 weights, grads, AdamW moments
    training = {
        "clip_latent_frames": k * cfg.chunk_frames, "clip_pixel_frames": 1 + 4 * (k * cfg.chunk_frames - 1),
        "sequence_tokens": tokens,
        "forward_tflop_block_sparse": fwd_sparse["total"] / 1e12, "forward_tflop_dense_mask": fwd_dense["total"] / 1e12,
        "step_tflop_per_clip_sparse": 3 * fwd_sparse["total"] / 1e12,
        "step_tflop_per_clip_sparse_with_checkpointing": 4 * fwd_sparse["total"] / 1e12,
        "step_tflop_per_clip_dense_mask_with_checkpointing": 4 * fwd_dense["total"] / 1e12,
        "weights_grads_adam_gb": states / 1e9,
        "activations_gb_per_clip_no_checkpointing": layers * per_block_acts / 1e9,
        "activations_gb_per_clip_block_checkpointing": (layers * tokens * d * bf16 + per_block_acts) / 1e9,
    }
    training["gpu_gb_per_clip_with_checkpointing"] = (
        training["weights_grads_adam_gb"] + training["activations_gb_per_clip_block_checkpointing"])
    grads_gb = params * 4 / 1e9
    measured = measure_block_efficiency(cfg, args.threads) if args.measure else None
    efficiencies = [("assumed_0.4", ASSUMED_GPU_EFFICIENCY)]
    if measured:
        efficiencies.append((f"cpu_measured_{measured['efficiency']:.2f}", measured["efficiency"]))
    latency = {}
    for label, eff in efficiencies:
        rate = H100_BF16_DENSE_TFLOPS * eff
        variants = {}
        for steps in (50, 16, 8, 4):
            for guided in (True, False):
                tflop = (steps * (2 if guided else 1) + 1) * step["total"] / 1e12 + inference["vae_decode_tflop_per_chunk"]
                variants[f"{steps}_steps_{'guided' if guided else 'unguided'}"] = {
                    "chunk_s": tflop / rate, "realtime_factor": inference["seconds_of_video_per_chunk_at_16fps"] / (tflop / rate)}
        latency[label] = {
            "sampling_variants_1xH100": variants,
            "chunk_s_1xH100": total_chunk / rate,
            "forward_s_1xH100": step["total"] / 1e12 / rate,
            "realtime_factor": inference["seconds_of_video_per_chunk_at_16fps"] / (total_chunk / rate),
            "train_step_s_per_clip_1xH100_checkpointing": training["step_tflop_per_clip_sparse_with_checkpointing"] / rate,
            "train_clips_per_s_8xH100_ddp": 8 * rate / training["step_tflop_per_clip_sparse_with_checkpointing"],
            "train_clips_per_s_8xH100_ddp_dense_mask": 8 * rate / training["step_tflop_per_clip_dense_mask_with_checkpointing"],
        }
    result = {"benchmark": "wan_scale_plan", "preset": "wan2.1-1.3b", "transformer_params": params,
              "config": {k: v for k, v in cfg.to_dict().items() if k in (
                  "resolution", "chunk_frames", "max_history_chunks", "denoise_steps", "guidance_scale", "num_layers")},
              "formula_check": check_formula(cfg), "vae_tflop": {k: v / 1e12 for k, v in vae.items()},
              "inference_per_chunk": inference, "training": training,
              "ddp_allreduce_gb_per_step_fp32": grads_gb,
              "h100": {"bf16_dense_tflops": H100_BF16_DENSE_TFLOPS, "memory_gb": H100_MEMORY_GB},
              "latency": latency}
    if measured:
        result["cpu_block_efficiency"] = measured
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
