"""The demo's per-sensor state timeline: a STALE shorter than the diagnostics period is not lost."""

from __future__ import annotations

import pytest

from ros_fusion.commands.demo import SensorTimeline
from ros_fusion.core.health import HealthConfig, SensorHealth

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _drive_s(ns: int) -> float:
    return (ns - T0) / S


def _camera_with_a_short_gap() -> tuple[SensorHealth, int, int, int]:
    """15 Hz camera, silent 0.9–1.8 s: STALE from the first update after 3 missed periods to 3 healthy frames."""
    h = SensorHealth(HealthConfig("camera_front", "camera", 15.0, 3.0, 5.0, 5.0, frame_id="cam"))
    period = S // 15
    t = T0
    stale_at = back_at = None
    while t < T0 + 3 * S:
        if not T0 + int(0.9 * S) <= t < T0 + int(1.8 * S):
            h.on_message(t, t)
        before = h.state
        state = h.update(t + period // 2)  # the node re-evaluates every bundle
        if state.value == "STALE" and before.value == "OK":
            stale_at = t + period // 2
        if state.value == "OK" and before.value == "STALE":
            back_at = t + period // 2
        t += period
    assert stale_at is not None and back_at is not None
    return h, stale_at, back_at, t


def test_short_stale_between_two_samples_is_reported_with_its_times() -> None:
    h, stale_at, back_at, end = _camera_with_a_short_gap()
    tl = SensorTimeline()
    tl.add(_drive_s(T0 + S // 2), "OK", 15.0)  # diagnostics at 0.5 s and 2.5 s: both OK
    value = ",".join(f"{st}@{t}" for t, st in h.snapshot(end).transitions)
    tl.add_transitions(value, lambda ns: _drive_s(ns))
    tl.add(_drive_s(T0 + 5 * S // 2), "OK", 15.0)
    assert [st for st, _, _ in tl.spans] == ["OK", "STALE", "OK"]
    _, a, b = tl.spans[1]
    assert a == pytest.approx(_drive_s(stale_at)) and b == pytest.approx(_drive_s(back_at))
    assert 1.0 < a < 1.2 and 1.8 < b < 2.1  # 3 missed periods after 0.9 s; 3 frames after 1.8 s
    assert "STALE 1.1–" in tl.describe() or "STALE 1.0–" in tl.describe()
    # the same value again (next diagnostics message) adds nothing
    tl.add_transitions(value, lambda ns: _drive_s(ns))
    assert len(tl.spans) == 3


def test_sampled_state_first_then_its_transition_moves_the_start_back() -> None:
    tl = SensorTimeline()
    tl.add(0.5, "OK", 10.0)
    tl.add(1.5, "STALE", 0.0)  # sampled while stale; it began at 1.1
    tl.add_transitions(f"STALE@{T0 + 11 * S // 10},OK@{T0 + 2 * S}", _drive_s)
    assert [(st, round(a, 2), round(b, 2)) for st, a, b in tl.spans] == [
        ("OK", 0.5, 0.5), ("STALE", 1.1, 2.0), ("OK", 2.0, 2.0)]
    tl.add_transitions("garbage,STALE@x", _drive_s)  # malformed items are skipped, not fatal
    assert len(tl.spans) == 3
