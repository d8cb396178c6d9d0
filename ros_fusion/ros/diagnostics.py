"""/diagnostics both ways: health snapshots → DiagnosticArray, DiagnosticArray → plain dicts.

Why here and not in the node: the demo, the live test and the evaluator read
the same statuses the node writes, so the format (status names, key names,
levels) has one home. Statuses are named ``ros_fusion/<sensor>`` and
``ros_fusion/fusion``; values are strings on the wire (diagnostic_msgs has no
numbers) and come back as int/float where they parse as such.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from ..core.health import HealthSnapshot, Level, SensorSnapshot
from .qos import output_qos
from .stamps import header

DIAGNOSTICS_TOPIC = "/diagnostics"
STATUS_PREFIX = "ros_fusion/"
FUSION_STATUS = STATUS_PREFIX + "fusion"


def level_byte(level: Level | int) -> bytes:
    """diagnostic_msgs levels are `byte` fields: rclpy wants a length-1 bytes object."""
    return bytes([int(level)])


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return KeyValue(key=key, value=str(value))


def sensor_status(snap: SensorSnapshot) -> DiagnosticStatus:
    """One sensor's DiagnosticStatus: level and message from health, counters as KeyValues."""
    values = [
        _kv("state", snap.state.value),
        _kv("modality", snap.modality),
        _kv("rate_hz", snap.rate_hz),
        _kv("nominal_rate_hz", snap.nominal_rate_hz),
        _kv("age_ms_mean", snap.age_ms_mean),
        _kv("age_ms_max", snap.age_ms_max),
        _kv("jitter_ms", snap.jitter_ms),
        _kv("received", snap.received),
        _kv("rejected", snap.rejected_total),
    ]
    values += [_kv(f"rejected.{r}", n) for r, n in sorted(snap.rejected.items())]
    values.append(_kv("dropped", snap.dropped_total))
    values += [_kv(f"dropped.{r}", n) for r, n in sorted(snap.dropped.items())]
    values += [_kv(f"points_dropped.{r}", n) for r, n in sorted(snap.points_dropped.items())]
    values += [_kv(f"warned.{r}", n) for r, n in sorted(snap.warned.items())]
    values.append(_kv("stamp_resets", snap.stamp_resets))
    values += [
        _kv("frozen", int(snap.frozen)),
        _kv("frozen_messages", snap.frozen_messages),
        _kv("frozen_episodes", snap.frozen_episodes),
        _kv("recovering", int(snap.recovering)),
        # "STALE@<ns>,OK@<ns>": the last state changes (node clock), so a short STALE between two
        # diagnostics messages is not lost
        _kv("transitions", ",".join(f"{st}@{t}" for t, st in snap.transitions)),
    ]
    if snap.silent_s is not None:
        values.append(_kv("silent_s", snap.silent_s))
    return DiagnosticStatus(
        level=level_byte(snap.level),
        name=STATUS_PREFIX + snap.name,
        message=snap.message,
        hardware_id=snap.frame_id,
        values=values,
    )


def fusion_status(level: Level, message: str, values: dict[str, Any]) -> DiagnosticStatus:
    """The `ros_fusion/fusion` status: fusion mode, bundles, stage latencies (as they land)."""
    return DiagnosticStatus(
        level=level_byte(level),
        name=FUSION_STATUS,
        message=message,
        hardware_id="",
        values=[_kv(k, v) for k, v in values.items()],
    )


def health_to_diagnostic_array(
    snapshot: HealthSnapshot, stamp_ns: int, extra: Iterable[DiagnosticStatus] = ()
) -> DiagnosticArray:
    """All sensors of a snapshot (rig order) plus `extra` statuses, stamped `stamp_ns`."""
    msg = DiagnosticArray()
    msg.header = header(stamp_ns, "")
    msg.status = [sensor_status(s) for s in snapshot.sensors.values()] + list(extra)
    return msg


def _typed(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_diagnostic_array(msg: Any) -> dict[str, dict[str, Any]]:
    """DiagnosticArray → ``{name: {"level": int, "message", "hardware_id", "values": {key: int|float|str}}}``.

    Accepts rclpy messages and anything shaped like them (rosbags' deserialized
    messages), so the evaluator can read diagnostics straight from a bag.
    """
    out: dict[str, dict[str, Any]] = {}
    for st in msg.status:
        lvl = st.level
        level = lvl[0] if isinstance(lvl, (bytes, bytearray)) else int(lvl)
        out[str(st.name)] = {
            "level": int(level),
            "message": str(st.message),
            "hardware_id": str(st.hardware_id),
            "values": {str(kv.key): _typed(str(kv.value)) for kv in st.values},
        }
    return out


class DiagnosticsListener:
    """Subscribes a node to /diagnostics and keeps the latest status per name (thread-safe).

    `prefix` limits what is kept (default: ros_fusion's statuses only; "" keeps all).
    """

    def __init__(self, node: Node, topic: str = DIAGNOSTICS_TOPIC, prefix: str = STATUS_PREFIX) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}
        self.arrays_received = 0
        self.subscription = node.create_subscription(DiagnosticArray, topic, self._on_array, output_qos())

    def _on_array(self, msg: DiagnosticArray) -> None:
        parsed = parse_diagnostic_array(msg)
        with self._lock:
            self.arrays_received += 1
            for name, st in parsed.items():
                if name.startswith(self._prefix):
                    self._latest[name] = st

    @property
    def latest(self) -> dict[str, dict[str, Any]]:
        """A copy of the latest status per name."""
        with self._lock:
            return dict(self._latest)

    def get(self, name: str) -> dict[str, Any] | None:
        """Latest status called `name` (with or without the ``ros_fusion/`` prefix), or None."""
        with self._lock:
            return self._latest.get(name) or self._latest.get(STATUS_PREFIX + name)
