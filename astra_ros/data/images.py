"""sensor_msgs/Image bytes to numpy RGB arrays, and resizing, without cv_bridge."""

from __future__ import annotations

import cv2
import numpy as np

# Encoding -> (channels, bytes per channel). Colour order is handled in image_to_rgb.
_ENCODING_LAYOUT: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODING_LAYOUT)


class ImageDecodeError(ValueError):
    """An Image message cannot be turned into an RGB array (encoding, size or step is wrong)."""


def image_to_rgb(
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool = False,
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into an RGB array ``uint8 [height, width, 3]``.

    ``step`` is the row length in bytes and may include padding after each row, which is dropped.
    Supported encodings: rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (grey copied to the
    three channels) and mono16 (upper byte kept; ``is_bigendian`` honoured).
    Raises :class:`ImageDecodeError` on an unsupported encoding or a buffer that does not fit.
    """
    layout = _ENCODING_LAYOUT.get(encoding.lower())
    if layout is None:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, channel_bytes = layout
    row_bytes = width * channels * channel_bytes
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image has no pixels: {width}x{height}")
    if step < row_bytes:
        raise ImageDecodeError(
            f"image step {step} B is shorter than one {encoding} row of width {width} ({row_bytes} B)"
        )
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    # The last row's padding is optional in practice, so only the pixels themselves must be present.
    needed = step * (height - 1) + row_bytes
    if buffer.size < needed:
        raise ImageDecodeError(
            f"image data has {buffer.size} B, a {width}x{height} {encoding} image with step {step} needs {needed} B"
        )
    # Rows are read in place through the step (a view): padding the missing last-row padding
    # instead would allocate `step` bytes, and a corrupt step of gigabytes would exhaust memory.
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    if channel_bytes == 2:
        dtype = ">u2" if is_bigendian else "<u2"
        grey16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        grey = (grey16 >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    pixels = rows.reshape(height, width, channels)
    name = encoding.lower()
    if name == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if name in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def resize_rgb(frame: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """Resize an RGB ``uint8 [H, W, 3]`` frame to ``resolution = (height, width)`` with area interpolation.

    Area interpolation averages source pixels when shrinking (no aliasing); a frame that already
    has the requested size is returned unchanged.
    """
    height, width = resolution
    if frame.shape[0] == height and frame.shape[1] == width:
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
