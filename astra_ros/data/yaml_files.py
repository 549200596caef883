"""YAML as the project's files are read: safe, and a key given twice is an error (plain YAML keeps the
last one without a word, so a recipe or profile could silently not say what its author wrote)."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(ValueError):
    """A mapping names one key twice; the message gives the key and its line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} is given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_unique_keys(text: str) -> Any:
    """``yaml.safe_load`` of ``text`` that raises :class:`DuplicateKeyError` for a key given twice."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
