"""Image-quality metrics, baselines and action-sensitivity tools for rollout evaluation.

Everything here is plain numpy (plus scipy for the separable SSIM filter). Images are
uint8 arrays shaped ``[..., H, W, 3]`` with values in grey levels [0, 255]; every
per-image metric reduces the last three axes and keeps the leading ones, so a clip
``[T, H, W, 3]`` gives ``[T]`` values and a batch ``[B, T, H, W, 3]`` gives ``[B, T]``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

from astra_ros.model.image_error import PSNR_CAP_DB, image_pair, mse, psnr

__all__ = [
    "SSIM_WINDOW_SIZE",
    "SSIM_SIGMA",
    "SSIM_K1",
    "SSIM_K2",
    "PSNR_CAP_DB",
    "mse",
    "psnr",
    "ssim",
    "gaussian_window_1d",
    "copy_last_baseline",
    "shuffled_actions_indices",
    "action_sensitivity",
    "action_sensitivity_interval",
    "wilson_interval",
]

# Wang, Bovik, Sheikh, Simoncelli (2004), "Image quality assessment: from error
# visibility to structural similarity", section III-C: 11x11 circular-symmetric
# Gaussian window with standard deviation 1.5 samples, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# ITU-R BT.601 luma weights, used by ``ssim(..., mode="luminance")``.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def gaussian_window_1d(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps [pixels]; its outer product is the SSIM window."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd number of pixels, got {size}")
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _filter_valid(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable correlation of ``img [..., H, W]`` with ``window``, keeping only 'valid' pixels.

    The window is symmetric, so correlation equals convolution. Pixels whose window
    would reach past the border are cropped (as Wang et al.'s reference code does with
    ``filter2(..., 'valid')``), so the border mode used by scipy never matters.
    """
    r = window.size // 2
    out = correlate1d(img, window, axis=-1, mode="reflect")
    out = correlate1d(out, window, axis=-2, mode="reflect")
    return out[..., r : img.shape[-2] - r, r : img.shape[-1] - r]


def _ssim_planes(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Mean SSIM of grey planes ``[..., H, W]`` (float64) -> ``[...]``."""
    window = gaussian_window_1d(SSIM_WINDOW_SIZE, SSIM_SIGMA)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x = _filter_valid(x, window)
    mu_y = _filter_valid(y, window)
    # Weighted (population) local variances and covariance, as in the paper's eq. 14-16.
    sigma_xx = _filter_valid(x * x, window) - mu_x * mu_x
    sigma_yy = _filter_valid(y * y, window) - mu_y * mu_y
    sigma_xy = _filter_valid(x * y, window) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * sigma_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_xx + sigma_yy + c2)
    return np.mean(num / den, axis=(-2, -1))


def ssim(
    pred: np.ndarray,
    target: np.ndarray,
    max_value: float = 255.0,
    mode: str = "channels",
) -> np.ndarray:
    """Structural similarity index (Wang et al. 2004) per image.

    The local statistics use an 11x11 Gaussian window (sigma 1.5 pixels), K1 = 0.01,
    K2 = 0.03 and ``L = max_value``; only windows fully inside the image are used
    ("valid" region), and the SSIM map is averaged over them.

    Args:
        pred: predicted images ``[..., H, W, 3]``, uint8 in [0, 255]; H, W >= 11.
        target: real images of the same shape.
        max_value: dynamic range L of the pixel values [grey levels].
        mode: ``"channels"`` (default) computes SSIM on each colour channel and averages
            the three means; ``"luminance"`` computes it once on BT.601 luma
            ``0.299 R + 0.587 G + 0.114 B``.

    Returns:
        float64 array ``[...]`` of SSIM values (1 for identical images, at most 1).
    """
    p, t = image_pair(pred, target)
    h, w = p.shape[-3], p.shape[-2]
    if h < SSIM_WINDOW_SIZE or w < SSIM_WINDOW_SIZE:
        n = SSIM_WINDOW_SIZE
        raise ValueError(f"SSIM needs images of at least {n}x{n} pixels, got {h}x{w}")
    if mode == "channels":
        # Move channels in front of the plane axes: [..., C, H, W].
        per_channel = _ssim_planes(np.moveaxis(p, -1, -3), np.moveaxis(t, -1, -3), float(max_value))
        return per_channel.mean(axis=-1)
    if mode == "luminance":
        if p.shape[-1] != 3:
            raise ValueError(f"luminance SSIM needs 3 colour channels, got {p.shape[-1]}")
        return _ssim_planes(p @ _LUMA_WEIGHTS, t @ _LUMA_WEIGHTS, float(max_value))
    raise ValueError(f"unknown SSIM mode {mode!r}, expected 'channels' or 'luminance'")


def copy_last_baseline(observed_frames: np.ndarray, horizon: int) -> np.ndarray:
    """The copy-last baseline: the last observed frame repeated ``horizon`` times.

    Args:
        observed_frames: observed history ``[..., T, H, W, C]`` with T >= 1.
        horizon: number of future frames to "predict" (>= 1).

    Returns:
        a new array ``[..., horizon, H, W, C]`` of the same dtype, every frame equal to
        ``observed_frames[..., -1, :, :, :]``.
    """
    obs = np.asarray(observed_frames)
    if obs.ndim < 4 or obs.shape[-4] < 1:
        raise ValueError(f"expected observed frames shaped [..., T>=1, H, W, C], got {obs.shape}")
    if int(horizon) < 1:
        raise ValueError(f"horizon must be at least 1 frame, got {horizon}")
    return np.repeat(obs[..., -1:, :, :, :], int(horizon), axis=-4)


def shuffled_actions_indices(
    num_clips: int,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """A random derangement: clip ``i`` takes its actions from clip ``idx[i] != i``.

    Drawn uniformly over all derangements by rejection sampling of random
    permutations (about e ~ 2.7 draws on average).

    Args:
        num_clips: number of clips (>= 2; one clip has no other clip to borrow from).
        rng: a numpy Generator, a seed, or None for fresh entropy.

    Returns:
        int64 array ``[num_clips]``, a permutation of ``0..num_clips-1`` with no fixed point.
    """
    if num_clips < 2:
        raise ValueError(f"shuffled actions need at least 2 clips, got {num_clips}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    identity = np.arange(num_clips)
    while True:
        perm = gen.permutation(num_clips)
        if not np.any(perm == identity):
            return perm.astype(np.int64)


def action_sensitivity(err_true: np.ndarray, err_shuffled: np.ndarray) -> float:
    """Fraction of clips whose error with the true actions is strictly lower than with shuffled ones.

    0.5 is what an action-blind model scores with continuous errors; ties count as
    failures. Clips where either error is NaN are left out.

    Args:
        err_true: per-clip error (e.g. MSE [grey levels^2]) of the rollout with true actions ``[N]``.
        err_shuffled: per-clip error of the rollout with shuffled actions ``[N]``.

    Returns:
        the fraction in [0, 1], or NaN when no clip has both errors.
    """
    wins, clips = _sensitivity_wins(err_true, err_shuffled)
    return wins / clips if clips else math.nan


def _sensitivity_wins(err_true: np.ndarray, err_shuffled: np.ndarray) -> tuple[int, int]:
    """(clips whose true-action error is strictly lower, clips where neither error is NaN)."""
    a = np.asarray(err_true, dtype=np.float64).reshape(-1)
    b = np.asarray(err_shuffled, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"err_true and err_shuffled must have one value per clip, got {a.size} and {b.size}")
    valid = ~(np.isnan(a) | np.isnan(b))
    return int(np.sum(a[valid] < b[valid])), int(np.sum(valid))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``z`` = 1.96: 95 %); (NaN, NaN) for 0 trials.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0 or all successes,
    which small per-modality clip counts hit often."""
    if trials <= 0:
        return math.nan, math.nan
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def action_sensitivity_interval(err_true: np.ndarray, err_shuffled: np.ndarray) -> tuple[float, float]:
    """95 % Wilson interval of :func:`action_sensitivity`: with 20-64 clips a sensitivity is uncertain
    by about +-0.1, so two evaluations that differ by less than that have not shown a difference."""
    return wilson_interval(*_sensitivity_wins(err_true, err_shuffled))
