"""Pictures of evaluated clips: the image grid (observed, predicted and real frames of each clip) and a
side-by-side video. Plain numpy and OpenCV; no torch, no rclpy."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = ["image_grid", "write_video"]


def _clip_parts(clip: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observed, predicted, real) frame stacks from a mapping or a 3-sequence."""
    if isinstance(clip, Mapping):
        parts = (clip["observed"], clip["predicted"], clip["real"])
    else:
        if len(clip) != 3:
            raise ValueError(f"a clip must be (observed, predicted, real), got {len(clip)} parts")
        parts = tuple(clip)
    out = []
    for name, frames in zip(("observed", "predicted", "real"), parts):
        arr = np.asarray(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"{name} frames must be uint8 [T, H, W, 3], got {arr.dtype} {arr.shape}")
        out.append(arr)
    return out[0], out[1], out[2]


def _label_tile(text: str, height: int, width: int) -> np.ndarray:
    """A white tile ``[height, width, 3]`` with ``text`` in black, vertically centred."""
    tile = np.full((height, width, 3), 255, np.uint8)
    scale = 0.5
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(tile, text, (4, (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def image_grid(
    rows: Sequence[Any],
    path_png: str | os.PathLike,
    *,
    min_tile: int = 96,
    pad: int = 2,
) -> Path:
    """Write an image grid: for each clip, rows of observed, predicted and real frames.

    Each row starts with a label ("clip i observed", "predicted", "real"); frames are
    upscaled with nearest-neighbour (integer factor) so the smaller side is at least
    ``min_tile`` pixels, keeping small model frames readable. Predicted and real frames
    line up column by column (same horizon step).

    Args:
        rows: one entry per clip, either a mapping with keys ``observed``, ``predicted``,
            ``real`` or a sequence of those three, each uint8 ``[T, H, W, 3]`` RGB.
        path_png: output PNG file.
        min_tile: minimum displayed frame size [pixels].
        pad: white gap between frames [pixels].

    Returns:
        the path written.
    """
    if len(rows) == 0:
        raise ValueError("image_grid needs at least one clip")
    clips = [_clip_parts(c) for c in rows]
    h, w = clips[0][0].shape[1:3]
    for parts in clips:
        for arr in parts:
            if arr.shape[1:3] != (h, w):
                raise ValueError(f"all frames must share one size, got {arr.shape[1:3]} and {(h, w)}")
    factor = max(1, int(math.ceil(min_tile / min(h, w))))
    th, tw = h * factor, w * factor
    ncols = max(arr.shape[0] for parts in clips for arr in parts)
    label_w = 150
    row_h = th + pad
    canvas_w = label_w + ncols * (tw + pad)
    names = ("observed", "predicted", "real")
    canvas = np.full((len(clips) * 3 * row_h + pad * len(clips), canvas_w, 3), 255, np.uint8)
    y = 0
    for ci, parts in enumerate(clips):
        for name, arr in zip(names, parts):
            label = f"clip {ci} {name}" if name == "observed" else name
            canvas[y : y + th, :label_w] = _label_tile(label, th, label_w)
            for j, frame in enumerate(arr):
                x = label_w + j * (tw + pad)
                canvas[y : y + th, x : x + tw] = np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)
            y += row_h
        y += pad  # extra gap between clips
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def write_video(
    frames_left: np.ndarray,
    frames_right: np.ndarray,
    path_mp4: str | os.PathLike,
    fps: float,
    *,
    labels: tuple[str, str] | None = ("real", "predicted"),
    min_height: int = 256,
) -> Path:
    """Write a side-by-side MP4 (codec 'mp4v') of two frame sequences.

    Frames are upscaled with nearest-neighbour (integer factor) to at least ``min_height``
    pixels and padded to even sizes, which common MP4 players need.

    Args:
        frames_left: uint8 ``[N, H, W, 3]`` RGB, shown on the left.
        frames_right: uint8 ``[N, H, W, 3]`` RGB with the same N, H, W, shown on the right.
        path_mp4: output file.
        fps: frame rate [frames/s].
        labels: captions drawn on the left and right halves, or None.
        min_height: minimum output height [pixels].

    Returns:
        the path written.
    """
    left = np.asarray(frames_left)
    right = np.asarray(frames_right)
    if left.shape != right.shape or left.ndim != 4 or left.shape[-1] != 3:
        raise ValueError(f"expected two [N, H, W, 3] arrays of one shape, got {left.shape} and {right.shape}")
    if left.dtype != np.uint8 or right.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {left.dtype} and {right.dtype}")
    if left.shape[0] == 0:
        raise ValueError("write_video needs at least one frame")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    factor = max(1, int(math.ceil(min_height / left.shape[1])))
    h, w = left.shape[1] * factor, left.shape[2] * factor
    out_h, out_w = h + h % 2, 2 * w + (2 * w) % 2
    path = Path(path_mp4)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (out_w, out_h))
    if not writer.isOpened():
        raise OSError(f"could not open a 'mp4v' video writer for {path}")
    try:
        for a, b in zip(left, right):
            frame = np.zeros((out_h, out_w, 3), np.uint8)
            frame[:h, :w] = np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)
            frame[:h, w : 2 * w] = np.repeat(np.repeat(b, factor, axis=0), factor, axis=1)
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            if labels is not None:
                for x0, text in zip((0, w), labels):
                    # A black outline under white text stays readable on any frame.
                    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
                        org = (x0 + 6, 20)
                        cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, thickness, cv2.LINE_AA)
            writer.write(frame)
    finally:
        writer.release()
    if not path.exists() or path.stat().st_size == 0:
        raise OSError(f"the video writer produced no data in {path}")
    return path
