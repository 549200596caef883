"""Where a node's input subscriptions go by default: its private namespace, so an input left unremapped
never listens on (or collides with) a global topic such as ``/pose``, while the usual plain remap
``-r image:=/camera/image_raw`` keeps working beside the explicit ``-r ~/image:=/camera/image_raw``."""

from __future__ import annotations

from typing import Any


def input_topic(node: Any, name: str) -> str:
    """The topic name (for ``create_subscription``) of the input ``name`` of ``node``.

    Precedence: a remap of the private name ``~/<name>``; else a remap of the plain relative ``<name>``
    (the common habit, also what launch files write); else the private ``~/<name>``."""
    namespace = node.get_namespace().rstrip("/")
    private_default = f"{namespace}/{node.get_name()}/{name}"
    if node.resolve_topic_name(f"~/{name}") != private_default:
        return f"~/{name}"
    plain = node.resolve_topic_name(name)
    if plain != f"{namespace}/{name}":
        return plain
    return f"~/{name}"
