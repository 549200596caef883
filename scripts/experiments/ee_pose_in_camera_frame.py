"""Experiment: copies of `arm` bags whose end-effector pose is given in the camera's optical frame.

The `arm` scenes place their fixed camera anew for every seed (about +-37 degrees around the table,
field of view 45-60 degrees), while `/robot/ee_pose` is in the arm's `base` frame: where a pose
puts the arm in the image then differs from scene to scene, and a model must work it out from a
few observed frames. This script writes the same bags with the pose re-expressed in the camera
frame (``inv(T_world_camera) T_world_base T_base_ee``; the simulator's base sits at a fixed world
pose), so that a pose says where the arm is *in the view*, to test whether that makes `arm`
learnable. Every other message is copied unchanged.

    python scripts/experiments/ee_pose_in_camera_frame.py IN_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from astra_ros.data.bags import BagTopics, find_bags
from astra_ros.data.geometry import matrix_to_quaternion, pose_to_matrix
from astra_ros.data.scenes import ArmScenario

CAMERA_FRAME_ID = "camera_optical"


def _matrix(pose) -> np.ndarray:
    p, q = pose.position, pose.orientation
    return pose_to_matrix(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))


def convert(bag: Path, out: Path, base_in_world: np.ndarray, topics: BagTopics = BagTopics()) -> int:
    """Write ``bag`` to ``out`` with its end-effector poses in the camera frame; how many were rewritten."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    rewritten = 0
    with AnyReader([bag]) as reader:
        camera = [c for c in reader.connections if c.topic == topics.camera_pose]
        if not camera:
            raise SystemExit(f"{bag}: no {topics.camera_pose} topic")
        _, _, raw = next(reader.messages(connections=camera))
        world_camera = _matrix(reader.deserialize(raw, camera[0].msgtype).pose)  # the camera is fixed
        camera_base = np.linalg.inv(world_camera) @ base_in_world
        with Writer(out, version=9) as writer:
            connections = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=typestore) for c in reader.connections}
            for connection, stamp_ns, raw in reader.messages():
                if connection.topic == topics.ee_pose:
                    message = reader.deserialize(raw, connection.msgtype)
                    in_camera = camera_base @ _matrix(message.pose)
                    p, q = in_camera[:3, 3], matrix_to_quaternion(in_camera[:3, :3])
                    message.pose.position.x, message.pose.position.y, message.pose.position.z = (float(v) for v in p)
                    o = message.pose.orientation
                    o.x, o.y, o.z, o.w = (float(v) for v in q)
                    message.header.frame_id = CAMERA_FRAME_ID
                    raw = typestore.serialize_cdr(message, connection.msgtype)
                    rewritten += 1
                writer.write(connections[connection.id], stamp_ns, raw)
    return rewritten


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bags", nargs="+", type=Path, help="arm bags or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="folder for the converted bags")
    args = parser.parse_args(argv)
    base_in_world = pose_to_matrix(np.array([0.0, 0.0, ArmScenario.table_height_m]), np.array([0.0, 0.0, 0.0, 1.0]))
    for bag in find_bags(args.bags):
        target = args.out / bag.name
        if target.exists():
            print(f"{target} exists: skipped", file=sys.stderr)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"{bag.name}: {convert(bag, target, base_in_world)} poses rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
