"""Play a bag into the live ROS graph with real-time pacing (`ros-fusion replay`).

The raw CDR bytes from the bag are published as they are (`Publisher.publish`
accepts bytes), so replay costs no conversion and is bit-exact. Pacing sleeps
until each message's target wall time ``wall0 + (log_time - t0) / rate`` (a
coarse `time.sleep`, then a short spin for the last millisecond) and records
how late every publish was; `ReplayStats` reports p50/p99/max lateness, which
is the number to look at before trusting latency measured on a replay.

QoS: RELIABLE, depth 10 for every topic (matches reliable *and* best-effort
subscribers), ``/rig`` TRANSIENT_LOCAL so late subscribers still get the rig.
With `clock=True`, ``/clock`` (rosgraph_msgs/Clock) follows the bag's log
time (before each message and at `clock_hz` in between) for ``use_sim_time``.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.publisher import Publisher
from rosgraph_msgs.msg import Clock

from ..bag.errors import BagError
from ..bag.info import has_header
from ..bag.reader import BagReader
from ..core.events import RIG_TOPIC
from ..core.types import NS_PER_S, RejectedInput
from .qos import latched_qos, output_qos
from .serialization import message_class
from .stamps import ns_to_stamp

_SPIN_S = 0.001  # final stretch busy-waited for sub-millisecond accuracy
_LATENESS_WINDOW = 200_000  # lateness percentiles cover the most recent publishes (bounded memory when looping)
_STAMP = struct.Struct("<iI")


@dataclass
class ReplayStats:
    """What a replay did. Lateness = publish wall time - target wall time, in milliseconds."""

    published: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    loops: int = 0
    wall_s: float = 0.0
    bag_s: float = 0.0
    lateness_p50_ms: float = 0.0
    lateness_p99_ms: float = 0.0
    lateness_max_ms: float = 0.0
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why
    interrupted: bool = False


def parse_remaps(remaps: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["/a:=/b", ...]`` or a mapping → {old: new}; malformed entries raise ValueError."""
    if remaps is None:
        return {}
    if isinstance(remaps, Mapping):
        items = list(remaps.items())
    else:
        items = []
        for r in remaps:
            old, sep, new = r.partition(":=")
            if not sep:
                raise ValueError(f"remap {r!r} must look like /old/topic:=/new/topic")
            items.append((old, new))
    out: dict[str, str] = {}
    for old, new in items:
        old, new = old.strip(), new.strip()
        if not old.startswith("/") or not new.startswith("/") or len(new) < 2:
            raise ValueError(f"remap {old}:={new}: both sides must be absolute topic names")
        out[old] = new
    return out


def _percentile_ms(values: Iterable[int], q: float) -> float:
    arr = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(arr, q)) / 1e6 if arr.size else 0.0


class BagReplayer(Node):
    """Publishes a bag's messages with real-time pacing; `play()` runs it in the calling thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        rate: float = 1.0,
        start_s: float = 0.0,
        loop: bool = False,
        topics: Iterable[str] | None = None,
        remaps: Iterable[str] | Mapping[str, str] | None = None,
        clock: bool = False,
        clock_hz: float = 100.0,
        stamp_now: bool = False,
        context: Context | None = None,
        node_name: str = "bag_replayer",
    ) -> None:
        if not (rate > 0 and np.isfinite(rate)):
            raise ValueError(f"rate must be a finite number > 0, got {rate}")
        if not (start_s >= 0 and np.isfinite(start_s)):
            raise ValueError(f"start offset must be >= 0 s, got {start_s}")
        if not clock_hz > 0:
            raise ValueError(f"clock rate must be > 0 Hz, got {clock_hz}")
        self.reader = BagReader(path)  # BagError before any ROS resource exists
        self.remaps = parse_remaps(remaps)
        if topics is not None:
            topics = list(topics)
            missing = [t for t in topics if t not in self.reader.topics]
            if missing:
                have = ", ".join(sorted(self.reader.topics))
                raise BagError(f"{path}: topic(s) {', '.join(missing)} not in bag (it has: {have})")
        super().__init__(node_name, context=context)
        self.rate = float(rate)
        self.start_s = float(start_s)
        self.loop = loop
        self.clock_period_ns = int(NS_PER_S / clock_hz)
        self.stamp_now = stamp_now
        self.stats = ReplayStats()
        self._stamp_bag0: int | None = None  # bag log time mapped to `_wall_epoch0` (stamp_now)
        self._wall_epoch0 = 0
        self._lateness: deque[int] = deque(maxlen=_LATENESS_WINDOW)
        self._pubs: dict[str, Publisher] = {}
        self._headed: set[str] = set()
        for name, info in sorted(self.reader.topics.items()):
            if topics is not None and name not in topics:
                continue
            try:
                cls = message_class(info.msgtype)
            except RejectedInput as e:
                self.stats.skipped_topics[name] = e.detail
                self.get_logger().warning(f"not replaying {name}: {e.detail}")
                continue
            qos = latched_qos() if name == RIG_TOPIC or "transient_local" in info.offered_qos else output_qos()
            self._pubs[name] = self.create_publisher(cls, self.remaps.get(name, name), qos)
            if has_header(info.msgtype):
                self._headed.add(name)
        self._clock_pub = self.create_publisher(Clock, "/clock", output_qos(1)) if clock else None

    # -- helpers -------------------------------------------------------------------
    @property
    def output_topics(self) -> list[str]:
        """Topic names as published (after remapping)."""
        return sorted(self.remaps.get(t, t) for t in self._pubs)

    def wait_for_subscribers(self, timeout_s: float, topics: Iterable[str] | None = None) -> bool:
        """Block until every publisher (or those of `topics`, bag names) has a matched subscriber."""
        pubs = [p for t, p in self._pubs.items() if topics is None or t in set(topics)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.context.ok():
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.01)
        return all(p.get_subscription_count() > 0 for p in pubs)

    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=ns_to_stamp(bag_ns)))

    def _restamp(self, data: bytes) -> bytes:
        """Move header.stamp (CDR offset 4) onto the wall clock, keeping everything else.

        Every stamp is shifted by the same mapping as the publish times (bag time
        `bag0` ↔ wall time `_wall_epoch0`, scaled by `rate`), so the gap between a
        message's stamp and its publication — the sensor latency the bag
        recorded — and the offsets between sensors are preserved; only the epoch
        changes. Ground truth is shifted the same way and stays aligned.
        """
        if len(data) < 12 or not data[1] & 1 or self._stamp_bag0 is None:
            return data
        sec, nsec = _STAMP.unpack_from(data, 4)
        stamp = sec * NS_PER_S + nsec
        if stamp <= 0:  # an unset stamp stays unset: the receiver must see it as such
            return data
        shifted = self._wall_epoch0 + int((stamp - self._stamp_bag0) / self.rate)
        sec, nsec = divmod(max(shifted, 0), NS_PER_S)
        return data[:4] + _STAMP.pack(sec, nsec) + data[12:]

    def _sleep_until(self, target_ns: int, wall0: int, bag0: int) -> None:
        """Sleep to `target_ns` (perf_counter ns), ticking /clock along the bag timeline meanwhile."""
        while True:
            now = time.perf_counter_ns()
            remaining = target_ns - now
            if remaining <= 0:
                return
            if self._clock_pub is not None and remaining > self.clock_period_ns:
                self._publish_clock(bag0 + int((now - wall0) * self.rate))
                time.sleep(min(remaining, self.clock_period_ns) / NS_PER_S)
                continue
            if remaining > _SPIN_S * NS_PER_S:
                time.sleep((remaining - _SPIN_S * NS_PER_S) / NS_PER_S)
            # else: spin for the last stretch

    # -- main loop -----------------------------------------------------------------
    def play(
        self, on_progress: Callable[[int, int, int], None] | None = None, max_loops: int | None = None
    ) -> ReplayStats:
        """Publish the bag (repeatedly when `loop`); returns stats. Ctrl-C ends it cleanly.

        `on_progress(done, total, log_time_ns)` is called after every publish.
        """
        r = self.reader
        first = r.start_ns + int(self.start_s * NS_PER_S)
        total = sum(r.topics[t].count for t in self._pubs)
        wall_start = time.perf_counter_ns()
        try:
            # latched topics logged before the start offset are still published, once, first
            for topic, _, _, data in r.messages([t for t in self._pubs if t == RIG_TOPIC], end_ns=first):
                self._publish(topic, data)
            while self.context.ok():
                self._play_once(first, total, on_progress)
                self.stats.loops += 1
                if not self.loop or (max_loops is not None and self.stats.loops >= max_loops):
                    break
        except KeyboardInterrupt:
            self.stats.interrupted = True
        self.stats.wall_s = (time.perf_counter_ns() - wall_start) / NS_PER_S
        lat = self._lateness
        self.stats.lateness_p50_ms = _percentile_ms(lat, 50)
        self.stats.lateness_p99_ms = _percentile_ms(lat, 99)
        self.stats.lateness_max_ms = max(lat) / 1e6 if lat else 0.0
        return self.stats

    def _play_once(self, first_ns: int, total: int, on_progress: Callable[[int, int, int], None] | None) -> None:
        wall0 = time.perf_counter_ns()
        bag0: int | None = None
        done = 0
        for topic, _, t, data in self.reader.messages(list(self._pubs), start_ns=first_ns):
            if not self.context.ok():
                self.stats.interrupted = True
                return
            if bag0 is None:
                bag0 = t
                self._stamp_bag0, self._wall_epoch0 = t, time.time_ns() + (wall0 - time.perf_counter_ns())
            target = wall0 + int((t - bag0) / self.rate)
            self._sleep_until(target, wall0, bag0)
            self._publish_clock(t)
            self._publish(topic, data)
            self._lateness.append(time.perf_counter_ns() - target)
            self.stats.bag_s = max(self.stats.bag_s, (t - bag0) / NS_PER_S)
            done += 1
            if on_progress is not None:
                on_progress(done, total, t)

    def _publish(self, topic: str, data: bytes) -> None:
        if self.stamp_now and topic in self._headed:
            data = self._restamp(data)
        self._pubs[topic].publish(data)
        self.stats.published += 1
        self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1


def replay_bag(
    path: str | Path,
    *,
    rate: float = 1.0,
    start_s: float = 0.0,
    loop: bool = False,
    topics: Iterable[str] | None = None,
    remaps: Iterable[str] | Mapping[str, str] | None = None,
    clock: bool = False,
    stamp_now: bool = False,
    on_progress: Callable[[int, int, int], None] | None = None,
    wait_subscribers_s: float = 0.0,
    delay_s: float = 0.0,
    max_loops: int | None = None,
) -> ReplayStats:
    """Replay `path` in its own rclpy context; returns when done (or on Ctrl-C with loop).

    `wait_subscribers_s` waits up to that long for every topic to have a
    subscriber before starting (reliable QoS delivers only to matched readers);
    `delay_s` is an unconditional pause after the publishers are created.
    `stamp_now` rewrites header.stamp to the wall clock (for nodes that reject
    old stamps), in the raw bytes, for types whose first field is a Header.
    """
    context = Context()
    rclpy.init(context=context)
    node: BagReplayer | None = None
    try:
        node = BagReplayer(
            path, rate=rate, start_s=start_s, loop=loop, topics=topics, remaps=remaps, clock=clock,
            stamp_now=stamp_now, context=context,
        )
        if wait_subscribers_s > 0:
            node.wait_for_subscribers(wait_subscribers_s)
        if delay_s > 0:
            time.sleep(delay_s)
        return node.play(on_progress, max_loops=max_loops)
    except KeyboardInterrupt:
        stats = node.stats if node is not None else ReplayStats()
        stats.interrupted = True
        return stats
    finally:
        if node is not None:
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
