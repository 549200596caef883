"""Synthetic frames and twist actions shared by the model tests that turn the camera."""

import numpy as np


def smooth_frames(count: int, size: int = 16) -> np.ndarray:
    """Low-frequency colour patterns, uint8 (count, size, size, 3): turning them twice by small steps is close to
    turning them once."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    frames = [np.stack([np.sin(2 * np.pi * (xs + 0.1 * i)), np.cos(3 * ys + xs), np.sin(2 * xs * ys + i)], -1)
              for i in range(count)]
    return ((np.stack(frames) + 1) * 127.5).astype(np.uint8)


def twist_actions(count: int, yaw: float, forward: float = 0.0) -> np.ndarray:
    """Twist rows (count, 6) float32: ``forward`` [m/s] along x, ``yaw`` [rad/s] about z."""
    actions = np.zeros((count, 6), dtype=np.float32)
    actions[:, 0], actions[:, 5] = forward, yaw
    return actions
