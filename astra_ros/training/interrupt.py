"""Ctrl-C during training: finish the step that is running, then save and stop, instead of a traceback
that loses every step since the last checkpoint. A second Ctrl-C interrupts at once."""

from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    """While installed, the first SIGINT only sets ``requested``; the second raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    @classmethod
    def install(cls, enabled: bool = True) -> "DeferredInterrupt":
        """Take over SIGINT where ``enabled`` (not with several processes: they must not stop at different
        steps) and in the main thread (where Python delivers signals); otherwise a flag that stays false."""
        flag = cls()
        if enabled and threading.current_thread() is threading.main_thread():
            flag._previous = signal.signal(signal.SIGINT, flag._handle)
        return flag

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
