"""Kinematic rigs: a body moved by smoothed random (or given) commands through a room, for explore and rover."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from astra_ros.data.geometry import matrix_to_quaternion, yaw_pitch_to_matrix
from astra_ros.data.scenes.base import Scenario
from astra_ros.data.scenes.mjcf import _Obstacle
from astra_ros.data.scenes.types import BodyTwist, Pose


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
