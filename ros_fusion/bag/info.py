"""What is in a bag: topics, types, counts, rates from log times and header stamps.

Pure Python (no rclpy): header stamps are read straight out of the CDR bytes
for types whose first field is ``std_msgs/Header`` (known from the rosbags
typestore), which costs 8 bytes per message instead of a deserialisation - so
``ros-fusion info`` also works on a machine without ROS message packages.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .reader import BagReader
from .writer import typestore

NS = 1_000_000_000


@dataclass
class TopicSummary:
    """Statistics of one topic. Rates are messages per second over the span of the times seen."""

    topic: str
    msgtype: str
    count: int
    first_ns: int = 0
    last_ns: int = 0
    rate_hz: float = 0.0
    stamp_rate_hz: float | None = None  # from header.stamp; None when the type has no header
    first_stamp_ns: int | None = None
    last_stamp_ns: int | None = None
    max_gap_s: float = 0.0  # largest log-time gap between consecutive messages
    bytes: int = 0


@dataclass
class BagSummary:
    path: str
    storage: str
    size_bytes: int
    message_count: int
    start_ns: int
    end_ns: int
    duration_s: float
    topics: list[TopicSummary] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def topic(self, name: str) -> TopicSummary:
        for t in self.topics:
            if t.topic == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_header(msgtype: str) -> bool:
    """True when the type's first field is std_msgs/Header (so the stamp sits at CDR offset 4)."""
    fields = typestore().fielddefs.get(msgtype)
    if not fields or not fields[1]:
        return False
    first = fields[1][0]
    # rosbags field: (name, (nodetype, typename)); nodetype 2 = NAME (a nested message)
    try:
        return first[1][1] == "std_msgs/msg/Header"
    except (IndexError, TypeError):
        return False


def header_stamp_ns(cdr: bytes) -> int | None:
    """header.stamp of a CDR message whose first field is a Header, or None if too short/odd."""
    if len(cdr) < 12:
        return None
    endian = "<" if cdr[1] & 1 else ">"
    sec, nsec = struct.unpack_from(endian + "iI", cdr, 4)
    if nsec >= NS:
        return None
    return sec * NS + nsec


def _rate(first: int, last: int, n: int) -> float:
    return (n - 1) * NS / (last - first) if n > 1 and last > first else 0.0


def bag_summary(path: str | Path, *, stamps: bool = True) -> BagSummary:
    """Summarise a bag. With `stamps`, one pass over the data computes gaps and header-stamp rates.

    Raises `BagError` for missing/corrupt bags (see `BagReader`).
    """
    r = BagReader(path)
    topics = {
        name: TopicSummary(name, t.msgtype, t.count) for name, t in sorted(r.topics.items())
    }
    if stamps and r.message_count:
        headed = {name for name, t in topics.items() if has_header(t.msgtype)}
        prev: dict[str, int] = {}
        stamp_lo: dict[str, int] = {}
        stamp_hi: dict[str, int] = {}
        seen: dict[str, int] = {}
        for topic, _, t, data in r.messages():
            ts = topics[topic]
            seen[topic] = seen.get(topic, 0) + 1
            ts.bytes += len(data)
            if topic in prev:
                ts.max_gap_s = max(ts.max_gap_s, (t - prev[topic]) / NS)
            else:
                ts.first_ns = t
            prev[topic] = t
            ts.last_ns = t
            if topic in headed:
                s = header_stamp_ns(data)
                if s is not None:
                    stamp_lo[topic] = min(stamp_lo.get(topic, s), s)
                    stamp_hi[topic] = max(stamp_hi.get(topic, s), s)
        for name, ts in topics.items():
            ts.rate_hz = _rate(ts.first_ns, ts.last_ns, seen.get(name, 0))
            if name in stamp_lo:
                ts.first_stamp_ns, ts.last_stamp_ns = stamp_lo[name], stamp_hi[name]
                ts.stamp_rate_hz = _rate(stamp_lo[name], stamp_hi[name], seen[name])
    elif r.duration_ns > 0:  # index only: average rate over the whole bag
        for ts in topics.values():
            ts.rate_hz = ts.count * NS / r.duration_ns
    return BagSummary(
        path=str(r.path),
        storage=r.storage,
        size_bytes=r.size_bytes,
        message_count=r.message_count,
        start_ns=r.start_ns,
        end_ns=r.end_ns,
        duration_s=r.duration_ns / NS,
        topics=list(topics.values()),
        metadata=dict(r.metadata),
    )


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def render_summary(summary: BagSummary) -> Any:
    """A rich renderable (header lines + one table) for `ros-fusion info`."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text()
    head.append(f"{summary.path}", style="bold")
    head.append(f"  ({summary.storage}, {_human_bytes(summary.size_bytes)})\n")
    head.append(f"messages {summary.message_count}   duration {summary.duration_s:.3f} s")
    if summary.message_count:
        head.append(f"   start {summary.start_ns / NS:.3f} s   end {summary.end_ns / NS:.3f} s")
    table = Table(show_lines=False, header_style="bold")
    for col, kw in (
        ("topic", {"overflow": "fold"}), ("type", {"overflow": "fold"}),
        ("count", {"justify": "right"}), ("rate Hz", {"justify": "right"}),
        ("stamp Hz", {"justify": "right"}), ("max gap s", {"justify": "right"}), ("size", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    for t in summary.topics:
        table.add_row(
            t.topic,
            t.msgtype,
            str(t.count),
            f"{t.rate_hz:.2f}",
            "-" if t.stamp_rate_hz is None else f"{t.stamp_rate_hz:.2f}",
            f"{t.max_gap_s:.3f}",
            _human_bytes(t.bytes),
        )
    parts: list[Any] = [head, table]
    if summary.metadata:
        meta = Table(title="metadata", show_header=False)
        meta.add_column("key", style="bold")
        meta.add_column("value")
        for k, v in sorted(summary.metadata.items()):
            short = v if len(v) <= 80 and "\n" not in v else f"{v.splitlines()[0][:60]} ... ({len(v)} chars)"
            meta.add_row(k, short)
        parts.append(meta)
    return Group(*parts)
