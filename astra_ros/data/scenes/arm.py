"""``arm``: a 5-joint arm with a 2-finger gripper pushes objects on a table, seen by a fixed camera."""

from __future__ import annotations

import mujoco
import numpy as np

from astra_ros.data.geometry import matrix_to_quaternion, quaternion_to_matrix
from astra_ros.data.scenes.base import Scenario
from astra_ros.data.scenes.mjcf import _lights, _look_at_xyaxes, _mjcf_document, _random_texture, _rgb, _vivid_rgba
from astra_ros.data.scenes.types import Pose, SimSettings, SimTick


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
