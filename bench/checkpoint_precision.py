"""Does a checkpoint stored (partly) in float16 predict the frames its float32 original predicts?

    MUJOCO_GL=egl python bench/checkpoint_precision.py --seeds 9500,9501,9502,9503
    python bench/checkpoint_precision.py --float16 '*' --out bench/results/checkpoint_precision_all_float16.json
    python bench/checkpoint_precision.py --checkpoint runs/default/15-more-data-more --write release/default

Records a few short simulator episodes (one per scenario and seed, seeds no training used), loads the
checkpoint twice, as stored (float32) and with the tensors named by ``--float16`` (by default the
transformer blocks, the release policy of docs/CHECKPOINTS.md; ``'*'``: all) rounded to float16 and
read back (the loader upcasts them to float32), and rolls both out on the same clips with the same
seeds: ``start`` on 4 observed frames, then ``imagine`` over the next 10 with the actions that really
came next (the ``rover`` bags also read as ``keys``). The criterion: every predicted frame of the copy
within 1/255 (one grey level) of float32's at every pixel. Writes JSON (sizes, per-rollout largest
and mean difference, the verdict) to ``--out``; exits 1 when the criterion fails. With ``--write`` and
the criterion met, writes the stored copy (``config.json`` + ``model.safetensors``) there: the file to
release.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

# (scenario, modality the bag is read as)
CLIPS = (("explore", "camera"), ("arm", "robot"), ("rover", "twist"), ("rover", "keys"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default", help="'default' or a checkpoint directory")
    p.add_argument("--seeds", default="9500,9501", help="simulator seeds, one episode per scenario each")
    p.add_argument("--seconds", type=float, default=4.0, help="episode length [s]")
    p.add_argument("--observed", type=int, default=4, help="frames observed before each rollout")
    p.add_argument("--horizon", type=int, default=10, help="frames imagined per rollout")
    p.add_argument("--clips-per-episode", type=int, default=2, help="rollouts per episode, at spread start frames")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--tolerance", type=int, default=1, help="largest allowed difference [grey levels of 255]")
    p.add_argument("--out", type=Path, default=Path("bench/results/checkpoint_precision.json"))
    p.add_argument("--float16", default="transformer.blocks.",
                   help="comma-separated prefixes of the tensor names stored in float16 ('*': every floating-point "
                        "tensor); the rest stay float32. The default is the release policy (docs/CHECKPOINTS.md)")
    p.add_argument("--write", type=Path, default=None, help="write the float16 checkpoint here if it holds")
    return p.parse_args(argv)


def half_copy(src: Path, dst: Path, prefixes: tuple[str, ...] = ("",)) -> dict:
    """Write ``src``'s checkpoint to ``dst`` with the floating-point tensors whose names start with one of
    ``prefixes`` in float16 (``("",)``: all of them), the rest as they are; return sizes."""
    import torch
    from safetensors.torch import load_file

    from astra_ros.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_tensors

    state = load_file(str(src / WEIGHTS_NAME))
    half = {k for k, v in state.items() if v.is_floating_point() and k.startswith(prefixes)}
    if not half:
        raise ValueError(f"no floating-point tensor of {src} starts with {prefixes}")
    largest = max(float(state[k].abs().max()) for k in half)
    if largest >= float(torch.finfo(torch.float16).max):
        raise ValueError(f"{src}: a weight of magnitude {largest:g} does not fit float16")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / CONFIG_NAME, dst / CONFIG_NAME)
    save_tensors({k: v.to(torch.float16) if k in half else v for k, v in state.items()}, dst / WEIGHTS_NAME)
    # Values float16 flushes to zero (below its smallest subnormal, ~6e-8) are the ones it cannot keep.
    flushed = sum(int(((v != 0) & (v.to(torch.float16) == 0)).sum()) for k, v in state.items() if k in half)
    return {"float32_bytes": (src / WEIGHTS_NAME).stat().st_size, "float16_bytes": (dst / WEIGHTS_NAME).stat().st_size,
            "largest_abs_weight": largest, "weights_flushed_to_zero": flushed,
            "tensors": len(state), "tensors_float16": len(half), "parameters": int(sum(v.numel() for v in state.values())),
            "parameters_float16": int(sum(state[k].numel() for k in half))}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    from astra_ros.data.bags import read_episode
    from astra_ros.data.record import record_episode
    from astra_ros.data.scenes import SimSettings
    from astra_ros.model import WorldModel
    from astra_ros.model.checkpoint import resolve_checkpoint

    torch.set_num_threads(args.threads)
    source = resolve_checkpoint(args.checkpoint)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="ckpt_precision_") as tmp:
        tmp = Path(tmp)
        prefixes = ("",) if args.float16.strip() == "*" else tuple(p for p in args.float16.split(",") if p)
        if not prefixes:
            raise SystemExit("--float16 names no tensors")
        sizes = half_copy(source, tmp / "half", prefixes)
        models = {"float32": WorldModel.from_pretrained(source), "float16": WorldModel.from_pretrained(tmp / "half")}
        assert all(p.dtype == torch.float32 for p in models["float16"].parameters())  # upcast on load
        settings = SimSettings(seconds=args.seconds, image_width=128, image_height=128)
        bags = {(scenario, seed): record_episode(scenario, seed, tmp / "bags", settings=settings, progress=False)
                for scenario in sorted({c[0] for c in CLIPS}) for seed in seeds}
        rows = []
        jobs = [(scenario, modality, seed) for scenario, modality in CLIPS for seed in seeds]
        for scenario, modality, seed in tqdm(jobs, desc="rollouts", unit="episode"):
            episode = read_episode(bags[scenario, seed], modality, resolution=models["float32"].resolution)
            span = args.observed + args.horizon
            if len(episode.frames) < span:
                raise ValueError(f"{scenario} seed {seed}: {len(episode.frames)} frames, a rollout needs {span}")
            for start in np.linspace(0, len(episode.frames) - span, args.clips_per_episode).round().astype(int):
                observed = slice(start, start + args.observed)
                future = episode.actions[start + args.observed:start + span]
                out = {}
                for name, model in models.items():
                    if episode.camera_info is not None:  # the rotation reference turns views with these
                        model.set_intrinsics(episode.camera_info.matrix())
                    model.start(episode.frames[observed], episode.actions[observed], modality=modality, seed=seed)
                    out[name] = model.imagine(future[None], seed=seed + 1)[0].astype(np.int16)
                diff = np.abs(out["float16"] - out["float32"])
                rows.append({"scenario": scenario, "modality": modality, "seed": seed, "start_frame": int(start),
                             "frames": int(diff.shape[0]), "max_abs_diff": int(diff.max()),
                             "mean_abs_diff": float(diff.mean()), "pixels_differing": float((diff > 0).mean())})
        holds = all(r["max_abs_diff"] <= args.tolerance for r in rows)
        if args.write is not None and holds:
            half_copy(source, args.write, prefixes)
    result = {
        "checkpoint": str(args.checkpoint), "float16_prefixes": args.float16, "criterion": f"every frame within {args.tolerance}/255 of float32's",
        "holds": holds, "rollouts": len(rows), "frames_compared": int(sum(r["frames"] for r in rows)),
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in rows])),
        **sizes, "observed": args.observed, "horizon": args.horizon, "seeds": seeds,
        "machine": platform.platform(), "torch": torch.__version__, "threads": args.threads, "clips": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"float16 storage: {sizes['float16_bytes'] / 1e6:.1f} MB (float32 {sizes['float32_bytes'] / 1e6:.1f} MB); "
          f"{len(rows)} rollouts, {result['frames_compared']} frames: max difference {result['max_abs_diff']}/255, "
          f"mean {result['mean_abs_diff']:.4f}; criterion {'holds' if holds else 'FAILS'}")
    return 0 if holds else 1


if __name__ == "__main__":
    raise SystemExit(main())
