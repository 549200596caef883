"""Writing simulated episodes as ROS 2 bags (rosbags' Writer, no rclpy).

Topics written (DESIGN.md §3, contract), as they apply to the scenario; frames as REP-103/105 name them
(:mod:`astra_ros.data.frames`), the same as the live simulator node publishes:

* ``/camera/image_raw`` (sensor_msgs/Image, rgb8, frame_id ``camera_optical_frame``) at the camera rate;
* ``/camera/camera_info`` (sensor_msgs/CameraInfo, pinhole intrinsics from MuJoCo's fovy), one per image;
* ``/camera/pose`` (geometry_msgs/PoseStamped, frame_id ``odom``): the camera *optical* frame
  (z forward, x right, y down) in the world, at the state rate (all scenarios; fixed for ``arm``);
* ``/robot/ee_pose`` (PoseStamped, frame_id ``base_link``) and ``/robot/gripper`` (sensor_msgs/JointState,
  joint ``gripper_joint``: distance the fingers are open [m]) for ``arm``;
* ``/cmd_vel`` (geometry_msgs/Twist, body frame x forward, y left, z up) for ``explore`` and ``rover``;
* ``/odom`` (nav_msgs/Odometry, frame_id ``odom`` = world, child_frame_id ``base_link``) for ``rover``;
* ``/tf`` (tf2_msgs/TFMessage) every state tick and ``/tf_static`` once, at the first stamp: the tree of
  :mod:`astra_ros.data.frames` (odom -> base_link -> camera_link -> camera_optical_frame; base_link ->
  ee_link for ``arm``).

Bags written before (``world``/``base``/``camera_optical`` frames, a std_msgs/Float32 gripper, no tf)
still read: :mod:`astra_ros.data.bags` takes both.

Stamps are simulated time from the fixed epoch :data:`SIM_EPOCH_NS`, and each message's bag
timestamp equals its header stamp, so the same seed gives byte-identical message data.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from astra_ros.data.bags import PARTIAL_SUFFIX, BagTopics
from astra_ros.data.frames import (
    BASE_FRAME_ID, CAMERA_FRAME_ID, GRIPPER_JOINT, ODOM_FRAME_ID, Transform, dynamic_transforms, static_transforms)
from astra_ros.data.geometry import PinholeIntrinsics
from astra_ros.data.scenes import BodyTwist, Pose, SimSettings, SimTick, make_scenario

logger = logging.getLogger(__name__)

SIM_EPOCH_NS = 1_700_000_000 * 1_000_000_000  # [ns] stamp of every episode's first tick
STORAGE_PLUGINS: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
_NEVER = QosTime(0, 0)
# /tf_static as recorded from tf2_ros' static broadcaster: reliable, transient local, so a player latches it.
_LATCHED = (Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, _NEVER, _NEVER,
                QosLiveliness.AUTOMATIC, _NEVER, False),)


def episode_bag_path(out_dir: Path | str, scenario: str, seed: int) -> Path:
    """Bag directory of one episode: ``out_dir/<scenario>_s<seed>``."""
    return Path(out_dir) / f"{scenario}_s{seed}"


def partial_bag_path(bag_path: Path) -> Path:
    """Where an episode is written until it is complete: ``<bag>.partial``, holding the bag directory.

    The bag is written as ``<bag>.partial/<bag name>`` (rosbags names its storage file after its
    directory) and renamed to ``<bag>`` once closed, so a bag directory under its final name is complete.
    """
    return bag_path.with_name(bag_path.name + PARTIAL_SUFFIX)


class _MessageFactory:
    """Builds rosbags message objects for one typestore."""

    def __init__(self) -> None:
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.types = self.typestore.types

    def header(self, stamp_ns: int, frame_id: str):
        time = self.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def pose(self, pose: Pose):
        point = self.types["geometry_msgs/msg/Point"](*(float(v) for v in pose.position))
        quaternion = self.types["geometry_msgs/msg/Quaternion"](*(float(v) for v in pose.quat_xyzw))
        return self.types["geometry_msgs/msg/Pose"](position=point, orientation=quaternion)

    def pose_stamped(self, stamp_ns: int, frame_id: str, pose: Pose):
        return self.types["geometry_msgs/msg/PoseStamped"](header=self.header(stamp_ns, frame_id), pose=self.pose(pose))

    def twist(self, twist: BodyTwist):
        vector = self.types["geometry_msgs/msg/Vector3"]
        return self.types["geometry_msgs/msg/Twist"](
            linear=vector(*(float(v) for v in twist.linear)), angular=vector(*(float(v) for v in twist.angular))
        )

    def odometry(self, stamp_ns: int, pose: Pose, twist: BodyTwist):
        covariance = np.zeros(36, dtype=np.float64)
        return self.types["nav_msgs/msg/Odometry"](
            header=self.header(stamp_ns, ODOM_FRAME_ID),
            child_frame_id=BASE_FRAME_ID,
            pose=self.types["geometry_msgs/msg/PoseWithCovariance"](pose=self.pose(pose), covariance=covariance),
            twist=self.types["geometry_msgs/msg/TwistWithCovariance"](twist=self.twist(twist), covariance=covariance.copy()),
        )

    def image(self, stamp_ns: int, rgb: np.ndarray):
        height, width, _ = rgb.shape
        return self.types["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, CAMERA_FRAME_ID),
            height=height,
            width=width,
            encoding="rgb8",
            is_bigendian=0,
            step=width * 3,
            data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1),
        )

    def camera_info(self, stamp_ns: int, intrinsics: PinholeIntrinsics):
        k = intrinsics.matrix()
        projection = np.zeros((3, 4))
        projection[:, :3] = k
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, CAMERA_FRAME_ID),
            height=intrinsics.height,
            width=intrinsics.width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k.reshape(-1),
            r=np.eye(3).reshape(-1),
            p=projection.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )

    def joint_state(self, stamp_ns: int, name: str, position: float):
        return self.types["sensor_msgs/msg/JointState"](
            header=self.header(stamp_ns, ""), name=[name], position=np.array([float(position)]),
            velocity=np.zeros(0), effort=np.zeros(0))

    def tf_message(self, stamp_ns: int, transforms: list[Transform]):
        vector, quaternion = self.types["geometry_msgs/msg/Vector3"], self.types["geometry_msgs/msg/Quaternion"]
        stamped = [self.types["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, t.parent), child_frame_id=t.child,
            transform=self.types["geometry_msgs/msg/Transform"](
                translation=vector(*(float(v) for v in t.pose.position)),
                rotation=quaternion(*(float(v) for v in t.pose.quat_xyzw))))
            for t in transforms]
        return self.types["tf2_msgs/msg/TFMessage"](transforms=stamped)


def _tick_messages(factory: _MessageFactory, tick: SimTick, stamp_ns: int, intrinsics: PinholeIntrinsics, topics: BagTopics,
                   scenario: str, static: list[Transform] | None = None):
    """(topic, message) pairs of one tick in a fixed order; ``static`` transforms (first tick) lead."""
    messages = []
    if static is not None:
        messages.append((TF_STATIC_TOPIC, factory.tf_message(stamp_ns, static)))
    messages.append((TF_TOPIC, factory.tf_message(stamp_ns, dynamic_transforms(scenario, tick))))
    if tick.image is not None:
        messages.append((topics.image, factory.image(stamp_ns, tick.image)))
        messages.append((topics.camera_info, factory.camera_info(stamp_ns, intrinsics)))
    messages.append((topics.camera_pose, factory.pose_stamped(stamp_ns, ODOM_FRAME_ID, tick.camera_pose)))
    if tick.ee_pose is not None:
        messages.append((topics.ee_pose, factory.pose_stamped(stamp_ns, BASE_FRAME_ID, tick.ee_pose)))
    if tick.gripper_opening_m is not None:
        messages.append((topics.gripper, factory.joint_state(stamp_ns, GRIPPER_JOINT, tick.gripper_opening_m)))
    if tick.command is not None:
        messages.append((topics.twist, factory.twist(tick.command)))
    if tick.odom_pose is not None and tick.odom_twist is not None:
        messages.append((topics.odom, factory.odometry(stamp_ns, tick.odom_pose, tick.odom_twist)))
    return messages


def record_episode(
    scenario: str,
    seed: int,
    out_dir: Path | str,
    *,
    settings: SimSettings = SimSettings(),
    storage: str = "mcap",
    progress: bool = True,
) -> Path:
    """Simulate one episode of ``scenario`` with ``seed`` and write it as a bag; return the bag directory.

    The bag is ``out_dir/<scenario>_s<seed>`` and must not exist yet. ``storage`` is ``mcap`` or ``sqlite3``.
    It is written under :func:`partial_bag_path` and renamed when complete: an interrupted recording leaves
    no bag under the final name, and its leftover ``.partial`` directory is removed (with a warning) by the
    next recording of the same episode.
    """
    if storage not in STORAGE_PLUGINS:
        raise ValueError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGE_PLUGINS)}")
    bag_path = episode_bag_path(out_dir, scenario, seed)
    if bag_path.exists():
        raise FileExistsError(f"bag {bag_path} already exists; remove it or choose another --out or --seed")
    partial = partial_bag_path(bag_path)
    if partial.exists():
        logger.warning("removing %s, left unfinished by an interrupted recording", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        _write_episode(scenario, seed, partial / bag_path.name, settings, storage, progress)
        os.replace(partial / bag_path.name, bag_path)  # atomic: the bag appears complete or not at all
    except BaseException:  # Ctrl-C included: a half-written bag is of no use
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rmdir()
    logger.info("wrote %s (%d ticks)", bag_path, settings.num_ticks)
    return bag_path


def _write_episode(scenario: str, seed: int, bag_path: Path, settings: SimSettings, storage: str, progress: bool) -> None:
    """Simulate and write one episode as a new bag directory ``bag_path``."""
    topics = BagTopics()
    factory = _MessageFactory()
    msgtypes = {
        topics.image: "sensor_msgs/msg/Image",
        topics.camera_info: "sensor_msgs/msg/CameraInfo",
        topics.camera_pose: "geometry_msgs/msg/PoseStamped",
        topics.ee_pose: "geometry_msgs/msg/PoseStamped",
        topics.gripper: "sensor_msgs/msg/JointState",
        TF_TOPIC: "tf2_msgs/msg/TFMessage",
        TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage",
        topics.twist: "geometry_msgs/msg/Twist",
        topics.odom: "nav_msgs/msg/Odometry",
    }
    with make_scenario(scenario, seed, settings) as simulation, Writer(
        bag_path, version=9, storage_plugin=STORAGE_PLUGINS[storage]
    ) as writer:
        intrinsics = simulation.intrinsics
        connections = {}
        static = None
        for tick in tqdm(
            simulation.ticks(), total=settings.num_ticks, desc=bag_path.name, unit="tick", disable=not progress, leave=False
        ):
            stamp_ns = SIM_EPOCH_NS + tick.stamp_ns
            first = static is None
            if first:
                static = static_transforms(scenario, tick, simulation.base_pose_world() if scenario == "arm" else None)
            for topic, message in _tick_messages(factory, tick, stamp_ns, intrinsics, topics, scenario,
                                                 static if first else None):
                if topic not in connections:
                    # Connections are added on first use so each scenario's bag holds only its topics.
                    # /tf_static is latched (transient local), as tf2_ros' static broadcaster offers it.
                    connections[topic] = writer.add_connection(
                        topic, msgtypes[topic], typestore=factory.typestore,
                        offered_qos_profiles=_LATCHED if topic == TF_STATIC_TOPIC else ())
                data = factory.typestore.serialize_cdr(message, msgtypes[topic])
                writer.write(connections[topic], stamp_ns, data)
