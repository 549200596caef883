"""A world the default checkpoint never saw, recorded as another robot would record it.

The "yard bot": a wheeled robot in an open courtyard (grass, sky, low hedges, trees, rocks, benches,
sunlight), where the project's scenes are closed rooms with textured walls. Its recordings differ from
this project's in every way a real robot's do:

* written with rosbags' ``Writer`` directly (sqlite3), not with astra_ros.data.record;
* its own topic names (``/yard_bot/...``), a 4:3 camera (80x60 bgr8) at 15 Hz with camera_info;
* commands as ``geometry_msgs/TwistStamped`` at 30 Hz, with the driver's yaw convention flipped:
  positive ``angular.z`` turns the robot *right* (its wheel odometry follows REP-103);
* header stamps on a wall clock, received 2-6 ms later.

Its profile is ``config/robots/yard_bot.yaml`` (modality twist, yaw sign -1). Usage::

    MUJOCO_GL=egl python scripts/experiments/yard_world.py --out /work/data/yard/train --seed 0 --episodes 32
    MUJOCO_GL=egl python scripts/experiments/yard_world.py --out /work/data/yard/heldout --seed 9000 --episodes 8
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402
from tqdm import tqdm  # noqa: E402

from astra_ros.data.geometry import PinholeIntrinsics  # noqa: E402
from astra_ros.data.scenes import Pose, SimSettings, SimTick  # noqa: E402
from astra_ros.data.scenes.mjcf import _mjcf_document, _Obstacle, _random_texture, _vivid_rgba  # noqa: E402
from astra_ros.data.scenes.rig import _KinematicRig, _RigScenario  # noqa: E402

TOPICS = {
    "image": "/yard_bot/front_camera/image_raw",
    "camera_info": "/yard_bot/front_camera/camera_info",
    "twist": "/yard_bot/cmd_vel_stamped",
    "odom": "/yard_bot/wheel_odometry",
}
SETTINGS = dict(image_width=80, image_height=60, camera_rate_hz=15, state_rate_hz=30)  # 4:3 at 15 Hz
WALL_CLOCK_EPOCH_NS = 1_764_000_000 * 1_000_000_000  # [ns] a 2025 wall-clock time, not the simulator's epoch


class YardScenario(_RigScenario):
    """A wheeled robot with a front camera driving smooth random (v_x, yaw rate) commands in a courtyard."""

    name = "yard"
    camera_height_m = 0.45  # [m] above the ground
    camera_forward_m = 0.25  # [m] ahead of base_link

    def __init__(self, seed: int, settings: SimSettings) -> None:
        rng = np.random.default_rng([seed, 77])
        half_x, half_y = float(rng.uniform(3.5, 5.0)), float(rng.uniform(3.5, 5.0))
        assets, bodies, obstacles = self._yard(rng, half_x, half_y)
        fovy = float(rng.uniform(45.0, 55.0))  # [deg] vertical: a 4:3 camera's ~60-70 deg horizontal
        tilt = np.radians(float(rng.uniform(4.0, 10.0)))
        robot = f"""<body name="robot" mocap="true">
  <geom type="box" pos="0 0 0.15" size="0.25 0.18 0.08" rgba="{_vivid_rgba(rng)}" contype="0" conaffinity="0"/>
  <camera name="camera" pos="{self.camera_forward_m} 0 {self.camera_height_m}" xyaxes="0 -1 0 {np.sin(tilt):.5f} 0 {np.cos(tilt):.5f}" fovy="{fovy:.2f}"/>
</body>"""
        super().__init__(_mjcf_document(assets, bodies + "\n" + robot, settings), settings)
        self.rig = _KinematicRig(rng, half_x, half_y, obstacles, planar=True, height_range_m=(0.0, 0.0),
                                 pitch_limit_rad=0.0)
        self._place_rig()

    @staticmethod
    def _yard(rng: np.random.Generator, half_x: float, half_y: float) -> tuple[str, str, list[_Obstacle]]:
        """Assets and bodies: sky, grass, a hedge around the yard, trees, rocks and benches."""
        green = rng.uniform([0.15, 0.35, 0.08], [0.3, 0.6, 0.2])
        grass2 = np.clip(green * rng.uniform(0.6, 0.85), 0, 1)
        assets = [
            '<texture name="sky" type="skybox" builtin="gradient" rgb1="0.45 0.65 0.95" rgb2="0.95 0.97 1.0" '
            'width="256" height="256"/>',
            f'<texture name="grass" type="2d" builtin="checker" rgb1="{" ".join(f"{v:.3f}" for v in green)}" '
            f'rgb2="{" ".join(f"{v:.3f}" for v in grass2)}" mark="random" random="0.08" markrgb="0.5 0.45 0.25" '
            'width="256" height="256"/>',
            f'<material name="grass_mat" texture="grass" texrepeat="{rng.uniform(6, 12):.2f} {rng.uniform(6, 12):.2f}" '
            'texuniform="true"/>',
            _random_texture(rng, "bench_tex", size=64),
            '<material name="bench_mat" texture="bench_tex" texrepeat="2 2"/>',
        ]
        hedge = f'{rng.uniform(0.05, 0.15):.3f} {rng.uniform(0.3, 0.45):.3f} {rng.uniform(0.05, 0.15):.3f} 1'
        bodies = [f'<geom name="ground" type="plane" size="{half_x + 8:.2f} {half_y + 8:.2f} 0.1" material="grass_mat"/>',
                  '<light name="sun" directional="true" pos="0 0 10" dir="0.4 0.3 -1" diffuse="0.8 0.78 0.7" '
                  'castshadow="false"/>']
        for name, x, y, sx, sy in (("n", 0, half_y + 0.3, half_x + 0.6, 0.3), ("s", 0, -half_y - 0.3, half_x + 0.6, 0.3),
                                   ("e", half_x + 0.3, 0, 0.3, half_y), ("w", -half_x - 0.3, 0, 0.3, half_y)):
            bodies.append(f'<geom name="hedge_{name}" type="box" pos="{x:.2f} {y:.2f} 0.35" size="{sx:.2f} {sy:.2f} 0.35" '
                          f'rgba="{hedge}"/>')
        obstacles: list[_Obstacle] = []
        for index in range(int(rng.integers(10, 18))):
            for _ in range(50):
                x, y = rng.uniform(-half_x + 0.6, half_x - 0.6), rng.uniform(-half_y + 0.6, half_y - 0.6)
                radius = float(rng.uniform(0.15, 0.45))
                if np.hypot(x, y) > 1.0 + radius and all(np.hypot(x - o.x, y - o.y) > o.radius + radius + 0.3
                                                         for o in obstacles):
                    break
            else:
                continue
            kind = rng.choice(["tree", "tree", "rock", "bench"])
            if kind == "tree":
                trunk = rng.uniform(0.6, 1.2)
                crown = rng.uniform(0.5, 0.9)
                bodies.append(f'<geom name="trunk{index}" type="cylinder" pos="{x:.2f} {y:.2f} {trunk / 2:.2f}" '
                              f'size="{radius * 0.35:.2f} {trunk / 2:.2f}" rgba="0.40 0.26 0.13 1"/>')
                leaf = rng.uniform([0.05, 0.3, 0.05], [0.25, 0.55, 0.2])
                bodies.append(f'<geom name="crown{index}" type="sphere" pos="{x:.2f} {y:.2f} {trunk + crown * 0.7:.2f}" '
                              f'size="{crown:.2f}" rgba="{leaf[0]:.2f} {leaf[1]:.2f} {leaf[2]:.2f} 1"/>')
            elif kind == "rock":
                grey = rng.uniform(0.35, 0.65)
                bodies.append(f'<geom name="rock{index}" type="ellipsoid" pos="{x:.2f} {y:.2f} {radius * 0.4:.2f}" '
                              f'size="{radius:.2f} {radius * 0.8:.2f} {radius * 0.6:.2f}" '
                              f'rgba="{grey:.2f} {grey * 0.95:.2f} {grey * 0.9:.2f} 1"/>')
            else:
                bodies.append(f'<geom name="bench{index}" type="box" pos="{x:.2f} {y:.2f} 0.25" '
                              f'euler="0 0 {rng.uniform(0, np.pi):.2f}" size="{radius * 1.6:.2f} {radius * 0.5:.2f} 0.25" '
                              'material="bench_mat"/>')
            obstacles.append(_Obstacle(float(x), float(y), radius))
        return "\n".join(assets), "\n".join(bodies), obstacles

    def _tick_state(self, stamp_ns: int, image: np.ndarray | None) -> SimTick:
        twist = self.rig.body_twist()
        return SimTick(stamp_ns, self.camera_pose(), image, command=twist, odom_pose=self.rig.body_pose(),
                       odom_twist=twist)


class _Messages:
    """The yard bot's messages, built for rosbags' ROS 2 Kilted typestore."""

    def __init__(self) -> None:
        self.store = get_typestore(Stores.ROS2_KILTED)
        self.t = self.store.types

    def header(self, stamp_ns: int, frame_id: str):
        time = self.t["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        return self.t["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def image_bgr8(self, stamp_ns: int, rgb: np.ndarray):
        height, width, _ = rgb.shape
        return self.t["sensor_msgs/msg/Image"](header=self.header(stamp_ns, "front_camera_optical"), height=height,
                                               width=width, encoding="bgr8", is_bigendian=0, step=width * 3,
                                               data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1))

    def camera_info(self, stamp_ns: int, k: PinholeIntrinsics):
        matrix = k.matrix()
        projection = np.concatenate([matrix, np.zeros((3, 1))], axis=1)
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, "front_camera_optical"), height=k.height, width=k.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=matrix.reshape(-1), r=np.eye(3).reshape(-1),
            p=projection.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def vector(self, values) -> object:
        return self.t["geometry_msgs/msg/Vector3"](*(float(v) for v in values))

    def twist(self, linear, angular):
        return self.t["geometry_msgs/msg/Twist"](linear=self.vector(linear), angular=self.vector(angular))

    def command(self, stamp_ns: int, linear, angular):
        """The driver's convention: positive angular.z turns right, so the REP-103 yaw rate is negated."""
        flipped = (angular[0], angular[1], -angular[2])
        return self.t["geometry_msgs/msg/TwistStamped"](header=self.header(stamp_ns, "base_link"),
                                                        twist=self.twist(linear, flipped))

    def odometry(self, stamp_ns: int, pose: Pose, linear, angular):
        point = self.t["geometry_msgs/msg/Point"](*(float(v) for v in pose.position))
        quaternion = self.t["geometry_msgs/msg/Quaternion"](*(float(v) for v in pose.quat_xyzw))
        covariance = np.zeros(36)
        return self.t["nav_msgs/msg/Odometry"](
            header=self.header(stamp_ns, "odom"), child_frame_id="base_link",
            pose=self.t["geometry_msgs/msg/PoseWithCovariance"](
                pose=self.t["geometry_msgs/msg/Pose"](position=point, orientation=quaternion), covariance=covariance),
            twist=self.t["geometry_msgs/msg/TwistWithCovariance"](twist=self.twist(linear, angular),
                                                                  covariance=covariance.copy()))


def record_yard_episode(seed: int, out_dir: Path, seconds: float) -> Path:
    """Drive one yard episode and write it as a sqlite3 bag ``out_dir/yard_<seed>``; returns its path."""
    bag = out_dir / f"yard_{seed}"
    if bag.exists():
        raise FileExistsError(f"{bag} exists; remove it or choose other seeds")
    settings = SimSettings(seconds=seconds, **SETTINGS)
    messages = _Messages()
    jitter = np.random.default_rng([seed, 78])
    start_ns = WALL_CLOCK_EPOCH_NS + seed * 3_600 * 1_000_000_000  # each episode at its own hour
    with YardScenario(seed, settings) as scene, Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        types = {"image": "sensor_msgs/msg/Image", "camera_info": "sensor_msgs/msg/CameraInfo",
                 "twist": "geometry_msgs/msg/TwistStamped", "odom": "nav_msgs/msg/Odometry"}
        connections = {key: writer.add_connection(TOPICS[key], msgtype, typestore=messages.store)
                       for key, msgtype in types.items()}
        intrinsics = scene.intrinsics
        for tick in scene.ticks():
            stamp = start_ns + tick.stamp_ns
            received = stamp + int(jitter.uniform(2e6, 6e6))  # [ns] transport and recorder latency
            out = []
            if tick.image is not None:
                out += [("image", messages.image_bgr8(stamp, tick.image)),
                        ("camera_info", messages.camera_info(stamp, intrinsics))]
            out += [("twist", messages.command(stamp, tick.command.linear, tick.command.angular)),
                    ("odom", messages.odometry(stamp, tick.odom_pose, tick.odom_twist.linear, tick.odom_twist.angular))]
            for key, message in out:
                writer.write(connections[key], received, messages.store.serialize_cdr(message, types[key]))
    return bag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the bags (created)")
    parser.add_argument("--seed", type=int, default=0, help="first episode's seed (held-out sets: other seeds)")
    parser.add_argument("--episodes", type=int, default=8, help="episodes, seeds SEED..SEED+EPISODES-1")
    parser.add_argument("--seconds", type=float, default=12.0, help="episode length [s]")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.seconds <= 0:
        parser.error("--episodes must be >= 1 and --seconds > 0")
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in tqdm(range(args.seed, args.seed + args.episodes), desc="yard episodes", unit="bag"):
        record_yard_episode(seed, args.out, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
