"""builtin_interfaces Time/Duration <-> int64 nanoseconds (docs/DESIGN.md §4).

Every internal time is an int64 of nanoseconds; this module is the one place
where a ROS stamp becomes such an integer and back, so a rounding or sign
convention can never differ between the nodes and the bag tools.
"""

from __future__ import annotations

from builtin_interfaces.msg import Duration, Time
from std_msgs.msg import Header

from ..core.types import NS_PER_S, RejectedInput

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def stamp_to_ns(stamp) -> int:
    """`builtin_interfaces/Time` (or anything with `sec`/`nanosec`, e.g. rosbags) → int ns.

    A `nanosec` outside [0, 1e9) is not a normalised stamp: a publisher with
    such a clock is broken, so the message is rejected instead of guessed at.
    """
    try:
        sec = int(stamp.sec)
        nanosec = int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError) as exc:
        raise RejectedInput("stamp", f"not a time stamp: {exc}", "header.stamp") from exc
    if not 0 <= nanosec < NS_PER_S:
        raise RejectedInput("stamp", f"nanosec={nanosec} outside [0, 1e9)", "header.stamp.nanosec")
    return sec * NS_PER_S + nanosec


def ns_to_stamp(ns: int) -> Time:
    """int ns → `builtin_interfaces/Time` (floor division, so nanosec is always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise RejectedInput("stamp", f"{ns} ns does not fit builtin_interfaces/Time (int32 seconds)", "stamp")
    return Time(sec=sec, nanosec=nanosec)


def seconds_to_duration(seconds: float) -> Duration:
    """Seconds (float) → `builtin_interfaces/Duration`, e.g. a marker lifetime."""
    sec, nanosec = divmod(round(float(seconds) * NS_PER_S), NS_PER_S)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise RejectedInput("stamp", f"{seconds} s does not fit builtin_interfaces/Duration", "duration")
    return Duration(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str) -> Header:
    """A `std_msgs/Header` for an outgoing message."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=str(frame_id))
