"""Relative camera motion between two frames, for checking that predictions follow the actions.

Conventions (used by every function here):

* Camera frame: OpenCV optical frame, x right, y down, z forward (along the optical axis).
* Pixels: OpenCV convention, pixel ``(u, v)`` has its centre at integer coordinates, so the
  image centre of a ``W x H`` image is ``((W - 1) / 2, (H - 1) / 2)``.
* Motion ``(R, t)`` maps a point's coordinates in camera a to its coordinates in camera b:
  ``x_b = R @ x_a + t``. This is what ``cv2.recoverPose`` returns. Monocular images only
  fix ``t`` up to scale, so it is returned as a unit vector (or zeros when the frames show
  no usable parallax, see :func:`estimate_relative_motion_detailed`).
* Poses ``T_a_b`` (4x4) are the pose of frame b expressed in frame a: ``x_a = T_a_b @ x_b``
  in homogeneous coordinates. :func:`motion_from_relative_pose` converts a relative camera
  pose into the ``(R, t)`` convention above, so commanded or recorded motion can be compared
  with the estimate.

ROS camera poses (``/camera/pose``) are usually given for a body-style frame (x forward,
y left, z up); :func:`optical_from_body_pose` turns those into optical-frame poses first.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "R_BODY_OPTICAL",
    "MotionStatus",
    "MotionEstimate",
    "estimate_relative_motion",
    "estimate_relative_motion_detailed",
    "motion_errors",
    "rotation_angle_deg",
    "rotation_error_deg",
    "translation_direction_error_deg",
    "intrinsics_from_camera_info",
    "intrinsics_from_fov",
    "scale_intrinsics",
    "relative_pose",
    "motion_from_relative_pose",
    "optical_from_body_pose",
]

# Rotation of the optical frame (x right, y down, z forward) in a body-style camera frame
# (x forward, y left, z up): its columns are the optical axes written in body axes.
R_BODY_OPTICAL = np.array(
    [
        [0.0, 0.0, 1.0],
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
    ]
)

# Robust estimators accepted by ``cv2.findEssentialMat``, by the name callers pass.
_ROBUST_METHODS = {"ransac": cv2.RANSAC, "usac_accurate": cv2.USAC_ACCURATE, "usac_magsac": cv2.USAC_MAGSAC}

# Farthest triangulated depth [baselines] that counts in recoverPose's cheirality vote.
_MAX_DEPTH_BASELINES = 1e4

# Translations shorter than this (in the caller's length unit, or for a unit vector)
# have no meaningful direction.
_MIN_TRANSLATION_NORM = 1e-9


class MotionStatus(str, enum.Enum):
    """Outcome of a motion estimate; the value is a short reason string."""

    OK = "ok"
    ROTATION_ONLY = "rotation_only"  # R is valid, the translation direction is not observable
    TOO_FEW_FEATURES = "too_few_features"
    TOO_FEW_MATCHES = "too_few_matches"
    ESSENTIAL_FAILED = "essential_failed"
    TOO_FEW_INLIERS = "too_few_inliers"


@dataclass(frozen=True)
class MotionEstimate:
    """A relative motion estimate with the numbers that explain it.

    ``R`` (3x3) and ``t_unit`` (3,) follow the module's convention ``x_b = R x_a + t``;
    both are None when the estimate failed. ``t_unit`` is all zeros for
    ``MotionStatus.ROTATION_ONLY`` (no parallax beyond the matching noise).
    """

    status: MotionStatus
    R: np.ndarray | None = None
    t_unit: np.ndarray | None = None
    num_features: tuple[int, int] = (0, 0)  # keypoints found in frame a and frame b
    num_matches: int = 0  # matches that passed the ratio test (flow: points that passed the round trip)
    num_inliers: int = 0  # robust inliers that passed the cheirality check (or fit the rotation)
    parallax_px: float = math.nan  # median residual of the best pure-rotation fit [native pixels]
    detail: str = ""  # human-readable explanation of a failure

    @property
    def ok(self) -> bool:
        """True when a rotation is available (status OK or ROTATION_ONLY)."""
        return self.R is not None

    @property
    def reason(self) -> str:
        """The status as a short string, e.g. ``"too_few_matches"``."""
        return self.status.value


def _to_gray(frame: np.ndarray) -> np.ndarray:
    """uint8 grey image from an RGB ``[H, W, 3]`` or grey ``[H, W]`` frame."""
    img = np.asarray(frame)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got dtype {img.dtype}")
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected a frame shaped [H, W, 3] or [H, W], got {img.shape}")


# Dense-flow correspondences (detector "flow"): grid spacing and forward-backward tolerance in
# native pixels, and the share of grid points, by image gradient, that are left out as textureless.
_FLOW_GRID_PX = 1.5
_FLOW_MAX_ROUND_TRIP_PX = 0.2
_FLOW_TEXTURELESS_SHARE = 0.5


def _flow_correspondences(gray_a: np.ndarray, gray_b: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Grid points of frame a and where dense optical flow (OpenCV's DIS) carries them in frame b.

    Kept: points on texture (gradient above the median, and not zero) whose flow leads back to
    within ``_FLOW_MAX_ROUND_TRIP_PX`` of where they started and that stay inside frame b. Returns
    ``(pts_a, pts_b, textured)``: ``(N, 2)`` pixel coordinates at detection scale and the number
    of textured grid points before the round-trip check.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    forward = dis.calc(gray_a, gray_b, None)
    backward = dis.calc(gray_b, gray_a, None)
    h, w = gray_a.shape
    step = max(1, round(_FLOW_GRID_PX * scale))
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    ys, xs = ys.ravel(), xs.ravel()
    gradient = np.hypot(cv2.Sobel(gray_a, cv2.CV_32F, 1, 0), cv2.Sobel(gray_a, cv2.CV_32F, 0, 1))[ys, xs]
    textured = (gradient > np.quantile(gradient, _FLOW_TEXTURELESS_SHARE)) & (gradient > 0)
    ys, xs = ys[textured], xs[textured]
    pts_a = np.c_[xs, ys].astype(np.float32)
    if len(pts_a) == 0:  # a flat frame: nothing to follow (and cv2.remap rejects an empty map)
        return pts_a.astype(np.float64), pts_a.astype(np.float64), 0
    pts_b = pts_a + forward[ys, xs]
    inside = (pts_b[:, 0] >= 0) & (pts_b[:, 0] <= w - 1) & (pts_b[:, 1] >= 0) & (pts_b[:, 1] <= h - 1)
    back = cv2.remap(backward, pts_b[:, :1].copy(), pts_b[:, 1:].copy(), cv2.INTER_LINEAR).reshape(-1, 2)
    round_trip = np.linalg.norm(pts_b + back - pts_a, axis=1)
    keep = inside & (round_trip < _FLOW_MAX_ROUND_TRIP_PX * scale)
    return pts_a[keep].astype(np.float64), pts_b[keep].astype(np.float64), int(textured.sum())


def _make_detector(detector: str, max_features: int) -> tuple[cv2.Feature2D, int]:
    """The OpenCV feature detector/descriptor and the norm its descriptors are compared with."""
    if detector == "orb":
        # A low FAST threshold keeps enough corners on small, smooth rendered frames.
        return cv2.ORB_create(nfeatures=max_features, fastThreshold=7), cv2.NORM_HAMMING
    if detector == "sift":
        return cv2.SIFT_create(nfeatures=max_features), cv2.NORM_L2
    raise ValueError(f"unknown detector {detector!r}, expected 'sift', 'orb' or 'flow'")


def scale_intrinsics(K: np.ndarray, scale: float) -> np.ndarray:
    """Intrinsics of an image resized by ``scale`` with ``cv2.resize`` (pixel centres at +0.5).

    Args:
        K: 3x3 intrinsic matrix [pixels].
        scale: resize factor (new size / old size).

    Returns:
        the 3x3 intrinsic matrix of the resized image [pixels].
    """
    K = np.asarray(K, dtype=np.float64)
    S = np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5], [0.0, 0.0, 1.0]])
    return S @ K


def _rotation_from_bearings(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least-squares rotation R with ``b ~ R a`` for unit bearing vectors ``a, b [N, 3]`` (Kabsch)."""
    H = a.T @ b  # (3, 3)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    return Vt.T @ np.diag([1.0, 1.0, d]) @ U.T


def _rotation_residual_px(R: np.ndarray, bear_a: np.ndarray, pts_b: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel distance between ``pts_b`` and ``bear_a`` rotated by R and projected with K."""
    proj = (K @ (R @ bear_a.T)).T  # (N, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = proj[:, :2] / proj[:, 2:3]
    res = np.linalg.norm(uv - pts_b, axis=1)
    # Points rotated behind camera b cannot be explained by this rotation.
    res[proj[:, 2] <= 0] = np.inf
    return res


def _sampson_px(E: np.ndarray, pts_a: np.ndarray, pts_b: np.ndarray, K: np.ndarray) -> np.ndarray:
    """First-order geometric (Sampson) distance of each match to the epipolar geometry [pixels]."""
    K_inv = np.linalg.inv(K)
    F = K_inv.T @ E @ K_inv
    xa = np.c_[pts_a, np.ones(len(pts_a))]  # (N, 3)
    xb = np.c_[pts_b, np.ones(len(pts_b))]  # (N, 3)
    Fxa = xa @ F.T  # (N, 3) epipolar lines in b
    Ftxb = xb @ F  # (N, 3) epipolar lines in a
    num = np.sum(xb * Fxa, axis=1) ** 2
    den = Fxa[:, 0] ** 2 + Fxa[:, 1] ** 2 + Ftxb[:, 0] ** 2 + Ftxb[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-300))


def estimate_relative_motion_detailed(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    K: np.ndarray,
    *,
    detector: str = "sift",
    robust_method: str = "usac_accurate",
    max_features: int = 3000,
    ratio: float = 0.75,
    ransac_threshold_px: float = 1.0,
    min_matches: int = 20,
    min_inliers: int = 15,
    rotation_only_ratio: float = 4.0,
    min_detect_size: int = 240,
) -> MotionEstimate:
    """Estimate the relative camera motion from frame a to frame b.

    Steps: 1. features (SIFT or ORB) on both frames, upscaled first when the shorter side
    is below ``min_detect_size`` so that small model frames still give keypoints;
    2. nearest-neighbour matching with Lowe's ratio test (``detector="flow"`` replaces steps 1
    and 2 by dense optical flow from a grid of textured points, kept where the backward flow
    leads back to the start: it finds correspondences on the smooth textures of small rendered
    frames, where SIFT often finds too few keypoints); 3. ``cv2.findEssentialMat`` with
    a RANSAC estimator; 4. ``cv2.recoverPose`` (cheirality check) on its inliers; 5. a
    pure-rotation check: a rotation is fitted to the inliers' bearing vectors, and if its
    median pixel residual is within ``rotation_only_ratio`` times the essential matrix's
    median Sampson error, the frames show no usable parallax. The essential matrix is then
    degenerate (any translation fits), so R comes from the rotation fit and the status is
    ``ROTATION_ONLY`` with ``t_unit = 0``.

    The default robust estimator is OpenCV's ``USAC_ACCURATE`` (RANSAC with local
    optimisation): on synthetic scenes plain ``cv2.RANSAC`` left 2-5 degree errors in the
    translation direction where ``USAC_ACCURATE`` stayed below 0.5 degree. Both are
    deterministic (fixed internal seeds).

    Args:
        frame_a: first frame, uint8 ``[H, W, 3]`` RGB (or ``[H, W]`` grey).
        frame_b: second frame, same size as ``frame_a``.
        K: 3x3 intrinsic matrix of both frames [pixels].
        detector: ``"sift"`` (sub-pixel keypoints, the default), ``"orb"`` (faster,
            finds more keypoints on very small frames, less accurate) or ``"flow"`` (dense
            optical flow; no keypoints, so ``max_features`` and ``ratio`` do not apply).
        robust_method: ``"usac_accurate"``, ``"usac_magsac"`` or ``"ransac"``.
        max_features: keypoints kept per frame.
        ratio: Lowe's ratio-test threshold (best / second-best descriptor distance).
        ransac_threshold_px: RANSAC epipolar distance threshold [pixels at detection scale].
        min_matches: fewer ratio-test matches than this gives ``TOO_FEW_MATCHES``.
        min_inliers: fewer pose inliers than this gives ``TOO_FEW_INLIERS``.
        rotation_only_ratio: pure-rotation residual / Sampson error below which the
            translation direction is considered unobservable (pure rotation gives 1-3).
        min_detect_size: frames whose shorter side is below this [pixels] are upscaled
            (integer factor, cubic) before detection; K is scaled to match.

    Returns:
        a :class:`MotionEstimate`; ``R``/``t_unit`` follow ``x_b = R x_a + t``.
    """
    gray_a = _to_gray(frame_a)
    gray_b = _to_gray(frame_b)
    if gray_a.shape != gray_b.shape:
        raise ValueError(f"frames must have the same size, got {gray_a.shape} and {gray_b.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be a 3x3 intrinsic matrix, got shape {K.shape}")
    if robust_method not in _ROBUST_METHODS:
        raise ValueError(f"unknown robust_method {robust_method!r}, expected one of {sorted(_ROBUST_METHODS)}")

    # 1. Features, on an upscaled copy of small frames.
    scale = max(1, int(math.ceil(min_detect_size / min(gray_a.shape))))
    if scale > 1:
        size = (gray_a.shape[1] * scale, gray_a.shape[0] * scale)
        gray_a = cv2.resize(gray_a, size, interpolation=cv2.INTER_CUBIC)
        gray_b = cv2.resize(gray_b, size, interpolation=cv2.INTER_CUBIC)
        K = scale_intrinsics(K, float(scale))
    counts: dict[str, Any] = {}
    if detector == "flow":
        pts_a, pts_b, textured = _flow_correspondences(gray_a, gray_b, scale)
        counts["num_features"] = (textured, textured)
        if textured < max(min_matches, 5):
            return MotionEstimate(MotionStatus.TOO_FEW_FEATURES, detail=f"{textured} textured points", **counts)
    else:
        det, norm = _make_detector(detector, max_features)
        kp_a, des_a = det.detectAndCompute(gray_a, None)
        kp_b, des_b = det.detectAndCompute(gray_b, None)
        n_feat = (len(kp_a), len(kp_b))
        counts["num_features"] = n_feat
        if des_a is None or des_b is None or min(n_feat) < max(min_matches, 5):
            return MotionEstimate(MotionStatus.TOO_FEW_FEATURES, detail=f"keypoints {n_feat}", **counts)

        # 2. Matching with the ratio test.
        knn = cv2.BFMatcher(norm).knnMatch(des_a, des_b, k=2)
        good = [pair[0] for pair in knn if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance]
        pts_a = np.array([kp_a[m.queryIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
        pts_b = np.array([kp_b[m.trainIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
    counts["num_matches"] = len(pts_a)
    if len(pts_a) < max(min_matches, 5):
        return MotionEstimate(MotionStatus.TOO_FEW_MATCHES, detail=f"{len(pts_a)} matches", **counts)

    # 3. Essential matrix, robustly.
    E, mask = cv2.findEssentialMat(
        pts_a, pts_b, K, method=_ROBUST_METHODS[robust_method], prob=0.999, threshold=ransac_threshold_px
    )
    if E is None or E.shape[0] < 3 or mask is None or int(mask.sum()) < 5:
        # Matches without any displacement (a still camera: the same view twice) leave E undefined;
        # a rotation alone still explains them, and that is the answer, not a failure.
        return _rotation_only_or_failed(pts_a, pts_b, K, ransac_threshold_px, min_inliers, counts)
    # Several stacked solutions can come back; the first is the best-scoring one.
    E = E[:3]
    inl = mask.ravel().astype(bool)
    pa, pb = pts_a[inl], pts_b[inl]

    # 4. Pose with the cheirality check, on the robust inliers only.
    # recoverPose drops points farther than distanceThresh baselines (50 by default), which
    # would reject every point of a short baseline; count them instead.
    n_pose, R, t, _, _ = cv2.recoverPose(E, pa, pb, K, distanceThresh=_MAX_DEPTH_BASELINES)

    # 5. Pure-rotation check (pure rotation satisfies any E = [t]x R, so E alone cannot tell).
    bear_a, bear_b = _bearings(pa, K), _bearings(pb, K)  # (N, 3) each
    R_rot = _rotation_from_bearings(bear_a, bear_b)
    # Refit once without gross outliers, which the epipolar test cannot reject under pure rotation.
    res = _rotation_residual_px(R_rot, bear_a, pb, K)
    keep = res < max(3.0 * ransac_threshold_px, 2.0 * float(np.median(res)))
    if keep.sum() >= 3:
        R_rot = _rotation_from_bearings(bear_a[keep], bear_b[keep])
        res = _rotation_residual_px(R_rot, bear_a, pb, K)
    counts["parallax_px"] = float(np.median(res)) / scale
    # The Sampson error is the noise level any two-view model can reach; a floor of 0.05 px
    # (native) keeps a lucky near-zero fit from declaring every pair translated.
    noise = max(float(np.median(_sampson_px(E, pa, pb, K))), 0.05 * scale)
    if float(np.median(res)) < rotation_only_ratio * noise:
        n_rot = int(np.sum(res < 3.0 * ransac_threshold_px))
        counts["num_inliers"] = n_rot
        if n_rot < min_inliers:
            return MotionEstimate(MotionStatus.TOO_FEW_INLIERS, detail=f"{n_rot} rotation inliers", **counts)
        return MotionEstimate(MotionStatus.ROTATION_ONLY, R=R_rot, t_unit=np.zeros(3), **counts)

    counts["num_inliers"] = int(n_pose)
    if int(n_pose) < min_inliers:
        return MotionEstimate(
            MotionStatus.TOO_FEW_INLIERS, detail=f"{int(n_pose)} pose inliers of {int(inl.sum())}", **counts
        )
    t = t.ravel().astype(np.float64)
    R = np.asarray(R, dtype=np.float64)
    return MotionEstimate(MotionStatus.OK, R=R, t_unit=t / np.linalg.norm(t), **counts)


def _bearings(points_px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit viewing rays ``[N, 3]`` of pixel points ``[N, 2]``."""
    rays = np.c_[points_px, np.ones(len(points_px))] @ np.linalg.inv(K).T
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _rotation_only_or_failed(pts_a: np.ndarray, pts_b: np.ndarray, K: np.ndarray, threshold_px: float,
                             min_inliers: int, counts: dict[str, Any]) -> MotionEstimate:
    """When no essential matrix fits: ROTATION_ONLY if one rotation carries the matches within the
    RANSAC threshold (median), else ESSENTIAL_FAILED."""
    bear_a, bear_b = _bearings(pts_a, K), _bearings(pts_b, K)
    R_rot = _rotation_from_bearings(bear_a, bear_b)
    res = _rotation_residual_px(R_rot, bear_a, pts_b, K)
    n_rot = int(np.sum(res < threshold_px))
    if float(np.median(res)) < threshold_px and n_rot >= min_inliers:
        counts = {**counts, "num_inliers": n_rot}
        return MotionEstimate(MotionStatus.ROTATION_ONLY, R=R_rot, t_unit=np.zeros(3), detail="no parallax", **counts)
    return MotionEstimate(MotionStatus.ESSENTIAL_FAILED, detail="no essential matrix", **counts)


def estimate_relative_motion(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    K: np.ndarray,
    **kwargs: float | int | str,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Relative motion ``(R [3x3], t_unit [3])`` from frame a to frame b, or None on failure.

    ``x_b = R x_a + t`` in OpenCV camera coordinates; ``t_unit`` is a unit vector, or zeros
    when the frames have no usable parallax (pure rotation). Use
    :func:`estimate_relative_motion_detailed` (same keyword arguments) for the reason of
    a failure and the match/inlier counts.

    Args:
        frame_a: first frame, uint8 ``[H, W, 3]``.
        frame_b: second frame, uint8 ``[H, W, 3]``.
        K: 3x3 intrinsic matrix [pixels].

    Returns:
        ``(R, t_unit)`` or None.
    """
    est = estimate_relative_motion_detailed(frame_a, frame_b, K, **kwargs)
    if not est.ok:
        return None
    return est.R, est.t_unit


def rotation_angle_deg(R: np.ndarray) -> float:
    """Rotation angle of a 3x3 rotation matrix [degrees], in [0, 180].

    Uses ``atan2(|axis * sin|, cos)`` rather than ``arccos`` so small angles stay accurate.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"expected a 3x3 rotation matrix, got shape {R.shape}")
    cos = 0.5 * (np.trace(R) - 1.0)
    sin = 0.5 * np.linalg.norm([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return math.degrees(math.atan2(sin, cos))


def rotation_error_deg(R_est: np.ndarray, R_true: np.ndarray) -> float:
    """Angle of ``R_est^T R_true`` [degrees]: the geodesic distance between two rotations."""
    return rotation_angle_deg(np.asarray(R_est, dtype=np.float64).T @ np.asarray(R_true, dtype=np.float64))


def translation_direction_error_deg(t_est: np.ndarray, t_true: np.ndarray) -> float:
    """Angle between the directions of two translation vectors [degrees], in [0, 180].

    Returns NaN when either vector is (near) zero: the true camera did not translate, or
    the estimate has no observable translation (``MotionStatus.ROTATION_ONLY``).
    """
    a = np.asarray(t_est, dtype=np.float64).reshape(3)
    b = np.asarray(t_true, dtype=np.float64).reshape(3)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < _MIN_TRANSLATION_NORM or nb < _MIN_TRANSLATION_NORM:
        return math.nan
    cos = float(np.dot(a, b) / (na * nb))
    sin = float(np.linalg.norm(np.cross(a, b)) / (na * nb))
    return math.degrees(math.atan2(sin, cos))


def motion_errors(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    K: np.ndarray,
    R_true: np.ndarray,
    t_true: np.ndarray,
    *,
    min_translation: float = 1e-6,
    **kwargs: float | int | str,
) -> tuple[float, float, MotionEstimate]:
    """Estimate the motion between two frames and compare it with the true motion.

    Args:
        frame_a: first frame, uint8 ``[H, W, 3]``.
        frame_b: second frame, uint8 ``[H, W, 3]``.
        K: 3x3 intrinsic matrix [pixels].
        R_true: true rotation (3x3), ``x_b = R_true x_a + t_true``.
        t_true: true translation (3,) [any length unit].
        min_translation: true translations shorter than this [same unit] have no
            direction, so their direction error is NaN.
        **kwargs: passed to :func:`estimate_relative_motion_detailed`.

    Returns:
        ``(rotation_error_deg, translation_dir_error_deg, estimate)``; errors are NaN when
        the estimate failed or is undefined.
    """
    est = estimate_relative_motion_detailed(frame_a, frame_b, K, **kwargs)
    if not est.ok:
        return math.nan, math.nan, est
    rot = rotation_error_deg(est.R, R_true)
    t_true = np.asarray(t_true, dtype=np.float64).reshape(3)
    if np.linalg.norm(t_true) < min_translation:
        return rot, math.nan, est
    return rot, translation_direction_error_deg(est.t_unit, t_true), est


def intrinsics_from_camera_info(K_flat9: np.ndarray) -> np.ndarray:
    """3x3 intrinsic matrix from ``sensor_msgs/CameraInfo.k`` (9 numbers, row-major) [pixels]."""
    k = np.asarray(K_flat9, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise ValueError(f"CameraInfo.k must have 9 numbers, got {k.size}")
    K = k.reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


def intrinsics_from_fov(width: int, height: int, fovy_deg: float) -> np.ndarray:
    """Pinhole intrinsics from the image size [pixels] and the vertical field of view [degrees].

    Square pixels (fx = fy) and the principal point at the image centre
    ``((W - 1) / 2, (H - 1) / 2)`` in OpenCV pixel coordinates; this matches MuJoCo cameras,
    whose ``fovy`` is vertical.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0.0 < fovy_deg < 180.0:
        raise ValueError(f"vertical field of view must be in (0, 180) degrees, got {fovy_deg}")
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def relative_pose(T_w_a: np.ndarray, T_w_b: np.ndarray) -> np.ndarray:
    """Pose of frame b in frame a, ``T_a_b = T_w_a^-1 T_w_b``, from two 4x4 world poses."""
    T_w_a = np.asarray(T_w_a, dtype=np.float64)
    T_w_b = np.asarray(T_w_b, dtype=np.float64)
    if T_w_a.shape != (4, 4) or T_w_b.shape != (4, 4):
        raise ValueError(f"poses must be 4x4 matrices, got {T_w_a.shape} and {T_w_b.shape}")
    R, p = T_w_a[:3, :3], T_w_a[:3, 3]
    inv = np.eye(4)
    inv[:3, :3] = R.T
    inv[:3, 3] = -R.T @ p
    return inv @ T_w_b


def motion_from_relative_pose(T_a_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert the pose of camera b in camera a (4x4) into point motion ``x_b = R x_a + t``.

    Since ``x_a = R_ab x_b + t_ab``, ``R = R_ab^T`` and ``t = -R_ab^T t_ab``; ``t`` keeps
    the pose's length unit (normalise it to compare with ``t_unit``). Both cameras must
    use the optical convention (see :func:`optical_from_body_pose`).

    Returns:
        ``(R [3x3], t [3])``.
    """
    T = np.asarray(T_a_b, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_a_b must be a 4x4 matrix, got shape {T.shape}")
    R_ab, t_ab = T[:3, :3], T[:3, 3]
    return R_ab.T.copy(), -R_ab.T @ t_ab


def optical_from_body_pose(T_w_body: np.ndarray) -> np.ndarray:
    """Pose of the optical frame (x right, y down, z forward) from a body-style camera pose.

    Args:
        T_w_body: 4x4 pose of a camera frame with x forward, y left, z up (ROS body
            convention, e.g. ``/camera/pose``), in any parent frame.

    Returns:
        the 4x4 pose of the optical frame at the same place, in the same parent frame.
    """
    T = np.asarray(T_w_body, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"pose must be a 4x4 matrix, got shape {T.shape}")
    out = T.copy()
    out[:3, :3] = T[:3, :3] @ R_BODY_OPTICAL
    return out
