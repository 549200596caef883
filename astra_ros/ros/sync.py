"""Approximate-time pairing of images with state messages (poses, twists) by header stamp, without ROS.

``message_filters.ApproximateTimeSynchronizer`` has no PyPI wheel, so this is the small part of it the
predictor needs: two streams, each in stamp order, and every image paired with the state message whose
stamp is nearest to it, if that one is at most ``slop_ns`` away.

An image is decided as soon as it can be: once a state stamped at or after the image has arrived, no
later state can be nearer (states arrive in stamp order), so the nearer of that one and the last state
before the image is the match. Two modes pair as the bag reader does for training:

* ``interpolate`` (poses): the image takes the state interpolated between those two at its stamp;
* ``hold_ns`` (commands: twists, keys): the image takes the latest state at or before it, the command
  in force when it was taken (zero-order hold); one older than ``hold_ns`` means the controller has
  stopped the robot, and the image pairs with ``stale_state`` (a zero twist).

Both queues are bounded; an image that waits longer than the image queue allows (its state stream is
late or silent) is dropped and counted. Every drop is counted by reason in
:attr:`ApproximateTimePairer.dropped`, so the node can report it.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

ImageT = TypeVar("ImageT")
StateT = TypeVar("StateT")

# Drop reasons (keys of ApproximateTimePairer.dropped and MonotonicStamps users).
DROP_IMAGE_QUEUE_FULL = "image_queue_full"  # the state stream fell behind by more than the image queue
DROP_NO_STATE_IN_SLOP = "no_state_within_slop"  # nearest state further than slop from the image
DROP_IMAGE_BACKWARDS = "image_stamp_backwards"  # image stamp not after the previous image's
DROP_STATE_BACKWARDS = "state_stamp_backwards"  # state stamp before the previous state's


@dataclass(frozen=True)
class Pair(Generic[ImageT, StateT]):
    """An image and the state message matched to it; stamps in [ns]."""

    image_stamp_ns: int
    image: ImageT
    state_stamp_ns: int
    state: StateT


class MonotonicStamps:
    """Accepts stamps that move forward; refuses stamps that go backwards, unless time clearly restarted.

    A stamp earlier than the last accepted one is refused, and so is an equal one if ``strict`` (a
    ``"duplicate"``: a stuck driver, a camera that leaves stamps at 0). After ``restart_after``
    earlier stamps in a row that move forward among themselves, the stream is taken to have
    restarted (a bag played again, a simulator reset): the stamp is accepted, :attr:`restarts`
    counts it, and :meth:`accept` returns ``"restart"`` so the caller can clear its history.
    Duplicates never count towards a restart, nor do earlier stamps that disagree with each other.

    A single stamp far in the future (a driver glitch) would otherwise make every good stamp after it
    "backwards" until a restart clears the history. So a forward jump of more than ``max_jump_ns`` is
    accepted but remembered: if the next stamp lands between the stamp before the jump and the jump,
    nearer the former, the jump was the outlier. That stamp is accepted and
    :meth:`accept` returns ``"jump_undone"``; :attr:`undone_ns` is the outlier's stamp, which the caller
    takes back out of its queues. A next stamp after the jump confirms it (a real gap in the stream).
    """

    def __init__(self, *, strict: bool, restart_after: int = 5, max_jump_ns: int | None = None) -> None:
        if restart_after < 1:
            raise ValueError(f"restart_after must be >= 1, got {restart_after}")
        if max_jump_ns is not None and max_jump_ns <= 0:
            raise ValueError(f"max_jump_ns must be > 0, got {max_jump_ns}")
        self.strict = strict
        self.restart_after = restart_after
        self.max_jump_ns = max_jump_ns
        self.last_ns: int | None = None
        self.refused_in_a_row = 0
        self._last_refused_ns: int | None = None
        self._before_jump_ns: int | None = None  # the stamp before an unconfirmed forward jump
        self.undone_ns: int | None = None
        self.restarts = 0
        self.jumps_undone = 0

    def accept(self, stamp_ns: int) -> str:
        """``"ok"`` (accepted), ``"duplicate"`` / ``"backwards"`` (refused), ``"restart"`` (accepted
        after a restart) or ``"jump_undone"`` (accepted; the previous stamp was an outlier)."""
        last = self.last_ns
        if last is None or stamp_ns > last or (stamp_ns == last and not self.strict):
            jumped = self.max_jump_ns is not None and last is not None and stamp_ns - last > self.max_jump_ns
            self._before_jump_ns = last if jumped else None
            self.last_ns = stamp_ns
            self.refused_in_a_row = 0
            return "ok"
        if stamp_ns == last:
            return "duplicate"
        before = self._before_jump_ns
        if before is not None and before < stamp_ns and stamp_ns - before < last - stamp_ns:
            self.undone_ns = last
            self.jumps_undone += 1
            self._before_jump_ns = None
            self.last_ns = stamp_ns
            self.refused_in_a_row = 0
            self._last_refused_ns = None
            return "jump_undone"
        consistent = self._last_refused_ns is not None and stamp_ns > self._last_refused_ns
        self.refused_in_a_row = self.refused_in_a_row + 1 if consistent else 1
        self._last_refused_ns = stamp_ns
        if self.refused_in_a_row < self.restart_after:
            return "backwards"
        self.last_ns = stamp_ns
        self.refused_in_a_row = 0
        self._last_refused_ns = None
        self._before_jump_ns = None
        self.restarts += 1
        return "restart"

    def reset(self) -> None:
        self.last_ns = None
        self.refused_in_a_row = 0
        self._last_refused_ns = None
        self._before_jump_ns = None


class ApproximateTimePairer(Generic[ImageT, StateT]):
    """Pairs each image with the nearest-stamped state message within ``slop_ns``.

    ``image_queue_size`` images may wait for a state stamped after them; one pushed out of a full queue
    (the states' clock lags the images') is decided with the states there are. States are kept by time,
    not by count: a 1 kHz joint-state topic and a camera whose images arrive 120 ms late need 120+
    states, so a fixed count would silently lose every image. A state is dropped once a later one is at
    or before the last image decided (no image still to pair can want it: queued images may yet be
    taken back), or when it is more than ``state_history_ns`` older than the second-newest state
    (images that late cannot pair anyway); ``max_states`` bounds memory whatever the rates.
    Stamps are integers in [ns]; each stream must be in stamp order (filter with
    :class:`MonotonicStamps` first: out-of-order messages are refused here and counted).

    ``hold_ns``: pair each image with the latest state at or before it, not the nearest (``slop_ns`` is
    then unused); with none, or only one older than ``hold_ns``, the image pairs with ``stale_state``
    (counted in :attr:`stale_pairs`).
    ``interpolate(before, after, fraction)``: an image whose nearest state is within the slop and that
    lies between two states pairs with their interpolation at its stamp (the pair's state stamp is
    then the image's).
    """

    def __init__(self, *, slop_ns: int, image_queue_size: int = 10, state_history_ns: int = 2_000_000_000,
                 max_states: int = 20_000, hold_ns: int | None = None, stale_state: StateT | None = None,
                 interpolate: Callable[[StateT, StateT, float], StateT] | None = None) -> None:
        if slop_ns < 0:
            raise ValueError(f"slop_ns must be >= 0, got {slop_ns}")
        if hold_ns is not None and (hold_ns < 0 or stale_state is None):
            raise ValueError(f"hold_ns must be >= 0 and come with a stale_state, got {hold_ns}, {stale_state!r}")
        if hold_ns is not None and interpolate is not None:
            raise ValueError("a pairer holds (commands) or interpolates (poses), not both")
        if hold_ns is not None and state_history_ns < hold_ns:
            raise ValueError(f"state_history_ns ({state_history_ns}) must cover hold_ns ({hold_ns})")
        if image_queue_size < 1 or max_states < 1:
            raise ValueError(f"queue sizes must be >= 1, got images {image_queue_size}, states {max_states}")
        if state_history_ns < slop_ns:
            raise ValueError(f"state_history_ns ({state_history_ns}) must cover the slop ({slop_ns})")
        self.slop_ns = int(slop_ns)
        self.hold_ns = None if hold_ns is None else int(hold_ns)
        self.stale_state = stale_state
        self.stale_pairs = 0  # images paired with stale_state (hold mode)
        self.interpolate = interpolate
        self.state_history_ns = int(state_history_ns)
        self._images: deque[tuple[int, ImageT]] = deque()
        self._states: deque[tuple[int, StateT]] = deque(maxlen=max_states)
        # Stamp of the newest image accepted (queued or decided): later images are stamped after it.
        self._last_image_ns: int | None = None
        # Stamp of the newest image decided (paired, dropped or taken): states are pruned by it, not by
        # queued images, which are stamped after every state and may still be taken back as outliers.
        self._last_decided_ns: int | None = None
        self.image_queue_size = image_queue_size
        self.dropped: Counter[str] = Counter()
        self.pairs = 0
        # Image stamp minus its nearest state's stamp, of the last image dropped for no state in the slop
        # (hold mode: paired with stale_state): seconds or more means the streams carry different clocks.
        self.last_unpaired_gap_ns: int | None = None

    @property
    def pending_images(self) -> int:
        """Images waiting for a state stamped at or after them."""
        return len(self._images)

    def add_image(self, stamp_ns: int, image: ImageT) -> list[Pair[ImageT, StateT]]:
        """Queue an image; return the pairs (possibly including it) that are now decided."""
        if self._last_image_ns is not None and stamp_ns <= self._last_image_ns:  # queued or already decided
            self.dropped[DROP_IMAGE_BACKWARDS] += 1
            return []
        self._images.append((int(stamp_ns), image))
        self._last_image_ns = int(stamp_ns)
        decided: list[Pair[ImageT, StateT]] = []
        while len(self._images) > self.image_queue_size:
            oldest_ns, oldest = self._images.popleft()
            self._last_decided_ns = oldest_ns
            pair = self._decide_without_a_later_state(oldest_ns, oldest)
            if pair is not None:
                decided.append(pair)
        return decided + self._decide()

    def add_state(self, stamp_ns: int, state: StateT) -> list[Pair[ImageT, StateT]]:
        """Record a state message; return the pairs that are now decided."""
        if self._states and stamp_ns < self._states[-1][0]:
            self.dropped[DROP_STATE_BACKWARDS] += 1
            return []
        self._states.append((int(stamp_ns), state))
        decided = self._decide()
        self._prune_states()
        return decided

    @property
    def queued_states(self) -> int:
        """States kept for pairing."""
        return len(self._states)

    def _prune_states(self) -> None:
        states = self._states
        # Every image still to pair is stamped after the last one decided. Not the oldest waiting image: all
        # states are before it, so pruning by it would keep only the newest, and if it is an outlier that
        # discard_images_after takes back, the good images after it would find their states gone.
        first_needed_ns = self._last_decided_ns
        if first_needed_ns is not None:
            while len(states) > 1 and states[1][0] <= first_needed_ns:
                states.popleft()
        # Measured from the second-newest state: a single stamp glitched far ahead (which the caller may
        # take back with discard_states_after) must not flush the states the next images need.
        newest_trusted_ns = states[-2][0] if len(states) > 1 else states[-1][0]
        oldest_kept_ns = newest_trusted_ns - self.state_history_ns
        while len(states) > 2 and states[0][0] < oldest_kept_ns:
            states.popleft()

    def reset(self) -> None:
        """Forget queued images and states (the counters stay)."""
        self._images.clear()
        self._states.clear()
        self._last_image_ns = None
        self._last_decided_ns = None

    def discard_images_after(self, stamp_ns: int) -> list[tuple[int, ImageT]]:
        """Remove and return the queued images stamped after ``stamp_ns`` (an outlier stamp taken back)."""
        removed = [entry for entry in self._images if entry[0] > stamp_ns]
        self._images = deque(entry for entry in self._images if entry[0] <= stamp_ns)
        if self._last_decided_ns is not None and self._last_decided_ns > stamp_ns:  # the outlier was decided
            self._last_decided_ns = int(stamp_ns) - 1
        # Images from stamp_ns on may come again: the newest accepted is the newest kept or decided.
        kept = [self._images[-1][0]] if self._images else []
        decided = [self._last_decided_ns] if self._last_decided_ns is not None else []
        self._last_image_ns = max(kept + decided, default=None)
        return removed

    def discard_states_after(self, stamp_ns: int) -> int:
        """Remove the queued states stamped after ``stamp_ns``; how many."""
        kept = [entry for entry in self._states if entry[0] <= stamp_ns]
        removed = len(self._states) - len(kept)
        self._states = deque(kept, maxlen=self._states.maxlen)
        return removed

    def take_pending_images(self) -> list[tuple[int, ImageT]]:
        """Remove and return the images still waiting for a state, oldest first, as ``(stamp_ns, image)``.

        For a caller that pairs them otherwise (a fallback state) or counts them as discarded.
        """
        pending = list(self._images)
        self._images.clear()
        if pending:
            self._last_decided_ns = pending[-1][0]
        return pending

    def _decide(self) -> list[Pair[ImageT, StateT]]:
        decided: list[Pair[ImageT, StateT]] = []
        if not self._states:
            return decided
        newest_state_ns = self._states[-1][0]
        while self._images and self._images[0][0] <= newest_state_ns:
            image_ns, image = self._images.popleft()
            self._last_decided_ns = image_ns
            pair = self._pair_one(image_ns, image)
            if pair is not None:
                decided.append(pair)
        return decided

    def _decide_without_a_later_state(self, image_ns: int, image: ImageT) -> Pair[ImageT, StateT] | None:
        """An image pushed out of the full queue before a state stamped after it came: the states lag the
        images (a camera clock ahead of the robot's). Decided with the states there are, so that it pairs
        with what is in force or is dropped for no state within the slop, with its gap for the caller's
        clock warning, not queued until it silently falls out. With no state at all it is queue-full."""
        if not self._states:
            self.dropped[DROP_IMAGE_QUEUE_FULL] += 1
            return None
        return self._pair_one(image_ns, image)

    def _pair_one(self, image_ns: int, image: ImageT) -> Pair[ImageT, StateT] | None:
        """The image with its state from the queued ones (at least one): the one in force (hold mode), or
        the nearest within the slop, interpolated when the image lies between two; None, counted, when
        no state is within the slop."""
        if self.hold_ns is not None:
            self.pairs += 1
            return self._held_pair(image_ns, image)
        before, after = self._neighbours(image_ns)
        state_ns, state = _nearer(before, after, image_ns)
        if abs(state_ns - image_ns) > self.slop_ns:
            self.dropped[DROP_NO_STATE_IN_SLOP] += 1
            self.last_unpaired_gap_ns = image_ns - state_ns
            return None
        between = before is not None and after is not None and before[0] < image_ns < after[0]
        if self.interpolate is not None and between:
            fraction = (image_ns - before[0]) / (after[0] - before[0])
            state_ns, state = image_ns, self.interpolate(before[1], after[1], fraction)
        self.pairs += 1
        return Pair(image_ns, image, state_ns, state)

    def _held_pair(self, image_ns: int, image: ImageT) -> Pair[ImageT, StateT]:
        """The image with the state in force at its stamp (hold mode): the latest at or before it, if
        not older than ``hold_ns``; else ``stale_state``, stamped with the image."""
        held = None
        for entry in self._states:
            if entry[0] > image_ns:
                break
            held = entry
        if held is not None and image_ns - held[0] <= self.hold_ns:
            return Pair(image_ns, image, held[0], held[1])
        self.stale_pairs += 1
        self.last_unpaired_gap_ns = image_ns - self._nearest_state(image_ns)[0]
        return Pair(image_ns, image, image_ns, self.stale_state)

    def _neighbours(self, image_ns: int) -> tuple[tuple[int, Any] | None, tuple[int, Any] | None]:
        """The last queued state before ``image_ns`` and the first at or after it (None where there is none)."""
        before: tuple[int, Any] | None = None
        for entry in self._states:
            if entry[0] >= image_ns:
                return before, entry
            before = entry
        return before, None

    def _nearest_state(self, image_ns: int) -> tuple[int, Any]:
        """The queued state nearest to ``image_ns`` (there is at least one)."""
        return _nearer(*self._neighbours(image_ns), image_ns)


def _nearer(before: tuple[int, Any] | None, after: tuple[int, Any] | None, stamp_ns: int) -> tuple[int, Any]:
    """Of the states around ``stamp_ns`` (at least one), the nearer one (the later on a tie)."""
    if after is None:
        return before
    return after if before is None or stamp_ns - before[0] >= after[0] - stamp_ns else before
