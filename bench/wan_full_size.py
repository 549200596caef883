"""Full-size check of the Wan2.1-1.3B import: a random 30-block ``WanTransformer3DModel`` and a full
``AutoencoderKLWan``, written with ``save_pretrained`` (sharded safetensors), loaded by
``load_wan_diffusers`` and compared with diffusers' own forward on the same inputs.

    nice -n 10 python bench/wan_full_size.py --out bench/results/wan_full_size.json

Memory: the diffusers copy (5.7 GB in fp32) computes its reference outputs and is freed before
ours is built, and ours loads tensor by tensor, so at most one copy of the weights is in memory
(peak RSS is recorded). The comparison runs at a small resolution (``--frames`` latent frames of
``--latent-size`` cells; the weights do not depend on it). The text cross-attention is given
Wan's 512 all-zero text tokens on the diffusers side and is folded into ``context_bias`` on ours;
the output with the fold removed is measured too. Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import shutil
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/work/data/scale/wan_full"),
                   help="folder for the random diffusers model (about 6 GB; removed afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the written diffusers folder")
    p.add_argument("--frames", type=int, default=3, help="latent frames of the test input")
    p.add_argument("--latent-size", type=int, nargs=2, default=(8, 12), help="latent rows, cols of the test input")
    p.add_argument("--vae-frames", type=int, default=5, help="pixel frames (1 + 4k) through the VAE")
    p.add_argument("--vae-size", type=int, nargs=2, default=(64, 96), help="pixel rows, cols through the VAE")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--atol", type=float, default=1e-5, help="tolerance on the largest absolute difference")
    p.add_argument("--out", type=Path, default=Path("bench/results/wan_full_size.json"))
    return p.parse_args(argv)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def compare(ours, ref) -> dict[str, float]:
    diff = (ours.double() - ref.double()).abs()
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "ref_mean_abs": float(ref.abs().mean()), "ref_max_abs": float(ref.abs().max())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from tqdm import tqdm

    from astra_ros.model.transformer import TIMESTEP_SCALE
    from astra_ros.model.wan_import import WAN21_1_3B_TRANSFORMER, load_wan_diffusers, safetensors_files
    from astra_ros.model.wan_vae import WanStreamDecoder, WanStreamEncoder

    torch.set_num_threads(args.threads)
    result: dict = {"benchmark": "wan_full_size", "torch": torch.__version__, "machine": platform.processor(),
                    "threads": args.threads}
    import diffusers

    result["diffusers"] = diffusers.__version__
    bar = tqdm(total=6, desc="wan_full_size")
    f, (h, w) = args.frames, args.latent_size
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, f, h, w, generator=gen)
    t = torch.tensor([0.7])
    per_token_t = torch.tensor([[0.05] + [0.6] * (f - 1)])  # a lightly noised history frame, then the chunk
    tokens_per_frame = (h // 2) * (w // 2)
    zeros = torch.zeros(1, 512, 4096)  # Wan's 512 text tokens, all zero
    video = torch.rand(1, 3, args.vae_frames, *args.vae_size, generator=gen) * 2 - 1

    # 1. diffusers: build at full size, write, compute the references, free
    start = time.perf_counter()
    torch.manual_seed(0)
    wan = WanTransformer3DModel(**WAN21_1_3B_TRANSFORMER).eval()
    vae = AutoencoderKLWan().eval()  # its defaults are Wan2.1's VAE (base 96, 16 channels, 8x / 4x)
    result["diffusers_transformer_params"] = sum(p.numel() for p in wan.parameters())
    result["diffusers_vae_params"] = sum(p.numel() for p in vae.parameters())
    result["build_s"] = time.perf_counter() - start
    bar.update()
    start = time.perf_counter()
    if args.work.exists():
        shutil.rmtree(args.work)
    wan.save_pretrained(args.work / "transformer", max_shard_size="2GB")
    vae.save_pretrained(args.work / "vae")
    result["save_s"] = time.perf_counter() - start
    result["transformer_shards"] = len(safetensors_files(args.work / "transformer"))
    result["folder_gb"] = sum(p.stat().st_size for p in args.work.rglob("*") if p.is_file()) / 1e9
    bar.update()
    start = time.perf_counter()
    with torch.no_grad():
        ref = wan(x, t * TIMESTEP_SCALE, zeros).sample
        ref_tok = wan(x, (per_token_t * TIMESTEP_SCALE).repeat_interleave(tokens_per_frame, dim=1), zeros).sample
        ref_z = vae.encode(video).latent_dist.mode()
        ref_video = vae.decode(ref_z).sample
    result["diffusers_forward_s"] = time.perf_counter() - start
    del wan, vae
    gc.collect()
    result["peak_rss_gb_after_diffusers"] = peak_rss_gb()
    bar.update()

    # 2. ours: load the folder tensor by tensor
    start = time.perf_counter()
    model, report = load_wan_diffusers(args.work)
    result["load_s"] = time.perf_counter() - start
    result["report"] = {"summary": report.summary(), "loaded": len(report.loaded), "folded": len(report.folded),
                        "fresh_astra_tensors": len(report.fresh), "vae_loaded": len(report.vae_loaded),
                        "fresh_examples": report.fresh[:4]}
    result["astra_transformer_params"] = sum(p.numel() for p in model.transformer.parameters())
    result["config"] = {k: v for k, v in model.config.to_dict().items() if k in (
        "resolution", "num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "chunk_frames",
        "max_history_chunks", "context_bias", "sample_shift", "denoise_steps")}
    bar.update()

    # 3. compare
    start = time.perf_counter()
    with torch.no_grad():
        out, _ = model.transformer(x, t[:, None].expand(1, f).contiguous(), torch.arange(f))
        out_tok, _ = model.transformer(x, per_token_t, torch.arange(f))
        enc, dec = WanStreamEncoder(model.codec.vae), WanStreamDecoder(model.codec.vae)
        z = torch.cat([enc.push(video[:, :, i:i + 1]) for i in range(video.shape[2])], dim=2)  # frame by frame
        frames = torch.cat([dec.push(z[:, :, i:i + 1]) for i in range(z.shape[2])], dim=2)
        for block in model.transformer.blocks:
            block.context_bias.zero_()
        removed, _ = model.transformer(x, t[:, None].expand(1, f).contiguous(), torch.arange(f))
    result["astra_forward_s"] = time.perf_counter() - start
    bar.update()
    result["input"] = {"latents": list(x.shape), "tokens": f * tokens_per_frame, "text_tokens": 512,
                       "vae_frames": list(video.shape)}
    result["transformer"] = compare(out, ref)
    result["transformer_per_token_t"] = compare(out_tok, ref_tok)
    result["cross_attention_removed"] = compare(removed, ref)
    result["vae_streamed_encode"] = compare(z, ref_z)
    result["vae_streamed_decode"] = compare(frames, ref_video)
    result["latent_frames"] = z.shape[2]
    result["atol"] = args.atol
    checks = ("transformer", "transformer_per_token_t", "vae_streamed_encode", "vae_streamed_decode")
    result["match"] = all(result[k]["max_abs_diff"] <= args.atol for k in checks)
    result["peak_rss_gb"] = peak_rss_gb()
    if not args.keep:
        shutil.rmtree(args.work)
    bar.update()
    bar.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k in (*checks, "cross_attention_removed"):
        print(f"{k:26s} max |diff| {result[k]['max_abs_diff']:.3g}  (reference mean |x| {result[k]['ref_mean_abs']:.3g})")
    print(f"match within {args.atol}: {result['match']}; peak RSS {result['peak_rss_gb']:.2f} GB; wrote {args.out}")
    return 0 if result["match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
