"""Default input topics of the nodes: private when unremapped, a plain or a private remap honoured."""

import os

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.node import Node  # noqa: E402

from astra_ros.ros.topic_names import input_topic, remap_rules  # noqa: E402


def resolved_inputs(*ros_args: str, namespace: str = "") -> dict[str, str]:
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    argv = ["astra-predictor", "--ros-args", *ros_args]
    context = rclpy.Context()
    rclpy.init(args=argv, context=context)
    try:
        node = Node("astra_predictor", namespace=namespace, context=context)
        try:
            return {name: node.resolve_topic_name(input_topic(node, name, argv)) for name in ("image", "pose", "odom")}
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_unremapped_inputs_are_private_never_global():
    assert resolved_inputs() == {"image": "/astra_predictor/image", "pose": "/astra_predictor/pose",
                                 "odom": "/astra_predictor/odom"}
    assert resolved_inputs(namespace="/robot1") == {
        "image": "/robot1/astra_predictor/image", "pose": "/robot1/astra_predictor/pose",
        "odom": "/robot1/astra_predictor/odom"}


def test_plain_and_private_remaps_both_reach_the_input():
    topics = resolved_inputs("-r", "image:=/camera/image_raw", "-r", "~/pose:=/camera/pose")
    assert topics == {"image": "/camera/image_raw", "pose": "/camera/pose", "odom": "/astra_predictor/odom"}
    # relative targets resolve in the node's namespace, as ROS users expect
    assert resolved_inputs("-r", "image:=camera/image_raw", namespace="/robot1")["image"] == "/robot1/camera/image_raw"


def test_a_private_remap_wins_over_a_plain_one():
    topics = resolved_inputs("-r", "image:=/plain", "-r", "~/image:=/private")
    assert topics["image"] == "/private"


def test_a_remap_onto_the_plain_name_itself_is_honoured():
    # odom:=/odom in the root namespace resolves like no rule at all; the command line tells them apart
    assert resolved_inputs("-r", "odom:=/odom")["odom"] == "/odom"
    assert resolved_inputs("-r", "astra_predictor:odom:=/odom")["odom"] == "/odom"
    assert resolved_inputs("-r", "other_node:odom:=/odom")["odom"] == "/astra_predictor/odom"
    assert resolved_inputs("-r", "odom:=odom", namespace="/robot1")["odom"] == "/robot1/odom"


def test_remap_rules_are_read_only_inside_ros_args():
    argv = ["exe", "-r", "image:=/not_a_rule", "--ros-args", "-r", "a:=/x", "--remap", "n:b:=/y", "--", "-r", "c:=/z"]
    assert remap_rules(argv) == [(None, "a"), ("n", "b")]
