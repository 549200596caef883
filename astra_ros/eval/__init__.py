"""Rollout evaluation: image metrics and baselines, camera-motion alignment, reports.

:mod:`astra_ros.eval.metrics` (PSNR, SSIM, copy-last and shuffled-action baselines),
:mod:`astra_ros.eval.dynamics` (pooled-MSE and changed-pixel PSNR, bootstrap intervals, per-second gains),
:mod:`astra_ros.eval.frames` (the per-clip frames of ``astra-eval --save-frames``),
:mod:`astra_ros.eval.motion` (relative camera motion from two frames with OpenCV) and
:mod:`astra_ros.eval.report` (plots, image grid, video, markdown) need neither torch nor rclpy.
"""

from astra_ros.eval.dynamics import CHANGE_THRESHOLD, changed_mask, clip_errors, dynamics_summary, pooled_psnr
from astra_ros.eval.frames import load_clip_frames, save_clip_frames, scenario_of
from astra_ros.eval.metrics import (
    action_sensitivity,
    copy_last_baseline,
    mse,
    psnr,
    shuffled_actions_indices,
    ssim,
)
from astra_ros.eval.motion import (
    MotionEstimate,
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

__all__ = [
    "CHANGE_THRESHOLD",
    "changed_mask",
    "clip_errors",
    "dynamics_summary",
    "pooled_psnr",
    "load_clip_frames",
    "save_clip_frames",
    "scenario_of",
    "action_sensitivity",
    "copy_last_baseline",
    "mse",
    "psnr",
    "shuffled_actions_indices",
    "ssim",
    "MotionEstimate",
    "MotionStatus",
    "estimate_relative_motion",
    "estimate_relative_motion_detailed",
    "intrinsics_from_camera_info",
    "intrinsics_from_fov",
    "motion_errors",
    "motion_from_relative_pose",
    "optical_from_body_pose",
    "relative_pose",
    "rotation_angle_deg",
    "rotation_error_deg",
    "translation_direction_error_deg",
    "image_grid",
    "plot_metrics",
    "write_metrics_json",
    "write_report",
    "write_video",
]
