"""Argument types and output checks shared by the console scripts.

A bad value should stop a command at once with one line naming the option, not after minutes of
work with a traceback (an image suffix Pillow does not know, an ``--out`` that is a file).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _check_can_create(parser: argparse.ArgumentParser, folder: Path, option: str, shown: Path) -> None:
    """``parser.error`` unless ``folder`` is, or can be made as, a writable directory (nothing is created)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"{option} {shown}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"{option} {shown}: {existing} is not writable")


def check_output_file(parser: argparse.ArgumentParser, path: Path, suffixes: tuple[str, ...],
                      option: str = "--out") -> Path:
    """``path`` as a file to write; ``parser.error`` (exit 2) unless its name ends in one of
    ``suffixes``, it is not a directory and its folder is or can be made writable."""
    if path.is_dir():
        parser.error(f"{option} {path} is a directory; give a file name ending in {' or '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        parser.error(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    _check_can_create(parser, path.parent, option, path)
    return path


def check_output_dir(parser: argparse.ArgumentParser, path: Path, option: str = "--out") -> Path:
    """``path`` as a directory to write into; ``parser.error`` if it is a file or could not be created."""
    if path.exists() and not path.is_dir():
        parser.error(f"{option} {path} exists and is not a directory")
    _check_can_create(parser, path, option, path)
    return path
