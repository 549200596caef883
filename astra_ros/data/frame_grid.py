"""Camera frames onto the model's frame grid by stamp: one rule for the live node, training and evaluation.

The model is trained at one frame interval (``frame_interval_s``, 0.1 s for the default). A camera at
another rate is thinned to that grid (or, slower, has its gaps counted), the same way whether the frames
come live or from a bag, so what a model was trained and scored on is what the node feeds it.
"""

from __future__ import annotations

import numpy as np


class FrameGrid:
    """Takes camera frames onto the model's frame grid by stamp.

    The first frame opens the grid; each later target is the previous one plus the model's interval.
    A frame is taken when it is the camera frame nearest its target (its stamp is at least the target
    minus half the camera's own period), so a 30 Hz camera feeds a 10 Hz model every third frame and
    a 15 Hz one alternately after 67 and 133 ms (100 ms on average). Targets no frame reached are
    counted as gaps: the model then sees two frames one interval apart that were further apart.
    """

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"the frame interval must be > 0 s, got {interval_s}")
        self.interval_ns = int(round(interval_s * 1e9))
        self.gaps = 0  # grid targets no frame reached
        self.reset()

    def reset(self) -> None:
        self._target_ns: int | None = None
        self._last_offer_ns: int | None = None
        self._period_ns: float | None = None  # the camera's own period, smoothed
        self._before_last: tuple | None = None  # the state before the last offer (see undo_last)

    def undo_last(self) -> None:
        """Forget the last offer (a stamp taken back as a glitch): the grid continues from before it."""
        if self._before_last is not None:
            self._target_ns, self._last_offer_ns, self._period_ns, self.gaps = self._before_last
            self._before_last = None

    def offer(self, stamp_ns: int) -> bool:
        """True when the frame stamped ``stamp_ns`` is taken into the model's history."""
        stamp_ns = int(stamp_ns)
        self._before_last = (self._target_ns, self._last_offer_ns, self._period_ns, self.gaps)
        if self._last_offer_ns is not None and stamp_ns > self._last_offer_ns:
            gap = stamp_ns - self._last_offer_ns
            self._period_ns = gap if self._period_ns is None else 0.8 * self._period_ns + 0.2 * gap
        self._last_offer_ns = stamp_ns
        if self._target_ns is None:
            self._target_ns = stamp_ns + self.interval_ns
            return True
        half_period = 0.5 * min(self._period_ns or 0.0, self.interval_ns)
        if stamp_ns < self._target_ns - half_period:
            return False
        missed = int((stamp_ns - self._target_ns + half_period) // self.interval_ns)
        self.gaps += max(0, missed)
        self._target_ns += (missed + 1) * self.interval_ns
        return True


def grid_indices(stamps_ns: np.ndarray, interval_s: float) -> np.ndarray:
    """Indices of the frames (stamps in increasing order) a :class:`FrameGrid` of ``interval_s`` takes."""
    grid = FrameGrid(interval_s)
    return np.array([i for i, stamp in enumerate(np.asarray(stamps_ns, dtype=np.int64)) if grid.offer(int(stamp))],
                    dtype=np.int64)
