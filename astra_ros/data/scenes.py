"""Headless MuJoCo scenes for the three simulator scenarios, generated per seed, and their stepping.

* ``explore``: a free camera flies smooth random 6-DoF trajectories through a textured room with
  objects (camera modality).
* ``arm``: a 5-joint arm with a 2-finger gripper (position actuators) moves between random targets
  and pushes objects on a table, seen by a fixed camera (robot modality).
* ``rover``: a kinematic planar robot with an onboard camera follows random smooth twist commands
  (v_x, yaw rate) in a room with landmarks (twist modality).

Every random choice (textures, colours, object placement, lighting, trajectory) comes from the seed,
so the same seed gives the same episode and held-out seeds are new places.

Frames (REP-103 / REP-105): the world is z up; robot body frames are x forward, y left, z up; camera
poses are those of the *optical* frame: z forward (viewing direction), x right, y down.
Rendering uses ``MUJOCO_GL`` (set to ``egl`` here unless the caller chose another backend).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless by default; must be set before mujoco is imported

import logging  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Iterator  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from astra_ros.data.geometry import (  # noqa: E402
    PinholeIntrinsics,
    matrix_to_quaternion,
    quaternion_to_matrix,
    yaw_pitch_to_matrix,
)

logger = logging.getLogger(__name__)

SCENARIOS: tuple[str, ...] = ("explore", "arm", "rover")


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


def _rgb(rng: np.random.Generator, low: float = 0.1, high: float = 0.95) -> str:
    return " ".join(f"{value:.3f}" for value in rng.uniform(low, high, size=3))


def _vivid_rgba(rng: np.random.Generator) -> str:
    """A saturated colour so objects stand out from the textures."""
    hue = rng.uniform(0.0, 1.0)
    channels = np.clip(np.abs((hue * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)
    value = rng.uniform(0.55, 1.0)
    saturation = rng.uniform(0.55, 1.0)
    colour = value * (1.0 - saturation + saturation * channels)
    return " ".join(f"{c:.3f}" for c in colour) + " 1"


def _random_texture(rng: np.random.Generator, name: str, size: int = 256) -> str:
    """A 2D builtin texture (checker, gradient or random marks) with seed-dependent colours."""
    builtin = rng.choice(["checker", "gradient", "checker", "flat"])
    mark = rng.choice(["none", "edge", "random", "cross"]) if builtin != "flat" else "random"
    extra = f' random="{rng.uniform(0.02, 0.15):.3f}" markrgb="{_rgb(rng)}"' if mark == "random" else ""
    if mark in ("edge", "cross"):
        extra = f' markrgb="{_rgb(rng)}"'
    return (
        f'<texture name="{name}" type="2d" builtin="{builtin}" rgb1="{_rgb(rng)}" rgb2="{_rgb(rng)}" '
        f'mark="{mark}"{extra} width="{size}" height="{size}"/>'
    )


def _look_at_xyaxes(position: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` of a camera at ``position`` looking at ``target`` with the world z axis up."""
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.5f}" for v in np.concatenate([right, up]))


def _lights(rng: np.random.Generator, half_x: float, half_y: float, height: float) -> str:
    lights = []
    for index in range(int(rng.integers(1, 4))):
        position = (rng.uniform(-half_x, half_x) * 0.7, rng.uniform(-half_y, half_y) * 0.7, height * 0.95)
        diffuse = rng.uniform(0.35, 0.8)
        lights.append(
            f'<light name="light{index}" pos="{position[0]:.3f} {position[1]:.3f} {position[2]:.3f}" dir="0 0 -1" '
            f'diffuse="{diffuse:.3f} {diffuse:.3f} {diffuse:.3f}" castshadow="false"/>'
        )
    return "\n".join(lights)


@dataclass(frozen=True)
class _Obstacle:
    x: float
    y: float
    radius: float  # [m] footprint radius used to keep the moving camera out of it


def _room_mjcf(
    rng: np.random.Generator, half_x: float, half_y: float, height: float, settings: SimSettings
) -> tuple[str, str]:
    """Assets and world-body MJCF of a textured room (floor, 4 walls, ceiling) centred on the origin."""
    assets = "\n".join(
        [
            _random_texture(rng, "floor_tex"),
            _random_texture(rng, "wall_tex"),
            _random_texture(rng, "ceiling_tex"),
            f'<material name="floor_mat" texture="floor_tex" texrepeat="{rng.uniform(1, 4):.2f} {rng.uniform(1, 4):.2f}" texuniform="true"/>',
            f'<material name="wall_mat" texture="wall_tex" texrepeat="{rng.uniform(1.5, 4):.2f} {rng.uniform(1.5, 4):.2f}" texuniform="true"/>',
            '<material name="ceiling_mat" texture="ceiling_tex" texrepeat="1 1" texuniform="true"/>',
        ]
    )
    thickness = 0.1
    walls = [
        ("wall_n", 0.0, half_y + thickness, half_x + thickness, thickness),
        ("wall_s", 0.0, -half_y - thickness, half_x + thickness, thickness),
        ("wall_e", half_x + thickness, 0.0, thickness, half_y + thickness),
        ("wall_w", -half_x - thickness, 0.0, thickness, half_y + thickness),
    ]
    bodies = [
        f'<geom name="floor" type="plane" size="{half_x + 1:.3f} {half_y + 1:.3f} 0.1" material="floor_mat"/>',
        f'<geom name="ceiling" type="box" pos="0 0 {height + thickness:.3f}" size="{half_x:.3f} {half_y:.3f} {thickness}" material="ceiling_mat"/>',
    ]
    for name, x, y, size_x, size_y in walls:
        bodies.append(
            f'<geom name="{name}" type="box" pos="{x:.3f} {y:.3f} {height / 2:.3f}" '
            f'size="{size_x:.3f} {size_y:.3f} {height / 2:.3f}" material="wall_mat"/>'
        )
    bodies.append(_wall_posters_mjcf(rng, half_x, half_y, height))
    bodies.append(_lights(rng, half_x, half_y, height))
    return assets, "\n".join(bodies)


def _wall_posters_mjcf(rng: np.random.Generator, half_x: float, half_y: float, height: float) -> str:
    """Flat coloured panels on the walls, so every view of a wall has landmarks."""
    panels = []
    for index in range(int(rng.integers(8, 16))):
        wall = int(rng.integers(4))
        half_width = rng.uniform(0.15, 0.6)
        half_height = rng.uniform(0.15, 0.6)
        z = rng.uniform(half_height + 0.1, height - half_height - 0.1)
        along = rng.uniform(-1.0, 1.0)
        if wall < 2:
            x, y = along * (half_x - half_width), (half_y - 0.01) * (1 if wall == 0 else -1)
            size = f"{half_width:.3f} 0.01 {half_height:.3f}"
        else:
            x, y = (half_x - 0.01) * (1 if wall == 2 else -1), along * (half_y - half_width)
            size = f"0.01 {half_width:.3f} {half_height:.3f}"
        panels.append(
            f'<geom name="poster{index}" type="box" pos="{x:.3f} {y:.3f} {z:.3f}" size="{size}" '
            f'rgba="{_vivid_rgba(rng)}" contype="0" conaffinity="0"/>'
        )
    return "\n".join(panels)


def _room_objects_mjcf(
    rng: np.random.Generator, half_x: float, half_y: float, count: int, keep_clear_radius: float
) -> tuple[str, str, list[_Obstacle]]:
    """Static coloured boxes, cylinders and spheres on the floor, away from the start area at the origin."""
    assets = []
    geoms = []
    obstacles: list[_Obstacle] = []
    for index in range(count):
        for _ in range(50):
            x = rng.uniform(-half_x + 0.4, half_x - 0.4)
            y = rng.uniform(-half_y + 0.4, half_y - 0.4)
            radius = rng.uniform(0.12, 0.4)
            clear_of_start = np.hypot(x, y) > keep_clear_radius + radius
            clear_of_others = all(np.hypot(x - o.x, y - o.y) > o.radius + radius + 0.1 for o in obstacles)
            if clear_of_start and clear_of_others:
                break
        else:
            continue
        kind = rng.choice(["box", "cylinder", "sphere", "box", "cylinder"])
        material = ""
        if rng.uniform() < 0.35:
            assets.append(_random_texture(rng, f"object_tex{index}", size=64))
            assets.append(f'<material name="object_mat{index}" texture="object_tex{index}" texrepeat="2 2"/>')
            material = f' material="object_mat{index}"'
        rgba = _vivid_rgba(rng)
        if kind == "box":
            half_height = rng.uniform(0.1, 0.8)
            size = f"{radius * 0.7:.3f} {radius * 0.7:.3f} {half_height:.3f}"
            z = half_height
            yaw = rng.uniform(0.0, np.pi)
            geoms.append(
                f'<geom name="object{index}" type="box" pos="{x:.3f} {y:.3f} {z:.3f}" euler="0 0 {yaw:.3f}" '
                f'size="{size}" rgba="{rgba}"{material}/>'
            )
        elif kind == "cylinder":
            half_height = rng.uniform(0.1, 0.9)
            geoms.append(
                f'<geom name="object{index}" type="cylinder" pos="{x:.3f} {y:.3f} {half_height:.3f}" '
                f'size="{radius:.3f} {half_height:.3f}" rgba="{rgba}"{material}/>'
            )
        else:
            geoms.append(
                f'<geom name="object{index}" type="sphere" pos="{x:.3f} {y:.3f} {radius:.3f}" '
                f'size="{radius:.3f}" rgba="{rgba}"{material}/>'
            )
        obstacles.append(_Obstacle(float(x), float(y), float(radius)))
    return "\n".join(assets), "\n".join(geoms), obstacles


def _mjcf_document(assets: str, worldbody: str, settings: SimSettings, extra: str = "") -> str:
    return f"""<mujoco model="astra_scene">
  <compiler angle="radian" autolimits="true"/>
  <visual>
    <global offwidth="{max(settings.image_width, 64)}" offheight="{max(settings.image_height, 64)}"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.3 0.3 0.3"/>
    <quality shadowsize="0"/>
  </visual>
  <asset>
{assets}
  </asset>
{extra}
  <worldbody>
{worldbody}
  </worldbody>
</mujoco>"""


class Scenario:
    """Base class of a simulated episode: owns the MuJoCo model, data and renderer.

    Subclasses build their MJCF in ``__init__`` and implement :meth:`_advance` (one state tick) and
    :meth:`_tick_state`. Use as a context manager or call :meth:`close` to free the GL context.
    """

    name: str = ""
    camera_name: str = "camera"

    def __init__(self, mjcf: str, settings: SimSettings) -> None:
        self.settings = settings
        self.model = mujoco.MjModel.from_xml_string(mjcf)
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        self._camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera_name)
        mujoco.mj_forward(self.model, self.data)

    @property
    def intrinsics(self) -> PinholeIntrinsics:
        """Pinhole intrinsics of the rendered camera, from MuJoCo's vertical field of view."""
        return PinholeIntrinsics.from_vertical_fov(
            float(self.model.cam_fovy[self._camera_id]), self.settings.image_width, self.settings.image_height
        )

    def render(self) -> np.ndarray:
        """Render the scene camera: ``uint8 [H, W, 3]`` rgb."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.settings.image_height, self.settings.image_width)
        self._renderer.update_scene(self.data, camera=self._camera_id)
        return self._renderer.render().copy()

    def camera_pose(self) -> Pose:
        """Pose of the camera optical frame (z forward, x right, y down) in the world frame."""
        # MuJoCo cameras look along -z with y up; the optical frame flips y and z.
        world_from_mjcam = self.data.cam_xmat[self._camera_id].reshape(3, 3)
        world_from_optical = world_from_mjcam @ np.diag([1.0, -1.0, -1.0])
        return Pose(self.data.cam_xpos[self._camera_id].copy(), matrix_to_quaternion(world_from_optical))

    def ticks(self) -> Iterator[SimTick]:
        """Run the episode: yield one :class:`SimTick` per state tick, with an image on camera ticks."""
        ticks_per_image = self.settings.state_rate_hz // self.settings.camera_rate_hz
        tick_seconds = 1.0 / self.settings.state_rate_hz
        for tick in range(self.settings.num_ticks):
            if tick > 0:
                self._advance(tick_seconds)
            image = self.render() if tick % ticks_per_image == 0 else None
            yield self._tick_state(self.settings.tick_stamp_ns(tick), image)

    def advance(self, seconds: float) -> None:
        """Advance the scene by one state tick of ``seconds`` [s] (for live drivers such as the sim node)."""
        self._advance(seconds)

    def state(self, stamp_ns: int, render: bool) -> SimTick:
        """The current state as a :class:`SimTick` stamped ``stamp_ns``, with a rendered image if ``render``."""
        return self._tick_state(stamp_ns, self.render() if render else None)

    def close(self) -> None:
        """Free the renderer's GL context."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "Scenario":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _advance(self, seconds: float) -> None:
        raise NotImplementedError

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Kinematic rigs: explore (free camera) and rover (planar robot)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Manoeuvre:
    """A target command held for a while: body-frame velocities and rates."""

    forward: float = 0.0  # [m/s]
    strafe: float = 0.0  # [m/s] positive = left
    climb: float = 0.0  # [m/s] positive = up
    yaw_rate: float = 0.0  # [rad/s] about the world z axis, positive = turn left
    pitch_rate: float = 0.0  # [rad/s] about the body y axis, positive = nose down


class _KinematicRig:
    """A body moved by smoothed random commands inside a rectangular room, steering clear of obstacles.

    State: position [m], yaw and pitch [rad] (no roll, so the horizon stays level). Commands are
    low-passed towards the current manoeuvre's target, so trajectories are smooth; the applied
    (published) command is exactly what moves the body.
    """

    smoothing_s = 0.35  # [s] time constant of the command low-pass
    lookahead_s = 0.9  # [s] how far ahead the obstacle check looks
    wall_margin_m = 0.45  # [m] closest the body may plan to get to a wall
    hard_margin_m = 0.2  # [m] closest the body may ever get to a wall

    def __init__(
        self,
        rng: np.random.Generator,
        half_x: float,
        half_y: float,
        obstacles: list[_Obstacle],
        *,
        planar: bool,
        height_range_m: tuple[float, float],
        pitch_limit_rad: float,
    ) -> None:
        self.rng = rng
        self.half_x = half_x
        self.half_y = half_y
        self.obstacles = obstacles
        self.planar = planar
        self.height_range_m = height_range_m
        self.pitch_limit_rad = pitch_limit_rad
        self.position = np.array([0.0, 0.0, float(np.mean(height_range_m))])
        self.yaw = float(rng.uniform(-np.pi, np.pi))
        self.pitch = 0.0
        self.command = _Manoeuvre()
        self.target = self._random_manoeuvre()
        self.target_time_left = float(rng.uniform(1.0, 2.5))
        self.external: _Manoeuvre | None = None  # set by set_command(): follow it instead of random manoeuvres

    def _random_manoeuvre(self) -> _Manoeuvre:
        rng = self.rng
        if self.planar:
            kind = rng.choice(["forward", "forward_turn", "turn", "back", "stop"], p=[0.35, 0.3, 0.2, 0.07, 0.08])
        else:
            kind = rng.choice(
                ["forward", "forward_turn", "turn", "strafe", "back", "pitch", "climb", "stop"],
                p=[0.25, 0.2, 0.15, 0.12, 0.06, 0.09, 0.06, 0.07],
            )
        turn = float(rng.choice([-1.0, 1.0]))
        if kind == "forward":
            return _Manoeuvre(forward=float(rng.uniform(0.3, 0.9)))
        if kind == "forward_turn":
            return _Manoeuvre(forward=float(rng.uniform(0.2, 0.7)), yaw_rate=turn * float(rng.uniform(0.3, 0.9)))
        if kind == "turn":
            return _Manoeuvre(yaw_rate=turn * float(rng.uniform(0.4, 1.1)))
        if kind == "strafe":
            return _Manoeuvre(strafe=turn * float(rng.uniform(0.25, 0.6)))
        if kind == "back":
            return _Manoeuvre(forward=-float(rng.uniform(0.2, 0.4)))
        if kind == "pitch":
            return _Manoeuvre(pitch_rate=turn * float(rng.uniform(0.2, 0.4)), forward=float(rng.uniform(0.0, 0.3)))
        if kind == "climb":
            return _Manoeuvre(climb=turn * float(rng.uniform(0.15, 0.35)), forward=float(rng.uniform(0.0, 0.3)))
        return _Manoeuvre()

    def _blocked(self, point: np.ndarray, wall_margin: float, obstacle_margin: float) -> bool:
        if abs(point[0]) > self.half_x - wall_margin or abs(point[1]) > self.half_y - wall_margin:
            return True
        return any(np.hypot(point[0] - o.x, point[1] - o.y) < o.radius + obstacle_margin for o in self.obstacles)

    def rotation(self) -> np.ndarray:
        """World-from-body rotation (x forward, y left, z up)."""
        return yaw_pitch_to_matrix(self.yaw, self.pitch)

    def _linear_velocity_world(self, manoeuvre: _Manoeuvre) -> np.ndarray:
        body_velocity = np.array([manoeuvre.forward, manoeuvre.strafe, manoeuvre.climb])
        return self.rotation() @ body_velocity

    def _avoiding_target(self) -> _Manoeuvre:
        """Turn in place towards the room centre when the planned motion heads into a wall or object."""
        ahead = self.position + self._linear_velocity_world(self.target) * self.lookahead_s
        heading = self.position + self.rotation() @ np.array([0.6, 0.0, 0.0])
        moving_forward = self.target.forward > 0.05
        if not self._blocked(ahead, self.wall_margin_m, 0.5) and not (
            moving_forward and self._blocked(heading, self.wall_margin_m, 0.5)
        ):
            return self.target
        to_centre = np.arctan2(-self.position[1], -self.position[0])
        turn_direction = 1.0 if np.sin(to_centre - self.yaw) >= 0.0 else -1.0
        return _Manoeuvre(yaw_rate=turn_direction * 0.9)

    def set_command(self, twist: BodyTwist) -> None:
        """Follow ``twist`` from the next tick on, instead of the random manoeuvres (they never resume).

        Used: linear x (forward), y (strafe, left), z (climb) [m/s], angular z (yaw rate, left) and y
        (pitch rate, nose down) [rad/s]; a planar rig uses forward and yaw rate only. The command is
        applied at once (no smoothing), still within the room's hard limits.
        """
        linear = np.asarray(twist.linear, dtype=np.float64)
        angular = np.asarray(twist.angular, dtype=np.float64)
        self.external = _Manoeuvre(float(linear[0]), float(linear[1]), float(linear[2]), float(angular[2]), float(angular[1]))

    def step(self, seconds: float) -> None:
        """Advance the rig by ``seconds`` [s] with the command held from the previous tick, then pick the next command."""
        self._integrate(seconds)
        if self.external is not None:
            self._update_command(seconds)
            return
        self.target_time_left -= seconds
        if self.target_time_left <= 0.0:
            self.target = self._random_manoeuvre()
            self.target_time_left = float(self.rng.uniform(1.0, 3.0))
        self._update_command(seconds)

    def _integrate(self, seconds: float) -> None:
        # Zero-order hold of the published command over the tick.
        velocity_world = self._linear_velocity_world(self.command)
        self.position = self.position + velocity_world * seconds
        self.yaw = float((self.yaw + self.command.yaw_rate * seconds + np.pi) % (2.0 * np.pi) - np.pi)
        self.pitch = float(self.pitch + self.command.pitch_rate * seconds)

    def _update_command(self, seconds: float) -> None:
        target = self._avoiding_target() if self.external is None else self.external
        blend = 1.0 - np.exp(-seconds / self.smoothing_s) if self.external is None else 1.0
        current = self.command
        command = _Manoeuvre(
            *(c + blend * (t - c) for c, t in zip(
                (current.forward, current.strafe, current.climb, current.yaw_rate, current.pitch_rate),
                (target.forward, target.strafe, target.climb, target.yaw_rate, target.pitch_rate),
            ))
        )
        # Hard limits: drop the components that would leave the allowed volume within one tick, so
        # the published command stays the true motion.
        # Checked along the whole step, not only where it ends: a fast command would jump an obstacle.
        move = self._linear_velocity_world(command) * seconds
        samples = max(1, int(np.ceil(np.linalg.norm(move) / 0.05)))
        if any(self._blocked(self.position + move * (k / samples), self.hard_margin_m, 0.3)
               for k in range(1, samples + 1)):
            command = _Manoeuvre(yaw_rate=command.yaw_rate, pitch_rate=command.pitch_rate)
        low, high = self.height_range_m
        next_height = self.position[2] + self._linear_velocity_world(command)[2] * seconds
        if not self.planar and not (low <= next_height <= high):
            command = _Manoeuvre(forward=0.0, strafe=command.strafe, yaw_rate=command.yaw_rate, pitch_rate=command.pitch_rate)
            if not (low <= self.position[2] + self._linear_velocity_world(command)[2] * seconds <= high):
                command = _Manoeuvre(yaw_rate=command.yaw_rate, pitch_rate=command.pitch_rate)
        if abs(self.pitch + command.pitch_rate * seconds) > self.pitch_limit_rad:
            command = _Manoeuvre(command.forward, command.strafe, command.climb, command.yaw_rate, 0.0)
        if self.planar:
            command = _Manoeuvre(forward=command.forward, yaw_rate=command.yaw_rate)
        self.command = command

    def body_twist(self) -> BodyTwist:
        """The current command as a body-frame twist (linear [m/s], angular [rad/s])."""
        c = self.command
        # Angular velocity in the body frame of a yaw rate about world z plus a pitch rate about body y.
        yaw_axis_body = self.rotation().T @ np.array([0.0, 0.0, 1.0])
        angular = c.yaw_rate * yaw_axis_body + np.array([0.0, c.pitch_rate, 0.0])
        return BodyTwist(np.array([c.forward, c.strafe, c.climb]), angular)

    def body_pose(self) -> Pose:
        """Pose of the body frame in the world frame."""
        return Pose(self.position.copy(), matrix_to_quaternion(self.rotation()))


class _RigScenario(Scenario):
    """A scenario whose camera rides a mocap body moved by a :class:`_KinematicRig` (explore, rover)."""

    rig: "_KinematicRig"

    def _place_rig(self) -> None:
        pose = self.rig.body_pose()
        self.data.mocap_pos[0] = pose.position
        self.data.mocap_quat[0] = np.roll(pose.quat_xyzw, 1)  # MuJoCo stores quaternions as w, x, y, z
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def set_command(self, twist: BodyTwist) -> None:
        """Drive the rig with a body-frame twist from now on (see :meth:`_KinematicRig.set_command`)."""
        self.rig.set_command(twist)

    def _advance(self, seconds: float) -> None:
        self.rig.step(seconds)
        self._place_rig()


class ExploreScenario(_RigScenario):
    """A free camera flying smooth random 6-DoF trajectories through a textured room with objects."""

    name = "explore"

    def __init__(self, seed: int, settings: SimSettings = SimSettings()) -> None:
        rng = np.random.default_rng([seed, 1])
        half_x = float(rng.uniform(2.5, 4.0))
        half_y = float(rng.uniform(2.5, 4.0))
        height = float(rng.uniform(2.6, 3.4))
        room_assets, room_bodies = _room_mjcf(rng, half_x, half_y, height, settings)
        object_assets, object_geoms, obstacles = _room_objects_mjcf(
            rng, half_x, half_y, int(rng.integers(12, 20)), keep_clear_radius=0.9
        )
        fovy = float(rng.uniform(55.0, 75.0))
        # The camera rides a mocap body whose frame is the REP-103 body (x forward, y left, z up);
        # MuJoCo's camera x = body -y (right), camera y = body z (up), so it looks along body x.
        rig_body = (
            '<body name="rig" mocap="true">'
            f'<camera name="camera" pos="0 0 0" xyaxes="0 -1 0 0 0 1" fovy="{fovy:.2f}"/>'
            "</body>"
        )
        mjcf = _mjcf_document(room_assets + "\n" + object_assets, room_bodies + "\n" + object_geoms + "\n" + rig_body, settings)
        super().__init__(mjcf, settings)
        self.rig = _KinematicRig(
            rng, half_x, half_y, obstacles, planar=False, height_range_m=(0.5, min(2.0, height - 0.4)), pitch_limit_rad=0.35
        )
        self._place_rig()

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        return SimTick(stamp_ns, self.camera_pose(), image, command=self.rig.body_twist())


class RoverScenario(_RigScenario):
    """A kinematic planar robot with an onboard camera, driven by smooth random (v_x, yaw rate) commands."""

    name = "rover"
    camera_height_m = 0.3  # [m] camera above the floor
    camera_forward_m = 0.18  # [m] camera ahead of base_link

    def __init__(self, seed: int, settings: SimSettings = SimSettings()) -> None:
        rng = np.random.default_rng([seed, 3])
        half_x = float(rng.uniform(2.5, 4.0))
        half_y = float(rng.uniform(2.5, 4.0))
        height = float(rng.uniform(2.2, 3.0))
        room_assets, room_bodies = _room_mjcf(rng, half_x, half_y, height, settings)
        object_assets, object_geoms, obstacles = _room_objects_mjcf(
            rng, half_x, half_y, int(rng.integers(12, 20)), keep_clear_radius=0.8
        )
        fovy = float(rng.uniform(60.0, 80.0))
        camera_tilt = float(rng.uniform(0.0, 12.0))  # [deg] downwards
        tilt = np.radians(camera_tilt)
        # Body frame x forward, y left, z up; the camera looks along body x tilted down by camera_tilt.
        camera_y_axis = f"{np.sin(tilt):.5f} 0 {np.cos(tilt):.5f}"
        chassis_rgba = _vivid_rgba(rng)
        rover_body = f"""<body name="rover" mocap="true">
  <geom type="box" pos="-0.05 0 0.12" size="0.2 0.14 0.06" rgba="{chassis_rgba}" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="0.08 0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="0.08 -0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="-0.18 0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <geom type="cylinder" pos="-0.18 -0.16 0.06" euler="1.5708 0 0" size="0.06 0.02" rgba="0.1 0.1 0.1 1" contype="0" conaffinity="0"/>
  <camera name="camera" pos="{self.camera_forward_m} 0 {self.camera_height_m}" xyaxes="0 -1 0 {camera_y_axis}" fovy="{fovy:.2f}"/>
</body>"""
        mjcf = _mjcf_document(room_assets + "\n" + object_assets, room_bodies + "\n" + object_geoms + "\n" + rover_body, settings)
        super().__init__(mjcf, settings)
        self.rig = _KinematicRig(rng, half_x, half_y, obstacles, planar=True, height_range_m=(0.0, 0.0), pitch_limit_rad=0.0)
        self._place_rig()

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        twist = self.rig.body_twist()
        return SimTick(
            stamp_ns,
            self.camera_pose(),
            image,
            command=twist,
            odom_pose=self.rig.body_pose(),
            odom_twist=twist,
        )


# ---------------------------------------------------------------------------------------------
# Arm on a table
# ---------------------------------------------------------------------------------------------


class ArmScenario(Scenario):
    """A 5-joint arm with a 2-finger gripper pushing objects on a table, seen by a fixed camera.

    Joints: base yaw, shoulder pitch, elbow pitch, wrist pitch, wrist roll, and two slide fingers,
    all driven by position actuators. Targets are reached by analytic inverse kinematics with the
    gripper pointing down, and joint targets follow minimum-jerk profiles, so motion is smooth.
    The end-effector frame (site ``ee``, between the fingertips) is reported in the ``base`` frame.
    """

    name = "arm"
    table_height_m = 0.4  # [m] table top above the floor
    base_to_shoulder_m = 0.16  # [m]
    upper_arm_m = 0.32  # [m]
    forearm_m = 0.28  # [m]
    wrist_to_ee_m = 0.16  # [m] wrist joint to the point between the fingertips
    finger_travel_m = 0.04  # [m] opening of each finger
    physics_substeps = 16  # MuJoCo steps per state tick

    def __init__(self, seed: int, settings: SimSettings = SimSettings()) -> None:
        rng = np.random.default_rng([seed, 2])
        self.rng = rng
        table_half = (0.45, 0.6)
        table_centre_x = 0.4
        arm_rgba = _vivid_rgba(rng)
        assets = "\n".join(
            [
                _random_texture(rng, "floor_tex"),
                _random_texture(rng, "table_tex"),
                _random_texture(rng, "wall_tex"),
                f'<texture name="sky" type="skybox" builtin="gradient" rgb1="{_rgb(rng)}" rgb2="{_rgb(rng)}" width="64" height="64"/>',
                '<material name="floor_mat" texture="floor_tex" texrepeat="3 3" texuniform="true"/>',
                f'<material name="table_mat" texture="table_tex" texrepeat="{rng.uniform(2, 6):.2f} {rng.uniform(2, 6):.2f}" texuniform="true"/>',
                '<material name="wall_mat" texture="wall_tex" texrepeat="1 1" texuniform="true"/>',
            ]
        )
        top = self.table_height_m
        objects = []
        self._object_names = []
        for index in range(int(rng.integers(3, 6))):
            x = rng.uniform(table_centre_x - 0.15, table_centre_x + 0.3)
            y = rng.uniform(-0.35, 0.35)
            kind = rng.choice(["box", "cylinder", "sphere"])
            size = rng.uniform(0.025, 0.045)
            geom = {
                "box": f'type="box" size="{size:.3f} {size * rng.uniform(0.7, 1.4):.3f} {size:.3f}"',
                "cylinder": f'type="cylinder" size="{size:.3f} {size:.3f}"',
                "sphere": f'type="sphere" size="{size:.3f}"',
            }[kind]
            name = f"object{index}"
            self._object_names.append(name)
            objects.append(
                f'<body name="{name}" pos="{x:.3f} {y:.3f} {top + size + 0.002:.3f}" euler="0 0 {rng.uniform(0.0, np.pi):.3f}">'
                f'<freejoint/><geom {geom} rgba="{_vivid_rgba(rng)}" mass="0.1" friction="0.8 0.01 0.001" condim="4"/></body>'
            )
        camera_position = np.array(
            [table_centre_x + rng.uniform(0.55, 0.75), rng.uniform(-0.5, 0.5), top + rng.uniform(0.45, 0.65)]
        )
        camera_target = np.array([table_centre_x - 0.1, 0.0, top + 0.12])
        fovy = float(rng.uniform(45.0, 60.0))
        hand_rgba = _vivid_rgba(rng)
        worldbody = f"""
<geom name="floor" type="plane" size="4 4 0.1" material="floor_mat"/>
<geom name="back_wall" type="box" pos="-1.2 0 1.5" size="0.05 4 1.5" material="wall_mat"/>
<geom name="table" type="box" pos="{table_centre_x} 0 {top / 2:.3f}" size="{table_half[0]} {table_half[1]} {top / 2:.3f}" material="table_mat"/>
{_lights(rng, 1.5, 1.5, 2.5)}
<camera name="camera" pos="{camera_position[0]:.3f} {camera_position[1]:.3f} {camera_position[2]:.3f}" xyaxes="{_look_at_xyaxes(camera_position, camera_target)}" fovy="{fovy:.2f}"/>
<body name="base" pos="0 0 {top}" childclass="arm">
  <geom type="cylinder" pos="0 0 0.03" size="0.08 0.03" rgba="0.2 0.2 0.2 1"/>
  <body name="turret" pos="0 0 0.06" gravcomp="1">
    <joint name="base_yaw" type="hinge" axis="0 0 1" range="-2.8 2.8" damping="2"/>
    <geom type="cylinder" pos="0 0 0.05" size="0.06 0.05" rgba="{arm_rgba}" mass="1"/>
    <body name="upper_arm" pos="0 0 {self.base_to_shoulder_m - 0.06:.3f}" gravcomp="1">
      <joint name="shoulder" type="hinge" axis="0 1 0" range="-1.8 1.8" damping="2"/>
      <geom type="capsule" fromto="0 0 0 0 0 {self.upper_arm_m}" size="0.035" rgba="{arm_rgba}" mass="0.8"/>
      <body name="forearm" pos="0 0 {self.upper_arm_m}" gravcomp="1">
        <joint name="elbow" type="hinge" axis="0 1 0" range="-2.7 2.7" damping="1.5"/>
        <geom type="capsule" fromto="0 0 0 0 0 {self.forearm_m}" size="0.03" rgba="{arm_rgba}" mass="0.6"/>
        <body name="wrist" pos="0 0 {self.forearm_m}" gravcomp="1">
          <joint name="wrist_pitch" type="hinge" axis="0 1 0" range="-3.1 3.1" damping="0.5"/>
          <geom type="capsule" fromto="0 0 0 0 0 0.06" size="0.025" rgba="0.3 0.3 0.3 1" mass="0.2"/>
          <body name="hand" pos="0 0 0.06" gravcomp="1">
            <joint name="wrist_roll" type="hinge" axis="0 0 1" range="-3.1 3.1" damping="0.3"/>
            <geom type="box" pos="0 0 0.015" size="0.02 0.06 0.015" rgba="{hand_rgba}" mass="0.2"/>
            <body name="finger_left" pos="0 0.02 0.03" gravcomp="1">
              <joint name="finger_left" type="slide" axis="0 1 0" range="0 {self.finger_travel_m}" damping="1"/>
              <geom type="box" pos="0 0.005 0.035" size="0.012 0.006 0.035" rgba="{hand_rgba}" mass="0.05" friction="1.2 0.01 0.001"/>
            </body>
            <body name="finger_right" pos="0 -0.02 0.03" gravcomp="1">
              <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {self.finger_travel_m}" damping="1"/>
              <geom type="box" pos="0 -0.005 0.035" size="0.012 0.006 0.035" rgba="{hand_rgba}" mass="0.05" friction="1.2 0.01 0.001"/>
            </body>
            <site name="ee" pos="0 0 {self.wrist_to_ee_m - 0.06:.3f}" size="0.01"/>
          </body>
        </body>
      </body>
    </body>
  </body>
</body>
{chr(10).join(objects)}
"""
        actuators = """<actuator>
  <position name="base_yaw" joint="base_yaw" kp="120" ctrlrange="-2.8 2.8"/>
  <position name="shoulder" joint="shoulder" kp="200" ctrlrange="-1.8 1.8"/>
  <position name="elbow" joint="elbow" kp="150" ctrlrange="-2.7 2.7"/>
  <position name="wrist_pitch" joint="wrist_pitch" kp="60" ctrlrange="-3.1 3.1"/>
  <position name="wrist_roll" joint="wrist_roll" kp="20" ctrlrange="-3.1 3.1"/>
  <position name="finger_left" joint="finger_left" kp="200" ctrlrange="0 0.04"/>
  <position name="finger_right" joint="finger_right" kp="200" ctrlrange="0 0.04"/>
</actuator>"""
        # Arm geoms collide with the world (table, objects) but not with each other.
        defaults = '<default><default class="arm"><geom contype="2" conaffinity="1"/></default></default>'
        mjcf = _mjcf_document(assets, worldbody, settings, extra=defaults + "\n" + actuators)
        super().__init__(mjcf, settings)
        self.model.opt.timestep = 1.0 / (settings.state_rate_hz * self.physics_substeps)
        self._table_centre_x = table_centre_x
        self._base_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "base")
        self._ee_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "ee")
        self._arm_qpos = np.array([self.model.jnt_qposadr[self.model.joint(n).id] for n in
                                   ("base_yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "finger_left", "finger_right")])
        start = self.inverse_kinematics(np.array([0.3, 0.0, 0.25]), 0.0)
        start_fingers = np.array([self.finger_travel_m / 2] * 2)
        self.data.qpos[self._arm_qpos] = np.concatenate([start, start_fingers])
        self.data.ctrl[:] = np.concatenate([start, start_fingers])
        mujoco.mj_forward(self.model, self.data)
        self._segment_start = self.data.ctrl.copy()
        self._segment_goal = self.data.ctrl.copy()
        self._segment_duration = 0.5
        self._segment_elapsed = 0.5
        self._push_plan: list[tuple[np.ndarray, float]] = []
        self._external_target = False  # set_ee_target() was called: hold targets instead of picking random ones

    def set_ee_target(self, pose_base: Pose, duration_s: float | None = None, gripper_opening_m: float | None = None) -> None:
        """Move the end-effector to ``pose_base`` (in the ``base`` frame) instead of the random moves (they never resume).

        The gripper points down; of the target's orientation only the heading of its x axis about the
        vertical is used (as the wrist roll). The move follows a minimum-jerk profile over ``duration_s``
        [s] (default: 0.5 s plus 2 s per metre) and then holds; ``gripper_opening_m`` [m] (0 to
        2 x finger travel) sets the fingers, None keeps them.
        """
        position = np.asarray(pose_base.position, dtype=np.float64)
        target = np.array([np.clip(position[0], 0.12, 0.7), np.clip(position[1], -0.5, 0.5), np.clip(position[2], 0.0, 0.5)])
        rotation = quaternion_to_matrix(np.asarray(pose_base.quat_xyzw, dtype=np.float64))
        heading = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
        roll = float((heading - np.arctan2(target[1], target[0]) + np.pi) % (2 * np.pi) - np.pi)
        joints = self.inverse_kinematics(target, roll)
        fingers = self.data.ctrl[5:7].copy() if gripper_opening_m is None else np.full(
            2, np.clip(gripper_opening_m / 2.0, 0.0, self.finger_travel_m))
        distance = float(np.linalg.norm(target - self.ee_pose_base().position))
        self._segment_start = self.data.ctrl.copy()
        self._segment_goal = np.concatenate([joints, fingers])
        self._segment_duration = float(duration_s) if duration_s is not None else 0.5 + 2.0 * distance
        self._segment_elapsed = 0.0
        self._push_plan = []
        self._external_target = True

    def hold(self) -> None:
        """Keep the arm where its controls are now, instead of the random moves (until :meth:`set_ee_target`).

        For a live simulator: nothing should move that nobody commanded.
        """
        self._segment_start = self.data.ctrl.copy()
        self._segment_goal = self.data.ctrl.copy()
        self._segment_elapsed = self._segment_duration
        self._push_plan = []
        self._external_target = True

    def inverse_kinematics(self, ee_target_base: np.ndarray, roll_rad: float) -> np.ndarray:
        """Joint angles [rad] (5) that put the end-effector at ``ee_target_base`` [m] (base frame) pointing down.

        Unreachable targets are pulled in to the arm's reach.
        """
        x, y, z = ee_target_base
        base_yaw = float(np.arctan2(y, x))
        # The wrist joint sits straight above the end-effector when the gripper points down.
        radial = float(np.hypot(x, y))
        height = z + self.wrist_to_ee_m - self.base_to_shoulder_m
        reach = np.hypot(radial, height)
        max_reach = 0.98 * (self.upper_arm_m + self.forearm_m)
        if reach > max_reach:
            radial, height = radial * max_reach / reach, height * max_reach / reach
            reach = max_reach
        cos_elbow = (reach**2 - self.upper_arm_m**2 - self.forearm_m**2) / (2 * self.upper_arm_m * self.forearm_m)
        elbow = float(np.arccos(np.clip(cos_elbow, -1.0, 1.0)))
        # Angles measured from the vertical towards the target; positive elbow raises the elbow.
        direction = np.arctan2(radial, height)
        shoulder = float(direction - np.arctan2(self.forearm_m * np.sin(elbow), self.upper_arm_m + self.forearm_m * np.cos(elbow)))
        wrist_pitch = float(np.pi - shoulder - elbow)
        wrist_pitch = (wrist_pitch + np.pi) % (2 * np.pi) - np.pi
        return np.array([base_yaw, shoulder, elbow, wrist_pitch, roll_rad])

    def _object_position_base(self) -> np.ndarray:
        name = self._object_names[int(self.rng.integers(len(self._object_names)))]
        world = self.data.body(name).xpos
        return world - self.data.xpos[self._base_id]

    def _next_segment(self) -> None:
        """Pick the next target: a free move over the table, or the next step of a push through an object."""
        rng = self.rng
        if not self._push_plan and rng.uniform() < 0.5:
            # A push: above-behind the object, down to the table, then sweep through the object.
            obj = self._object_position_base()
            direction = rng.uniform(-np.pi, np.pi)
            unit = np.array([np.cos(direction), np.sin(direction), 0.0])
            low = 0.03
            behind = obj - 0.12 * unit
            through = obj + 0.12 * unit
            self._push_plan = [
                (np.array([behind[0], behind[1], 0.15]), 1.0),
                (np.array([behind[0], behind[1], low]), 0.8),
                (np.array([through[0], through[1], low]), 1.2),
                (np.array([through[0], through[1], 0.18]), 0.8),
            ]
        if self._push_plan:
            target, duration = self._push_plan.pop(0)
            fingers = 0.0
        else:
            target = np.array([rng.uniform(0.15, 0.6), rng.uniform(-0.45, 0.45), rng.uniform(0.05, 0.35)])
            duration = float(rng.uniform(1.0, 2.2))
            fingers = float(rng.choice([0.0, self.finger_travel_m]))
        target[0] = np.clip(target[0], 0.12, 0.7)
        target[1] = np.clip(target[1], -0.5, 0.5)
        joints = self.inverse_kinematics(target, float(rng.uniform(-1.2, 1.2)))
        self._segment_start = self.data.ctrl.copy()
        self._segment_goal = np.concatenate([joints, [fingers, fingers]])
        self._segment_duration = duration
        self._segment_elapsed = 0.0

    def _advance(self, seconds: float) -> None:
        substep = seconds / self.physics_substeps
        for _ in range(self.physics_substeps):
            if self._segment_elapsed >= self._segment_duration and not self._external_target:
                self._next_segment()
            self._segment_elapsed = min(self._segment_elapsed + substep, self._segment_duration)
            phase = self._segment_elapsed / self._segment_duration
            # Minimum-jerk profile: zero velocity and acceleration at both ends.
            blend = 10 * phase**3 - 15 * phase**4 + 6 * phase**5
            self.data.ctrl[:] = self._segment_start + blend * (self._segment_goal - self._segment_start)
            mujoco.mj_step(self.model, self.data)
        # mj_step leaves body and site poses (what ee_pose_base reads and the renderer draws) at the
        # joints before its last integration; recompute them for the joints at this tick's stamp.
        mujoco.mj_forward(self.model, self.data)

    def base_pose_world(self) -> Pose:
        """The arm's ``base`` body in the world frame (fixed; the tf tree's odom -> base_link)."""
        rotation = self.data.xmat[self._base_id].reshape(3, 3)
        return Pose(self.data.xpos[self._base_id].copy(), matrix_to_quaternion(rotation))

    def ee_pose_base(self) -> Pose:
        """End-effector pose in the arm's ``base`` frame."""
        base_rotation = self.data.xmat[self._base_id].reshape(3, 3)
        base_position = self.data.xpos[self._base_id]
        ee_rotation = self.data.site_xmat[self._ee_id].reshape(3, 3)
        ee_position = self.data.site_xpos[self._ee_id]
        return Pose(base_rotation.T @ (ee_position - base_position), matrix_to_quaternion(base_rotation.T @ ee_rotation))

    def gripper_opening(self) -> float:
        """Distance the fingers are apart beyond closed [m] (sum of both finger slides)."""
        return float(self.data.qpos[self._arm_qpos[5]] + self.data.qpos[self._arm_qpos[6]])

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        return SimTick(
            stamp_ns, self.camera_pose(), image, ee_pose=self.ee_pose_base(), gripper_opening_m=self.gripper_opening()
        )


_SCENARIO_CLASSES: dict[str, type[Scenario]] = {
    "explore": ExploreScenario,
    "arm": ArmScenario,
    "rover": RoverScenario,
}


def make_scenario(name: str, seed: int, settings: SimSettings = SimSettings()) -> Scenario:
    """Build scenario ``name`` (one of :data:`SCENARIOS`) for ``seed``."""
    if name not in _SCENARIO_CLASSES:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    return _SCENARIO_CLASSES[name](seed, settings)
