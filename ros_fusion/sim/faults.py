"""Sensor faults a drive can be given: drop, freeze, delay, noise.

Written on the command line as ``KIND:SENSOR@START-END[:VALUE]`` with times in
seconds since the start of the drive:

- ``drop:camera_front@5-8``     no messages from the sensor in [5, 8) s
- ``freeze:lidar_top@10-12``    the last payload before 10 s is repeated with new stamps
- ``delay:radar_front@3-6:0.2`` stamps moved 0.2 s into the past (message looks 0.2 s old)
- ``noise:lidar_top@4-5:5.0``   the sensor's noise multiplied by 5
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FAULT_KINDS = ("drop", "freeze", "delay", "noise")
_NEEDS_VALUE = {"delay", "noise"}


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    sensor: str
    start_s: float
    end_s: float
    value: float | None = None

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    def __str__(self) -> str:
        v = f":{self.value:g}" if self.value is not None else ""
        return f"{self.kind}:{self.sensor}@{self.start_s:g}-{self.end_s:g}{v}"


def _number(text: str, what: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"fault {spec!r}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"fault {spec!r}: {what} {text!r} must be finite")
    return v


def parse_fault(text: str) -> FaultSpec:
    """Parse ``KIND:SENSOR@START-END[:VALUE]``; raises ValueError naming the bad part."""
    spec = text.strip()
    if ":" not in spec or "@" not in spec:
        raise ValueError(f"fault {text!r}: expected KIND:SENSOR@START-END[:VALUE], e.g. drop:camera_front@5-8")
    kind, rest = spec.split(":", 1)
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault {text!r}: unknown kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
    sensor, rest = rest.split("@", 1)
    if not sensor:
        raise ValueError(f"fault {text!r}: sensor name is empty")
    window, _, value_text = rest.partition(":")
    if "-" not in window:
        raise ValueError(f"fault {text!r}: time window {window!r} must be START-END in seconds")
    a, b = window.split("-", 1)
    start = _number(a, "start time", text)
    end = _number(b, "end time", text)
    if start < 0:
        raise ValueError(f"fault {text!r}: start time {start} must be >= 0")
    if end <= start:
        raise ValueError(f"fault {text!r}: end time {end} must be after start time {start}")
    value: float | None = None
    if kind in _NEEDS_VALUE:
        if not value_text:
            what = "delay in seconds" if kind == "delay" else "noise factor"
            raise ValueError(f"fault {text!r}: {kind} needs a value, the {what} (…@{window}:VALUE)")
        value = _number(value_text, "value", text)
        if value <= 0:
            raise ValueError(f"fault {text!r}: value {value} must be > 0")
    elif value_text:
        raise ValueError(f"fault {text!r}: {kind} takes no value, got {value_text!r}")
    return FaultSpec(kind, sensor, start, end, value)


def scripted_faults(duration_s: float, camera: str | None, lidar: str | None, radar: str | None) -> list[FaultSpec]:
    """The `sensor_faults` scenario's schedule, at fixed fractions of the drive."""
    D = duration_s
    out: list[FaultSpec] = []
    if camera:
        out.append(FaultSpec("drop", camera, 0.15 * D, 0.30 * D))
    if lidar:
        out.append(FaultSpec("freeze", lidar, 0.40 * D, 0.50 * D))
    if radar:
        out.append(FaultSpec("delay", radar, 0.55 * D, 0.70 * D, 0.2))
    if lidar:
        out.append(FaultSpec("noise", lidar, 0.80 * D, 0.90 * D, 5.0))
    return out
