"""The simulator's shared types: episode timing (:class:`SimSettings`), poses, twists and one published tick.

Frames (REP-103 / REP-105): the world is z up; robot body frames are x forward, y left, z up; camera
poses are those of the *optical* frame: z forward (viewing direction), x right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimSettings:
    """Timing and image size of one simulated episode."""

    seconds: float = 10.0  # [s] episode length
    image_width: int = 128  # [px]
    image_height: int = 128  # [px]
    camera_rate_hz: int = 10  # [Hz] images (and camera info)
    state_rate_hz: int = 30  # [Hz] poses, commands and odometry; a multiple of camera_rate_hz

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.image_width < 16 or self.image_height < 16:
            raise ValueError(f"image size must be at least 16x16 px, got {self.image_width}x{self.image_height}")
        if self.camera_rate_hz <= 0 or self.state_rate_hz <= 0 or self.state_rate_hz % self.camera_rate_hz != 0:
            raise ValueError(
                f"state_rate_hz ({self.state_rate_hz}) must be a positive multiple of camera_rate_hz ({self.camera_rate_hz})"
            )
        if round(self.seconds * self.camera_rate_hz) < 2:  # a bag of one frame has no motion to learn or score
            raise ValueError(f"an episode of {self.seconds} s at {self.camera_rate_hz} Hz has fewer than 2 camera frames")

    @property
    def num_ticks(self) -> int:
        """Number of state ticks in the episode (state at t = 0, 1/rate, ...)."""
        return int(round(self.seconds * self.state_rate_hz))

    def tick_stamp_ns(self, tick: int) -> int:
        """Time of ``tick`` since the episode start [ns], exact for integer rates."""
        return tick * 1_000_000_000 // self.state_rate_hz


@dataclass(frozen=True)
class Pose:
    """A rigid pose: ``position`` [m] (3) and unit quaternion ``quat_xyzw`` (4), in the frame named by its user."""

    position: np.ndarray
    quat_xyzw: np.ndarray


@dataclass(frozen=True)
class BodyTwist:
    """A body-frame velocity: ``linear`` [m/s] (3) and ``angular`` [rad/s] (3), x forward, y left, z up."""

    linear: np.ndarray
    angular: np.ndarray


@dataclass(frozen=True)
class SimTick:
    """Everything the simulator publishes at one state tick. Fields that do not apply are ``None``."""

    stamp_ns: int  # [ns] since the episode start
    camera_pose: Pose  # optical frame (z forward, x right, y down) in the world frame
    image: np.ndarray | None  # uint8 [H, W, 3] rgb, only on camera ticks
    command: BodyTwist | None = None  # body-frame velocity command (explore, rover)
    ee_pose: Pose | None = None  # end-effector in the arm's base frame (arm)
    gripper_opening_m: float | None = None  # [m] distance between the fingers (arm)
    odom_pose: Pose | None = None  # base_link in the odom (= world) frame (rover)
    odom_twist: BodyTwist | None = None  # measured base_link velocity in the body frame (rover)
