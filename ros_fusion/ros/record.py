"""Record live topics into an MCAP bag (`ros-fusion record`).

Subscriptions are raw (CDR bytes straight to the writer, no conversion). The
message type of each topic comes from the ROS graph; discovery is re-run every
`discovery_period_s` for the whole recording, so publishers that start late are
picked up when they appear. Each subscription's QoS follows what its publishers
offer, like ``ros2 bag record``: RELIABLE only if every publisher is reliable
(a reliable reader would not match a best-effort writer), TRANSIENT_LOCAL only
if every publisher is (so latched ``/rig`` is captured even if published before
we joined). Stops after `duration_s`, when `stop` is set, or on Ctrl-C, and
always closes the bag properly (summary and index written).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..bag.writer import DEFAULT_QOS, LATCHED_QOS, BagWriter
from ..core.types import RejectedInput
from .serialization import message_class

#: Graph topics nobody wants in a bag unless asked for by name.
IGNORED_BY_DEFAULT = frozenset({"/rosout", "/parameter_events"})


@dataclass
class RecordStats:
    path: Path
    messages: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # requested topics that never appeared
    skipped: dict[str, str] = field(default_factory=dict)  # topic -> why it could not be recorded
    wall_s: float = 0.0


class BagRecorder(Node):
    """Subscribes (raw) to the wanted topics as they appear and writes every message."""

    def __init__(
        self,
        writer: BagWriter,
        topics: list[str] | None,
        *,
        discovery_period_s: float = 0.5,
        context: Context | None = None,
        node_name: str = "bag_recorder",
    ) -> None:
        super().__init__(node_name, context=context)
        self.writer = writer
        self.wanted = None if topics is None else list(dict.fromkeys(topics))
        self.stats = RecordStats(writer.path)
        self._subs: dict[str, object] = {}
        self._lock = threading.Lock()
        self.discover()
        self._timer = self.create_timer(discovery_period_s, self.discover)

    def _qos_for(self, topic: str) -> tuple[QoSProfile, bool]:
        infos = self.get_publishers_info_by_topic(topic)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=100,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        return qos, latched

    def discover(self) -> None:
        """Subscribe to every wanted topic that now has a publisher and a single known type."""
        for topic, types in self.get_topic_names_and_types():
            if topic in self._subs or topic in self.stats.skipped:
                continue
            if self.wanted is None:
                if topic in IGNORED_BY_DEFAULT or not self.count_publishers(topic):
                    continue
            elif topic not in self.wanted:
                continue
            if len(types) != 1:
                self.stats.skipped[topic] = f"published with several types {types}"
                self.get_logger().warning(f"not recording {topic}: {self.stats.skipped[topic]}")
                continue
            msgtype = types[0]
            try:
                cls = message_class(msgtype)
            except RejectedInput as e:
                self.stats.skipped[topic] = e.detail
                self.get_logger().warning(f"not recording {topic}: {e.detail}")
                continue
            qos, latched = self._qos_for(topic)
            with self._lock:
                self.writer.add_topic(topic, msgtype, LATCHED_QOS if latched else DEFAULT_QOS)
            self._subs[topic] = self.create_subscription(cls, topic, self._callback(topic), qos, raw=True)
            self.get_logger().info(f"recording {topic} [{msgtype}]")

    def _callback(self, topic: str) -> Callable[[bytes], None]:
        def on_message(data: bytes) -> None:
            t = time.time_ns()
            with self._lock:
                self.writer.write(topic, t, data)
                self.stats.messages += 1
                self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1

        return on_message


def _drain(executor: SingleThreadedExecutor, node: BagRecorder, quiet_s: float = 0.1, limit_s: float = 2.0) -> None:
    """Take what already arrived before closing: spin until nothing new for `quiet_s` (at most `limit_s`)."""
    end = time.monotonic() + limit_s
    last_n, last_change = node.stats.messages, time.monotonic()
    while time.monotonic() < end and time.monotonic() - last_change < quiet_s:
        executor.spin_once(timeout_sec=0.01)
        if node.stats.messages != last_n:
            last_n, last_change = node.stats.messages, time.monotonic()


def record(
    path: str | Path,
    topics: list[str] | None = None,
    duration_s: float | None = None,
    *,
    overwrite: bool = False,
    stop: threading.Event | None = None,
    discovery_period_s: float = 0.5,
) -> RecordStats:
    """Record `topics` (None = everything published) to `path` until duration/stop/Ctrl-C.

    Log times are the wall clock at reception (ns). Returns what was recorded;
    the bag is complete and readable even after Ctrl-C.
    """
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration must be > 0 s, got {duration_s}")
    if topics is not None:
        bad = [t for t in topics if not t.startswith("/")]
        if bad:
            raise ValueError(f"topic names must be absolute (start with '/'): {', '.join(bad)}")
    context = Context()
    rclpy.init(context=context)
    t0 = time.monotonic()
    node: BagRecorder | None = None
    try:
        with BagWriter(path, overwrite=overwrite) as writer:
            node = BagRecorder(writer, topics, discovery_period_s=discovery_period_s, context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            try:
                while context.ok() and (stop is None or not stop.is_set()):
                    if duration_s is not None and time.monotonic() - t0 >= duration_s:
                        break
                    executor.spin_once(timeout_sec=0.05)
                _drain(executor, node)
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            finally:
                executor.remove_node(node)
                executor.shutdown()
                node.destroy_node()
        stats = node.stats
        if topics is not None:
            stats.missing = [t for t in topics if t not in stats.per_topic and t not in stats.skipped]
        stats.wall_s = time.monotonic() - t0
        return stats
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
