"""``astra-rollout``: stream a world model over a short clip and save observed | predicted as a PNG strip.

    astra-rollout --checkpoint random --out out/rollout.png

The observed frames come from a procedural scene (a camera panning over a smooth random
texture) with matching twist actions; the model observes them through ``WorldModel.start``,
then predicts chunk after chunk with ``step`` (the KV-cached streaming path), timing each chunk.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from astra_ros.cli.arguments import IMAGE_SUFFIXES, check_output_file, non_negative_int, positive_int

log = logging.getLogger("astra_rollout")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="astra-rollout", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint directory, 'default' (embedded), 'random:<preset>' or 'random' (random init of --preset)")
    p.add_argument("--preset", default="cpu_default", help="model preset for --checkpoint random")
    p.add_argument("--observe", type=positive_int, default=4,
                   help="observed frames before predicting (at least one chunk; whole chunks are kept)")
    p.add_argument("--predict", type=positive_int, default=8, help="frames to predict (rounded up to whole chunks)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the scene and of the sampler")
    p.add_argument("--out", type=Path, default=Path("out/rollout.png"), help="image strip to write, .png or .jpg")
    args = p.parse_args(argv)
    check_output_file(p, args.out, IMAGE_SUFFIXES)  # before the rollout, not after it
    return args


def panning_scene(frames: int, size: tuple[int, int], seed: int, speed_px: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, H, W, 3) of a camera panning right over a smooth random texture, and the
    twist actions (T, 6) that describe it (body-frame lateral velocity x frame interval, in px)."""
    rng = np.random.default_rng(seed)
    h, w = size
    big_w = int(w + speed_px * frames + 8)
    coarse = rng.uniform(0, 255, (h // 8 + 2, big_w // 8 + 2, 3)).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((big_w, h), Image.BICUBIC))
    out = np.stack([texture[:, int(round(i * speed_px)):int(round(i * speed_px)) + w] for i in range(frames)])
    actions = np.zeros((frames, 6), np.float32)
    actions[:, 1] = -speed_px / w  # moving right = negative y (left) velocity in the ROS body frame
    return out, actions


def strip(observed: np.ndarray, predicted: np.ndarray, scale: int = 2) -> Image.Image:
    """One row per kind: observed frames, then predicted frames, labelled."""
    h, w = observed.shape[1:3]
    cols = max(len(observed), len(predicted))
    label_w = 70
    canvas = Image.new("RGB", (label_w + cols * w * scale, 2 * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, frames) in enumerate((("observed", observed), ("predicted", predicted))):
        draw.text((4, row * h * scale + 4), name, fill="black")
        for i, f in enumerate(frames):
            tile = Image.fromarray(f).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + i * w * scale, row * h * scale))
    return canvas


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    import torch

    from astra_ros.model import RANDOM_PREFIX, CheckpointError, load_world_model

    torch.manual_seed(args.seed)
    # random:<preset>, as every other tool spells it, or random + --preset
    spec = RANDOM_PREFIX + args.preset if args.checkpoint == "random" else args.checkpoint
    try:
        wm = load_world_model(spec)
        if spec.startswith(RANDOM_PREFIX):
            log.info("using a randomly initialised '%s' model: predictions are noise until a trained checkpoint is used",
                     spec[len(RANDOM_PREFIX):])
    except (CheckpointError, ValueError) as err:
        log.error("cannot load checkpoint: %s", err)
        return 2
    n = wm.frames_per_chunk
    modality = "twist"  # the panning scene's actions are twists
    if modality not in wm.modalities:
        log.error("astra-rollout drives its scene with twist actions; this checkpoint knows only %s", wm.modalities)
        return 2
    if args.observe < n:
        log.error("--observe %d: the model observes whole chunks of %d frames; give at least %d", args.observe, n, n)
        return 2
    chunks = -(-args.predict // n)
    frames, actions = panning_scene(args.observe + chunks * n, wm.resolution, args.seed)
    wm.start(frames[: args.observe], actions[: args.observe], modality=modality, seed=args.seed)
    predicted, latencies = [], []
    for c in range(chunks):
        a = actions[args.observe + c * n: args.observe + (c + 1) * n]
        t0 = time.perf_counter()
        predicted.append(wm.step(a))
        latencies.append(time.perf_counter() - t0)
        log.info("chunk %d/%d: %d frames in %.3f s", c + 1, chunks, n, latencies[-1])
    pred = np.concatenate(predicted)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip(frames[: args.observe], pred).save(args.out)
    summary = {"out": str(args.out), "frames_predicted": int(len(pred)),
               "chunk_latency_s": [round(x, 4) for x in latencies],
               "predicted_fps": round(len(pred) / sum(latencies), 2)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
