"""Core payloads <-> bags: the glue between the simulator/evaluator and `bag/`.

Writing converts each `SensorEvent` payload with `messages.to_message`, serialises
it once and logs it at `publish_ns` (so a replay reproduces the rig's
latencies). The rig YAML goes first on ``/rig`` (std_msgs/String, latched) and
into the bag's custom metadata, so a bag describes the sensors that made it.
Reading deserialises and converts back with `messages.from_message`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from std_msgs.msg import String

from .. import __version__
from ..bag.errors import BagError
from ..bag.reader import BagReader
from ..bag.writer import DEFAULT_QOS, LATCHED_QOS, BagWriter
from ..core.events import RIG_TOPIC, SIM_EPOCH_NS, Payload, SensorEvent
from ..core.rig import ConfigError, Rig, rig_from_yaml
from ..core.types import RejectedInput
from .serialization import deserialize, msgtype_of, serialize

RIG_MSGTYPE = "std_msgs/msg/String"
#: custom_data keys every bag written here carries.
META_TOOL = "ros_fusion_version"
META_RIG = "rig_yaml"


@dataclass
class WriteStats:
    path: Path
    messages: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0


def write_drive(
    events: Iterable[SensorEvent],
    path: str | Path,
    rig: Rig,
    *,
    metadata: Mapping[str, Any] | None = None,
    progress: Callable[[int, SensorEvent], None] | None = None,
    overwrite: bool = False,
) -> WriteStats:
    """Write a simulated (or any) drive to `path` (``.mcap`` file or rosbag2 directory).

    `metadata` (e.g. scenario, seed) is stored as strings in custom_data next to
    the rig YAML and the tool version. `progress(n_written, event)` is called
    after each event. A payload `to_message` rejects aborts the write (nothing
    is left at `path`) with `RejectedInput` naming the topic.
    """
    from .messages import to_message  # owned by the message-conversion module; imported late to keep startup light

    stats = WriteStats(Path(path))
    rig_yaml = rig.to_yaml()
    it = iter(events)
    first = next(it, None)
    rig_time = first.publish_ns if first is not None else SIM_EPOCH_NS
    with BagWriter(path, overwrite=overwrite, canonical=True) as bag:
        bag.set_metadata(META_TOOL, __version__)
        bag.set_metadata(META_RIG, rig_yaml)
        for k, v in (metadata or {}).items():
            bag.set_metadata(str(k), v)
        bag.add_topic(RIG_TOPIC, RIG_MSGTYPE, LATCHED_QOS)
        bag.write(RIG_TOPIC, rig_time, serialize(String(data=rig_yaml)))
        _count(stats, RIG_TOPIC, rig_time)
        n = 0
        ev = first
        while ev is not None:
            try:
                msg = to_message(ev.payload, ev.topic)
            except RejectedInput as e:
                raise RejectedInput(e.reason, f"{ev.topic} at {ev.stamp_ns} ns: {e.detail}", e.field) from None
            except TypeError as e:  # a payload kind with no message: a producer bug, named precisely
                raise RejectedInput("type", f"{ev.topic} at {ev.stamp_ns} ns: {e}", "payload") from None
            if not bag.has_topic(ev.topic):
                bag.add_topic(ev.topic, msgtype_of(msg), DEFAULT_QOS)
            bag.write(ev.topic, int(ev.publish_ns), serialize(msg))
            _count(stats, ev.topic, int(ev.publish_ns))
            n += 1
            if progress is not None:
                progress(n, ev)
            ev = next(it, None)
    return stats


def _count(stats: WriteStats, topic: str, t: int) -> None:
    stats.per_topic[topic] = stats.per_topic.get(topic, 0) + 1
    stats.start_ns = t if stats.messages == 0 else min(stats.start_ns, t)
    stats.end_ns = max(stats.end_ns, t)
    stats.messages += 1


def read_payloads(
    path: str | Path,
    topics: Iterable[str] | None = None,
    *,
    on_error: Callable[[str, int, RejectedInput], None] | None = None,
) -> Iterator[tuple[str, int, Payload]]:
    """Yield ``(topic, log_time_ns, payload)`` in log-time order.

    ``/rig`` is skipped unless asked for (use `read_rig`). A message that does
    not deserialize or convert raises `RejectedInput`, or, when `on_error` is
    given, is reported to it and skipped - so an evaluation can count bad
    messages instead of dying on the first one.
    """
    from .messages import from_message

    reader = BagReader(path)
    wanted = [t for t in reader.topics if t != RIG_TOPIC] if topics is None else list(topics)
    for topic, msgtype, t, data in reader.messages(wanted):
        try:
            payload = from_message(deserialize(data, msgtype), topic)
        except RejectedInput as e:
            if on_error is None:
                raise RejectedInput(e.reason, f"{topic} at log time {t}: {e.detail}", e.field) from None
            on_error(topic, t, e)
            continue
        yield topic, t, payload


def read_rig_text(path: str | Path) -> str | None:
    """The rig YAML a bag was made with: the first ``/rig`` message, else the ``rig_yaml`` metadata, else None."""
    reader = BagReader(path)
    text: str | None = None
    if RIG_TOPIC in reader.topics:
        for _, msgtype, _, data in reader.messages([RIG_TOPIC]):
            text = deserialize(data, msgtype).data
            break
    if text is None:
        text = reader.metadata.get(META_RIG)
    return text or None


def read_rig(path: str | Path) -> Rig | None:
    """The rig a bag was made with (`read_rig_text`, validated), or None when it records none.

    A rig text that fails validation raises `ConfigError` (source names the bag).
    """
    text = read_rig_text(path)
    if not text:
        return None
    try:
        return rig_from_yaml(text, source=f"{path}:{RIG_TOPIC}")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - yaml/parsing surprises become a ConfigError naming the bag
        raise ConfigError(RIG_TOPIC, f"unreadable rig description: {e}", str(path)) from None


__all__ = ["BagError", "WriteStats", "read_payloads", "read_rig", "read_rig_text", "write_drive"]
