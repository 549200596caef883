"""Where every input message went (used, or skipped with a reason) and which inputs fell silent: the
predictor's accounting, kept apart from ROS so it is tested with plain calls."""

from __future__ import annotations

from collections import Counter

class InputLedger:
    """Where every received input message went: used, or skipped with a reason.

    Per stream (``image``, ``pose``, ...): ``received`` counts every message a callback saw; ``used``
    the ones that went into the model's input (an image: part of a window handed to the model; a
    pose/twist: accepted into the pairing queue or as the latest command); ``skipped`` the others,
    by reason (``image_decode_error``, ``pose_not_finite``, ``image_superseded`` ...). What is neither
    yet is still pending (queued images); the caller reports it so that
    ``received == used + sum(skipped) + pending`` can be checked from outside.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.received: Counter[str] = Counter({name: 0 for name in names})
        self.used: Counter[str] = Counter({name: 0 for name in names})
        self.skipped: Counter[str] = Counter()  # by reason; reasons start with their stream's name

    def receive(self, stream: str) -> None:
        self.received[stream] += 1

    def use(self, stream: str, count: int = 1) -> None:
        self.used[stream] += count

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] += count

    def totals(self) -> tuple[int, int, int]:
        """``(received, used, skipped)`` over all streams."""
        return sum(self.received.values()), sum(self.used.values()), sum(self.skipped.values())


class InputMonitor:
    """Arrival rates and silences of named inputs, from arrival times [s] on a monotonic clock."""

    def __init__(self, names: tuple[str, ...], now_s: float) -> None:
        self.names = names
        self.started_s = now_s
        self._last_arrival_s: dict[str, float | None] = {name: None for name in names}
        self._count_since_report: dict[str, int] = {name: 0 for name in names}
        self._report_s = now_s
        self._silent: set[str] = set()

    def arrived(self, name: str, now_s: float) -> None:
        self._last_arrival_s[name] = now_s
        self._count_since_report[name] += 1

    def rates_hz(self, now_s: float) -> dict[str, float]:
        """Mean arrival rate [Hz] of each input since the previous call; resets the counts."""
        elapsed = max(now_s - self._report_s, 1e-9)
        rates = {name: count / elapsed for name, count in self._count_since_report.items()}
        self._count_since_report = {name: 0 for name in self.names}
        self._report_s = now_s
        return rates

    def newly_silent(self, required: tuple[str, ...], now_s: float, timeout_s: float) -> tuple[list[str], list[str]]:
        """``(went_silent, silent)``: inputs that went silent since the last call, and all silent ones now.

        An input is silent when nothing arrived for more than ``timeout_s`` (counted from the start when
        nothing ever arrived); it stops being silent when a message arrives.
        """
        silent = []
        for name in required:
            last = self._last_arrival_s[name]
            if now_s - (self.started_s if last is None else last) > timeout_s:
                silent.append(name)
        went_silent = [name for name in silent if name not in self._silent]
        self._silent = set(silent)
        return went_silent, silent


class RefusalWatch:
    """Inputs whose every message is refused (undecodable images, NaN twists, ...) for a while: such an
    input is not silent, yet nothing of it reaches the model, and /diagnostics must not show it as fine."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()  # per stream
        self.last_reason: dict[str, str] = {}
        self._marks: dict[str, tuple[int, int]] = {}  # stream -> (received, refused) at the previous check
        self._since: dict[str, float] = {}  # stream -> when every message began to be refused [s]

    def refuse(self, stream: str, reason: str) -> None:
        self.refused[stream] += 1
        self.last_reason[stream] = reason

    def refusing(self, received: dict[str, int], now_s: float, timeout_s: float) -> dict[str, float]:
        """``{stream: seconds}`` of the streams in ``received`` (total counts) that have received messages
        at every call for at least ``timeout_s`` and refused all of them (call it periodically, with the
        streams that feed the model)."""
        for stream in set(self._since) - set(received):
            del self._since[stream]  # no longer watched (another modality)
        for stream, got in received.items():
            prev_got, prev_refused = self._marks.get(stream, (0, 0))
            self._marks[stream] = (got, self.refused[stream])
            if got == prev_got:
                self._since.pop(stream, None)  # nothing arrived: a silence, reported as such
                continue
            if self.refused[stream] - prev_refused == got - prev_got:
                self._since.setdefault(stream, now_s)
            else:
                self._since.pop(stream, None)
        return {s: now_s - since for s, since in self._since.items() if now_s - since >= timeout_s - 1e-9}
