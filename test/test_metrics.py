"""Known-answer tests for astra_ros.eval: image metrics, baselines, motion estimation, reports."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from astra_ros.eval.metrics import (
    SSIM_K1,
    SSIM_K2,
    action_sensitivity,
    action_sensitivity_interval,
    copy_last_baseline,
    mse,
    psnr,
    shuffled_actions_indices,
    ssim,
    wilson_interval,
)
from astra_ros.eval.motion import (
    MotionStatus,
    estimate_relative_motion,
    estimate_relative_motion_detailed,
    intrinsics_from_camera_info,
    intrinsics_from_fov,
    motion_errors,
    motion_from_relative_pose,
    optical_from_body_pose,
    relative_pose,
    rotation_angle_deg,
    rotation_error_deg,
    translation_direction_error_deg,
)
from astra_ros.eval.report import image_grid, plot_metrics, write_metrics_json, write_report, write_video


def _random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images: noise blurred so SSIM sees structure, not only grain."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, shape).astype(np.float32)
    flat = img.reshape(-1, *shape[-3:])
    for i in range(flat.shape[0]):
        flat[i] = cv2.GaussianBlur(flat[i], (0, 0), 1.5)
    flat = (flat - flat.min()) / (flat.max() - flat.min()) * 255.0
    return flat.reshape(shape).round().astype(np.uint8)


# ---------------------------------------------------------------------------- PSNR / MSE


def test_psnr_identical_images_give_the_cap() -> None:
    img = _random_images((2, 3, 32, 32, 3))
    assert psnr(img, img).shape == (2, 3)
    np.testing.assert_array_equal(psnr(img, img), 100.0)
    np.testing.assert_array_equal(psnr(img, img, cap_db=60.0), 60.0)


def test_psnr_constant_offset_known_answer() -> None:
    target = np.full((4, 16, 16, 3), 100, np.uint8)
    pred = target + np.uint8(10)
    expected = 20.0 * math.log10(255.0 / 10.0)
    np.testing.assert_allclose(psnr(pred, target), expected, atol=1e-6)
    np.testing.assert_allclose(mse(pred, target), 100.0)
    # Symmetric, and an offset of 10 in one channel only has MSE 100 / 3.
    np.testing.assert_allclose(psnr(target, pred), expected, atol=1e-6)
    one = target.copy()
    one[..., 0] += 10
    np.testing.assert_allclose(mse(one, target), 100.0 / 3.0)


def test_psnr_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


# ---------------------------------------------------------------------------- SSIM


def _ssim_direct(x: np.ndarray, y: np.ndarray, L: float = 255.0) -> float:
    """SSIM of two grey planes computed window by window with an explicit 11x11 Gaussian."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (SSIM_K1 * L) ** 2, (SSIM_K2 * L) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a = x[i : i + 11, j : j + 11].astype(np.float64)
            b = y[i : i + 11, j : j + 11].astype(np.float64)
            mx, my = np.sum(w * a), np.sum(w * b)
            vx = np.sum(w * (a - mx) ** 2)
            vy = np.sum(w * (b - my) ** 2)
            cxy = np.sum(w * (a - mx) * (b - my))
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_identical_is_one() -> None:
    img = _random_images((3, 24, 20, 3))
    np.testing.assert_allclose(ssim(img, img), 1.0, atol=1e-12)
    np.testing.assert_allclose(ssim(img, img, mode="luminance"), 1.0, atol=1e-12)


def test_ssim_decreases_with_noise() -> None:
    img = _random_images((48, 48, 3), seed=1)
    rng = np.random.default_rng(2)
    values = []
    for sigma in (5.0, 15.0, 40.0):
        noisy = np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)
        values.append(float(ssim(noisy, img)))
    assert all(v < 1.0 for v in values)
    assert values[0] > values[1] > values[2]


def test_ssim_matches_direct_computation() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (14, 13, 3)).astype(np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
    direct = np.mean([_ssim_direct(x[..., c], y[..., c]) for c in range(3)])
    np.testing.assert_allclose(ssim(x, y), direct, rtol=1e-10)
    luma = np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(ssim(x, y, mode="luminance"), _ssim_direct(x @ luma, y @ luma), rtol=1e-10)


def test_ssim_rejects_small_images_and_unknown_mode() -> None:
    small = np.zeros((10, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(small, small)
    img = np.zeros((12, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown SSIM mode"):
        ssim(img, img, mode="gray")


# ---------------------------------------------------------------------------- baselines


def test_copy_last_repeats_exactly_the_last_observed_frame() -> None:
    obs = _random_images((5, 8, 6, 3), seed=4)
    out = copy_last_baseline(obs, 7)
    assert out.shape == (7, 8, 6, 3) and out.dtype == np.uint8
    for frame in out:
        np.testing.assert_array_equal(frame, obs[-1])
    batched = np.stack([obs, obs[::-1]])
    out_b = copy_last_baseline(batched, 3)
    assert out_b.shape == (2, 3, 8, 6, 3)
    np.testing.assert_array_equal(out_b[1, 2], obs[0])
    out[0, 0, 0, 0] ^= 1  # a copy, not a view
    assert obs[-1, 0, 0, 0] != out[0, 0, 0, 0]
    with pytest.raises(ValueError, match="horizon"):
        copy_last_baseline(obs, 0)


def test_shuffled_indices_are_derangements() -> None:
    rng = np.random.default_rng(5)
    for n in range(2, 12):
        for _ in range(20):
            idx = shuffled_actions_indices(n, rng)
            assert sorted(idx.tolist()) == list(range(n))
            assert np.all(idx != np.arange(n))
    np.testing.assert_array_equal(shuffled_actions_indices(2, 0), [1, 0])
    np.testing.assert_array_equal(shuffled_actions_indices(9, 7), shuffled_actions_indices(9, 7))
    for bad in (0, 1):
        with pytest.raises(ValueError, match="at least 2"):
            shuffled_actions_indices(bad, 0)


def test_action_sensitivity_known_fraction() -> None:
    assert action_sensitivity([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 4.0]) == pytest.approx(0.5)  # tie fails
    assert action_sensitivity([1.0, np.nan, 1.0], [2.0, 0.0, 0.5]) == pytest.approx(0.5)  # NaN pair dropped
    assert math.isnan(action_sensitivity([np.nan], [1.0]))
    with pytest.raises(ValueError):
        action_sensitivity([1.0, 2.0], [1.0])


def test_sensitivity_interval_is_the_wilson_interval_and_narrows_with_clips() -> None:
    # Reference values of the 95 % Wilson score interval (z = 1.96).
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    # 3 of 4 clips won (the NaN pair is left out, as in action_sensitivity).
    lo, hi = action_sensitivity_interval([1.0, 1.0, 1.0, 2.0, np.nan], [2.0, 2.0, 2.0, 1.0, 1.0])
    assert (lo, hi) == pytest.approx(wilson_interval(3, 4))
    assert lo < action_sensitivity([1.0, 1.0, 1.0, 2.0], [2.0, 2.0, 2.0, 1.0]) < hi
    # The same fraction over 16x the clips: a quarter of the width.
    wide, narrow = wilson_interval(15, 20), wilson_interval(240, 320)
    assert (narrow[1] - narrow[0]) < 0.3 * (wide[1] - wide[0])


# ---------------------------------------------------------------------------- motion: synthetic room

# A box room around the camera [m]: (axis of the normal, plane offset, in-plane texture axes).
_ROOM = (
    (0, -3.0, (2, 1)),
    (0, 3.0, (2, 1)),
    (1, -2.0, (0, 2)),
    (1, 1.5, (0, 2)),
    (2, 8.0, (0, 1)),
    (2, -8.0, (0, 1)),
)


def _room_textures(seed: int, size: int = 512) -> list[np.ndarray]:
    """One multi-octave colour noise texture per wall, float32 [size, size, 3] in [0, 255]."""
    rng = np.random.default_rng(seed)
    textures = []
    for _ in _ROOM:
        tex = np.zeros((size, size, 3), np.float32)
        for cells in (4, 8, 16, 32, 64, 128):
            noise = rng.random((cells, cells, 3)).astype(np.float32)
            tex += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) * cells**-0.15
        textures.append((tex - tex.min()) / (tex.max() - tex.min()) * 255.0)
    return textures


def _render_room(
    textures: list[np.ndarray], R: np.ndarray, t: np.ndarray, K: np.ndarray, w: int, h: int
) -> np.ndarray:
    """Ray-cast the textured room (fixed in camera a's frame) from camera b, where x_b = R x_a + t."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_b = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    centre = -R.T @ t  # camera b's centre in frame a
    rays = rays_b @ R  # R^T applied to every ray
    depth = np.full((h, w), np.inf)
    image = np.zeros((h, w, 3), np.float32)
    texels_per_m = 48.0
    for tex, (axis, offset, (i, j)) in zip(textures, _ROOM):
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (offset - centre[axis]) / rays[..., axis]
        hit = (s > 0) & (s < depth)
        p = centre + rays * s[..., None]
        mx = (p[..., i] * texels_per_m % tex.shape[1]).astype(np.float32)
        my = (p[..., j] * texels_per_m % tex.shape[0]).astype(np.float32)
        colour = cv2.remap(tex, np.nan_to_num(mx), np.nan_to_num(my), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        image[hit] = colour[hit]
        depth[hit] = s[hit]
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _yaw(deg: float) -> np.ndarray:
    """Rotation about the optical y axis (down), i.e. a camera pan [deg]."""
    a = math.radians(deg)
    return np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])


def _pose(R: np.ndarray, p: list[float]) -> np.ndarray:
    """4x4 pose from a rotation and a position [m]."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = p
    return T


@pytest.fixture(scope="module")
def room() -> list[np.ndarray]:
    """Wall textures shared by the motion tests (built once: about 0.1 s)."""
    return _room_textures(seed=0)


def test_motion_recovers_pure_yaw(room: list[np.ndarray]) -> None:
    w, h = 160, 120
    K = intrinsics_from_fov(w, h, 60.0)
    R_true, t_true = motion_from_relative_pose(_pose(_yaw(10.0), [0.0, 0.0, 0.0]))
    a = _render_room(room, np.eye(3), np.zeros(3), K, w, h)
    b = _render_room(room, R_true, t_true, K, w, h)
    result = estimate_relative_motion(a, b, K)
    assert result is not None
    R, t = result
    assert rotation_angle_deg(R) == pytest.approx(10.0, abs=3.0)
    assert rotation_error_deg(R, R_true) < 3.0
    est = estimate_relative_motion_detailed(a, b, K)
    # A pure rotation has no parallax: the translation direction is reported as unobservable.
    assert est.status is MotionStatus.ROTATION_ONLY and est.reason == "rotation_only"
    assert np.all(est.t_unit == 0.0)
    rot_err, dir_err, _ = motion_errors(a, b, K, R_true, t_true)
    assert rot_err < 3.0 and math.isnan(dir_err)


@pytest.mark.parametrize(
    ("size", "yaw_deg", "position"),
    [((160, 120), 5.0, [0.4, 0.0, 0.3]), ((64, 64), 0.0, [0.5, 0.0, 0.0])],
)
def test_motion_recovers_translation_direction(
    room: list[np.ndarray], size: tuple[int, int], yaw_deg: float, position: list[float]
) -> None:
    w, h = size
    K = intrinsics_from_fov(w, h, 60.0)
    R_true, t_true = motion_from_relative_pose(_pose(_yaw(yaw_deg), position))
    a = _render_room(room, np.eye(3), np.zeros(3), K, w, h)
    b = _render_room(room, R_true, t_true, K, w, h)
    est = estimate_relative_motion_detailed(a, b, K)
    assert est.status is MotionStatus.OK, est
    assert np.linalg.norm(est.t_unit) == pytest.approx(1.0)
    assert rotation_error_deg(est.R, R_true) < 3.0
    assert translation_direction_error_deg(est.t_unit, t_true) < 3.0


@pytest.mark.parametrize(("yaw_deg", "position"), [(6.0, [0.0, 0.0, 0.0]), (3.0, [0.3, 0.0, 0.3])])
def test_flow_correspondences_recover_motion_on_small_frames(
    room: list[np.ndarray], yaw_deg: float, position: list[float]
) -> None:
    """Dense flow finds the motion of 64x64 frames, with the same geometry steps as keypoints."""
    K = intrinsics_from_fov(64, 64, 60.0)
    R_true, t_true = motion_from_relative_pose(_pose(_yaw(yaw_deg), position))
    a = _render_room(room, np.eye(3), np.zeros(3), K, 64, 64)
    b = _render_room(room, R_true, t_true, K, 64, 64)
    est = estimate_relative_motion_detailed(a, b, K, detector="flow")
    assert est.ok, est
    assert est.num_matches >= 100  # a grid of flow points, not a handful of keypoints
    assert rotation_error_deg(est.R, R_true) < 1.5
    assert rotation_angle_deg(est.R) == pytest.approx(rotation_angle_deg(R_true), abs=1.5)
    if np.linalg.norm(t_true) > 0:
        assert est.status is MotionStatus.OK
        assert translation_direction_error_deg(est.t_unit, t_true) < 10.0
    flat = np.full((64, 64, 3), 90, np.uint8)
    assert estimate_relative_motion_detailed(flat, flat, K, detector="flow").status is MotionStatus.TOO_FEW_FEATURES
    with pytest.raises(ValueError, match="'sift', 'orb' or 'flow'"):
        estimate_relative_motion_detailed(a, b, K, detector="surf")


@pytest.mark.parametrize("detector", ["sift", "flow"])
def test_the_same_view_twice_is_no_rotation_not_a_failure(room: list[np.ndarray], detector: str) -> None:
    """A still camera: matches without displacement leave the essential matrix undefined; SIFT used to
    report ESSENTIAL_FAILED, which left still real frames (and predictions that did not move) out."""
    K = intrinsics_from_fov(160, 120, 60.0)
    a = _render_room(room, np.eye(3), np.zeros(3), K, 160, 120)
    est = estimate_relative_motion_detailed(a, a.copy(), K, detector=detector)
    assert est.status is MotionStatus.ROTATION_ONLY, est
    assert rotation_angle_deg(est.R) < 1e-6 and np.all(est.t_unit == 0.0)
    rot_err, _, _ = motion_errors(a, a, K, _yaw(4.0), np.zeros(3), detector=detector)
    assert rot_err == pytest.approx(4.0, abs=1e-3)  # the error of not turning when the camera turned 4 deg


def test_motion_reports_why_it_failed() -> None:
    flat = np.full((120, 160, 3), 90, np.uint8)
    K = intrinsics_from_fov(160, 120, 60.0)
    assert estimate_relative_motion(flat, flat, K) is None
    est = estimate_relative_motion_detailed(flat, flat, K)
    assert not est.ok and est.status is MotionStatus.TOO_FEW_FEATURES
    with pytest.raises(ValueError, match="same size"):
        estimate_relative_motion(flat, flat[:100], K)


def test_angle_helpers_known_values() -> None:
    assert rotation_angle_deg(np.eye(3)) == pytest.approx(0.0, abs=1e-12)
    assert rotation_angle_deg(_yaw(37.0)) == pytest.approx(37.0)
    assert rotation_angle_deg(_yaw(180.0)) == pytest.approx(180.0)
    assert rotation_error_deg(_yaw(10.0), _yaw(-5.0)) == pytest.approx(15.0)
    assert translation_direction_error_deg([1, 0, 0], [0, 2, 0]) == pytest.approx(90.0)
    assert translation_direction_error_deg([1, 1, 0], [3, 3, 0]) == pytest.approx(0.0, abs=1e-6)
    assert translation_direction_error_deg([0, 0, 1], [0, 0, -1]) == pytest.approx(180.0)
    assert math.isnan(translation_direction_error_deg([1, 0, 0], [0, 0, 0]))


def test_intrinsics() -> None:
    K = intrinsics_from_fov(320, 240, 60.0)
    f = 120.0 / math.tan(math.radians(30.0))
    np.testing.assert_allclose(K, [[f, 0, 159.5], [0, f, 119.5], [0, 0, 1]])
    flat = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    np.testing.assert_array_equal(intrinsics_from_camera_info(flat), np.array(flat).reshape(3, 3))
    with pytest.raises(ValueError, match="9 numbers"):
        intrinsics_from_camera_info([1.0, 2.0])


def test_pose_conventions() -> None:
    # Camera b is 1 m ahead of camera a (body x forward): in a's optical frame it is at z = +1,
    # and scene points move towards the camera: x_b = x_a - (0, 0, 1).
    T_w_a = optical_from_body_pose(np.eye(4))
    T_w_b = optical_from_body_pose(_pose(np.eye(3), [1.0, 0.0, 0.0]))
    T_a_b = relative_pose(T_w_a, T_w_b)
    np.testing.assert_allclose(T_a_b[:3, 3], [0.0, 0.0, 1.0], atol=1e-12)
    R, t = motion_from_relative_pose(T_a_b)
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(t, [0.0, 0.0, -1.0], atol=1e-12)
    # Round trip: a point fixed in the world maps through (R, t) as x_b = R x_a + t.
    rng = np.random.default_rng(6)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    Q *= np.sign(np.linalg.det(Q))
    T_w_a, T_w_b = _pose(Q, [1.0, 2.0, 3.0]), _pose(Q @ _yaw(20.0), [1.5, 2.0, 2.0])
    R, t = motion_from_relative_pose(relative_pose(T_w_a, T_w_b))
    x_w = np.array([0.3, -0.7, 5.0, 1.0])
    x_a = np.linalg.solve(T_w_a, x_w)[:3]
    x_b = np.linalg.solve(T_w_b, x_w)[:3]
    np.testing.assert_allclose(R @ x_a + t, x_b, atol=1e-12)


# ---------------------------------------------------------------------------- reports


def _metrics() -> dict:
    return {
        "horizon_s": [0.25, 0.5, 1.0],
        "psnr": {
            "model": [25.5, 22.25, 20.0],
            "copy_last": [24.0, 21.0, 19.0],
            "shuffled_actions": [23.0, 20.0, 18.0],
        },
        "ssim": {"model": [0.9, 0.8, 0.7], "copy_last": [0.85, 0.75, 0.65], "shuffled_actions": [0.8, 0.7, 0.6]},
        "action_sensitivity": 0.8125,
        "rotation_error_deg": {"model": [1.5, 2.5, float("nan")], "ground_truth": 0.25},
        "translation_dir_error_deg": {"model": [10.0, None, 30.0], "ground_truth": [1.0, 2.0, 3.0]},
        "clips": 16,
        "checkpoint": "checkpoints/default",
        "bags": ["explore_0000", "explore_0001"],
        "skipped": {"too_short": 2},
    }


def test_report_files(tmp_path) -> None:
    metrics = _metrics()
    png = plot_metrics(metrics, tmp_path / "metrics.png")
    assert png.stat().st_size > 1000
    assert cv2.imread(str(png)) is not None

    rng = np.random.default_rng(7)
    clip = {
        k: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        for k, n in (("observed", 2), ("predicted", 4), ("real", 4))
    }
    grid = image_grid([clip, (clip["observed"], clip["predicted"], clip["real"])], tmp_path / "grid.png")
    img = cv2.imread(str(grid))
    assert img is not None and img.shape[0] >= 2 * 3 * 96 and img.shape[1] >= 4 * 96

    video = write_video(clip["real"], clip["predicted"], tmp_path / "video.mp4", fps=4.0)
    assert video.stat().st_size > 0
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[1] == 2 * frame.shape[0]

    report = write_report(metrics, tmp_path)
    text = report.read_text()
    # Means over the horizon: PSNR, SSIM, sensitivity, rotation model/real, direction model/real.
    needles = ("22.58", "21.33", "20.33", "0.8000", "0.812", "2.00", "0.25", "20.00", "16", "too_short 2")
    for needle in needles:
        assert needle in text, needle
    for name in ("metrics.png", "grid.png", "video.mp4"):
        assert f"({name})" in text

    path = write_metrics_json(metrics, tmp_path / "metrics.json")
    loaded = json.loads(path.read_text())
    assert loaded["rotation_error_deg"]["model"][2] is None
    assert loaded["psnr"]["model"] == metrics["psnr"]["model"]
