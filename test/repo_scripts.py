"""Load one of the repository's scripts (bench/, scripts/: not package modules) by its path, for its tests."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """The module of ``REPO / relative`` (e.g. ``"bench/plan_eval.py"``), registered under its file's stem
    so that what looks its module up by name (dataclasses, pickling) finds it."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
