"""The package logger's level for the length of one console-script call.

The console scripts set how much of ``astra_ros``'s logging they show (``astra-eval --quiet``: errors only).
Called in-process (tests, notebooks, a user's script) they must hand the level back: a quiet evaluation
otherwise silenced the warnings of everything that ran after it in the same process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def package_log_level(level: int) -> Iterator[None]:
    """Set the ``astra_ros`` logger to ``level`` inside the block; restore its previous level after it."""
    logger = logging.getLogger("astra_ros")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
