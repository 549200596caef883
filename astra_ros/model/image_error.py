"""Per-image error of uint8 frames (MSE, PSNR): plain numpy, in the model core so that its health check
(``WorldModel.one_shot_error``) and astra-eval score frames the same way without the core importing upwards."""

from __future__ import annotations

import numpy as np

__all__ = ["PSNR_CAP_DB", "image_pair", "mse", "psnr"]


def image_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two image arrays of the same shape ``[..., H, W, C]`` and cast to float64."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
    if pred.ndim < 3:
        raise ValueError(f"expected images shaped [..., H, W, C], got shape {pred.shape}")
    return pred.astype(np.float64), target.astype(np.float64)


def mse(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean squared error per image.

    Args:
        pred: images ``[..., H, W, C]`` (uint8 or float, same scale as ``target``).
        target: reference images of the same shape.

    Returns:
        float64 array ``[...]`` of mean squared errors in (grey levels)^2.
    """
    p, t = image_pair(pred, target)
    return np.mean((p - t) ** 2, axis=(-3, -2, -1))


PSNR_CAP_DB = 100.0  # what psnr() gives identical images (an exact copy)


def psnr(
    pred: np.ndarray,
    target: np.ndarray,
    max_value: float = 255.0,
    cap_db: float = PSNR_CAP_DB,
) -> np.ndarray:
    """Peak signal-to-noise ratio per image, ``10 log10(max_value^2 / MSE)``.

    Identical images have MSE 0 and an infinite PSNR; the result is clipped to
    ``cap_db`` so that such frames give exactly ``cap_db`` and means over clips stay
    finite. Any PSNR above the cap is clipped too.

    Args:
        pred: predicted images ``[..., H, W, 3]``, uint8 in [0, 255].
        target: real images of the same shape.
        max_value: peak signal value [grey levels], 255 for uint8.
        cap_db: upper bound of the returned value [dB].

    Returns:
        float64 array ``[...]`` of PSNR values [dB].
    """
    err = mse(pred, target)
    with np.errstate(divide="ignore"):
        # MSE 0 gives +inf here, which the cap turns into cap_db.
        db = 10.0 * np.log10(float(max_value) ** 2 / err)
    return np.minimum(db, float(cap_db))
