"""Where a node's input subscriptions go by default: its private namespace, so an input left unremapped
never listens on (or collides with) a global topic such as ``/pose``, while the usual plain remap
``-r image:=/camera/image_raw`` keeps working beside the explicit ``-r ~/image:=/camera/image_raw``."""

from __future__ import annotations

import sys
from typing import Any, Sequence


def remap_rules(argv: Sequence[str]) -> list[tuple[str | None, str]]:
    """``(node name or None, match)`` of every ``-r`` / ``--remap`` rule in the ``--ros-args`` sections
    of ``argv`` (a section ends at ``--``)."""
    rules: list[tuple[str | None, str]] = []
    in_ros_args = False
    tokens = list(argv)
    for i, token in enumerate(tokens):
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token in ("-r", "--remap") and i + 1 < len(tokens) and ":=" in tokens[i + 1]:
            match = tokens[i + 1].split(":=", 1)[0]
            node, separator, name = match.rpartition(":")
            rules.append((node if separator else None, name))
    return rules


def input_topic(node: Any, name: str, argv: Sequence[str] | None = None) -> str:
    """The topic name (for ``create_subscription``) of the input ``name`` of ``node``.

    Precedence: a remap of the private name ``~/<name>``; else a remap of the plain relative ``<name>``
    (the common habit, also what launch files write); else the private ``~/<name>``. ``argv``: the
    command line the node was started with (default ``sys.argv``), read for plain rules whose target
    is the name itself (``odom:=/odom`` in the root namespace), which name resolution cannot tell apart
    from no rule."""
    namespace = node.get_namespace().rstrip("/")
    private_default = f"{namespace}/{node.get_name()}/{name}"
    if node.resolve_topic_name(f"~/{name}") != private_default:
        return f"~/{name}"
    plain = node.resolve_topic_name(name)
    if plain != f"{namespace}/{name}":
        return plain
    rules = remap_rules(sys.argv if argv is None else argv)
    if any(rule_node in (None, node.get_name()) and match in (name, f"{namespace}/{name}") for rule_node, match in rules):
        return plain
    return f"~/{name}"


def diagnostic_prefix(node) -> str:
    """``<namespace>/<node>`` without the leading slash, for /diagnostics status names and hardware ids:
    two robots' nodes stay apart in an aggregator (``robot1/astra_predictor: inputs``), and a node in the
    root namespace keeps its plain name."""
    return node.get_fully_qualified_name().lstrip("/")
