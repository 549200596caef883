"""Putting one topic's messages in stamp order and sampling them at the images' stamps.

Poses are interpolated (linear positions, slerped rotations), commands held zero-order with a timeout,
latched states held; stamps are checked for clock jumps, duplicates and clocks other than the images'.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from astra_ros.data.bag_files import BagError
from astra_ros.data.geometry import quaternion_slerp

# [ns] How far a message's stamp may lie before that of one recorded earlier on its topic and still be
# sorted into place: transport jitter is milliseconds; a stamp further back is a clock that jumped
# (a restarted publisher, a reset simulation), and sorting would splice two runs into one episode.
MAX_REORDER_NS = 500_000_000
# [ns] How much the median delay from stamp to bag receive time may differ between a topic and the
# images. Latencies differ by milliseconds; a topic stamped on another clock (simulated vs wall time,
# an unsynchronised machine) differs by seconds or years, and its messages would pair with the wrong frames.
CLOCK_TOLERANCE_NS = 1_000_000_000

_Timing = Literal["interpolated", "command", "latched"]  # how a series is sampled at the image stamps


def _format_stamp(stamp_ns: int) -> str:
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d} s"



def _stamp_order(bag_path: Path, topic: str, stamps_ns: np.ndarray) -> np.ndarray:
    """Indices that sort one topic's messages (in bag order) by stamp; equal stamps keep bag order.

    A message recorded after a later-stamped one (jitter in transport or in the recorder's queues) is
    sorted into place. One stamped more than :data:`MAX_REORDER_NS` before an earlier-recorded message is
    refused: that is a clock jumping back, and sorting would interleave two runs.
    """
    if len(stamps_ns) == 0:
        return np.zeros(0, dtype=np.int64)
    latest = np.maximum.accumulate(stamps_ns)  # the latest stamp recorded so far, per message
    lag = latest - stamps_ns
    worst = int(np.argmax(lag))
    if lag[worst] > MAX_REORDER_NS:
        raise BagError(
            f"bag {bag_path}: stamps on {topic} go backwards at message {worst}: {_format_stamp(int(stamps_ns[worst]))} "
            f"recorded after {_format_stamp(int(latest[worst]))}, more than the {MAX_REORDER_NS / 1e9:g} s of "
            "reordering that transport jitter explains: did its clock jump back?"
        )
    return np.argsort(stamps_ns, kind="stable")


def _check_duplicates(
    bag_path: Path, topic: str, stamps_ns: np.ndarray, order: np.ndarray, values: np.ndarray | None
) -> None:
    """Refuse two messages (sorted by ``order``) with one stamp: always for images (``values`` None), and
    for samples whose values differ, since which of them holds at that stamp cannot be told. Repeats of
    one value (a publisher sending a pose twice) are harmless to interpolation and kept."""
    sorted_stamps = stamps_ns[order]
    same = np.flatnonzero(sorted_stamps[1:] == sorted_stamps[:-1])
    if values is not None and same.size:
        first, second = values[order[same]], values[order[same + 1]]
        differs = ~((first == second) | (np.isnan(first) & np.isnan(second))).all(axis=1)
        same = same[differs]
    if same.size:
        a, b = sorted(int(i) for i in order[[same[0], same[0] + 1]])
        raise BagError(
            f"bag {bag_path}: messages {a} and {b} on {topic} carry the same stamp "
            f"{_format_stamp(int(sorted_stamps[same[0]]))}"
            + (" but different values" if values is not None else "; images need distinct stamps")
        )


def _permute_in_place(array: np.ndarray, order: np.ndarray) -> None:
    """``array[:] = array[order]`` holding one row aside per cycle of the permutation, not a copy of all."""
    done = order == np.arange(len(order))
    for start in range(len(order)):
        if done[start]:
            continue
        held = array[start].copy()
        position = start
        while order[position] != start:
            array[position] = array[order[position]]
            done[position] = True
            position = int(order[position])
        array[position] = held
        done[position] = True


def _interpolation_indices(
    source_stamps: np.ndarray, query_stamps: np.ndarray, max_extrapolation_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bracketing sample indices, the fraction between them, and which queries are usable."""
    upper = np.clip(np.searchsorted(source_stamps, query_stamps, side="left"), 0, len(source_stamps) - 1)
    lower = np.clip(upper - 1, 0, len(source_stamps) - 1)
    # Exact hits and queries before the first sample use one sample.
    exact = source_stamps[upper] == query_stamps
    lower = np.where(exact | (query_stamps < source_stamps[0]), upper, lower)
    span = (source_stamps[upper] - source_stamps[lower]).astype(np.float64)
    fraction = np.where(span > 0, (query_stamps - source_stamps[lower]) / np.where(span > 0, span, 1.0), 0.0)
    fraction = np.clip(fraction, 0.0, 1.0)
    inside = (query_stamps >= source_stamps[0] - max_extrapolation_ns) & (
        query_stamps <= source_stamps[-1] + max_extrapolation_ns
    )
    return lower, upper, fraction, inside


def interpolate_poses(
    source_stamps_ns: np.ndarray,
    positions: np.ndarray,
    quats_xyzw: np.ndarray,
    query_stamps_ns: np.ndarray,
    max_extrapolation_ns: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Poses at ``query_stamps_ns``: linear positions [m] ``[Q, 3]`` and slerped quaternions ``[Q, 4]``.

    Queries more than ``max_extrapolation_ns`` [ns] outside the source range are NaN; closer ones hold the edge pose.
    """
    lower, upper, fraction, inside = _interpolation_indices(source_stamps_ns, query_stamps_ns, max_extrapolation_ns)
    out_positions = positions[lower] + fraction[:, None] * (positions[upper] - positions[lower])
    out_quats = quaternion_slerp(quats_xyzw[lower], quats_xyzw[upper], fraction)
    out_positions[~inside] = np.nan
    out_quats[~inside] = np.nan
    return out_positions, out_quats


@dataclass(frozen=True)
class _ImageClock:
    """The images' stamps, which every other topic is paired against."""

    topic: str
    stamps_ns: np.ndarray  # int64 [T] header stamps, sorted
    received_ns: np.ndarray  # int64 [T] bag timestamps

    @cached_property
    def median_delay_s(self) -> float:
        """Median delay from stamp to bag receive time [s], the clock every other topic is compared to."""
        return float(np.median(self.received_ns - self.stamps_ns)) * 1e-9


def _check_clock(
    bag_path: Path, topic: str, stamps_ns: np.ndarray, received_ns: np.ndarray, images: _ImageClock, timing: _Timing
) -> None:
    """Refuse a topic whose stamps cannot say which frame its messages belong to: stamps left unset, a
    range that misses the images', or stamps on another clock than the images' (measured as the median
    delay from stamp to bag receive time, which differs by more than :data:`CLOCK_TOLERANCE_NS`)."""
    if len(stamps_ns) > 1 and stamps_ns[0] == stamps_ns[-1]:
        raise BagError(f"bag {bag_path}: all {len(stamps_ns)} messages on {topic} carry the same stamp "
                       f"{_format_stamp(int(stamps_ns[0]))}: their header stamps are not set (left at 0?); "
                       "record them stamped, or as a headerless type (stamped with the bag's time)")
    # A latched state published once before the first image still holds for every frame.
    starts_late = stamps_ns[0] > images.stamps_ns[-1]
    ends_early = timing != "latched" and stamps_ns[-1] < images.stamps_ns[0]
    if starts_late or ends_early:
        raise BagError(f"bag {bag_path}: the stamps on {topic} ({_format_stamp(int(stamps_ns[0]))} to "
                       f"{_format_stamp(int(stamps_ns[-1]))}) do not overlap the images' "
                       f"({_format_stamp(int(images.stamps_ns[0]))} to {_format_stamp(int(images.stamps_ns[-1]))}): "
                       "are they on another clock?")
    if timing == "latched":
        # A latched message published before the recording is received when it starts: its delay says
        # nothing about its clock. Only those stamped within the images' span can say it.
        in_span = stamps_ns >= images.stamps_ns[0]
        if not in_span.any():
            return
        stamps_ns, received_ns = stamps_ns[in_span], received_ns[in_span]
    delay_s = float(np.median(received_ns - stamps_ns)) * 1e-9
    image_delay_s = images.median_delay_s
    if abs(delay_s - image_delay_s) > CLOCK_TOLERANCE_NS * 1e-9:
        raise BagError(
            f"bag {bag_path}: {topic!r} is on another clock than {images.topic!r}: its stamps are "
            f"{image_delay_s - delay_s:+.3f} s off the images' (median bag receive time minus stamp: {delay_s:.3f} s "
            f"on {topic}, {image_delay_s:.3f} s on {images.topic}); record both on one clock (use_sim_time?)"
        )


def zero_order_hold(
    source_stamps_ns: np.ndarray, values: np.ndarray, query_stamps_ns: np.ndarray, max_age_ns: int | None = None
) -> np.ndarray:
    """The latest of ``values [S, ...]`` at or before each query stamp; zeros before the first sample and,
    when ``max_age_ns`` [ns] is given, where the latest sample is older than that."""
    index = np.searchsorted(source_stamps_ns, query_stamps_ns, side="right") - 1
    clipped = np.clip(index, 0, len(values) - 1)
    result = values[clipped].copy()
    result[index < 0] = 0.0
    if max_age_ns is not None:
        result[query_stamps_ns - source_stamps_ns[clipped] > max_age_ns] = 0.0
    return result


def hold_latest(
    source_stamps_ns: np.ndarray, values: np.ndarray, query_stamps_ns: np.ndarray, max_extrapolation_ns: int
) -> np.ndarray:
    """The latest of ``values [S, ...]`` at or before each query stamp, for states published on change.

    Before the first sample: the first value up to ``max_extrapolation_ns`` [ns] ahead of it, NaN further.
    After the last sample the state still holds (nothing changed it).
    """
    index = np.searchsorted(source_stamps_ns, query_stamps_ns, side="right") - 1
    result = values[np.clip(index, 0, len(values) - 1)].astype(np.float64)
    result[query_stamps_ns < source_stamps_ns[0] - max_extrapolation_ns] = np.nan
    return result
