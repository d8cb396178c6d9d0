"""Sensor health from synthetic arrival times (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core.health import (
    BACKWARDS_RESET_COUNT,
    TRANSITIONS_KEPT,
    HealthConfig,
    HealthMonitor,
    Level,
    SensorHealth,
    SensorState,
    check_stamp,
    health_configs_from_rig,
)
from ros_fusion.core.rig import load_rig
from ros_fusion.paths import default_rig_path

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a realistic wall-clock epoch


def _feed(h: SensorHealth, rate_hz: float, duration_s: float, start_ns: int = T0, age_ns: int = 0,
          jitter_ns: int = 0, seed: int = 0) -> int:
    """Deliver messages at `rate_hz` for `duration_s`; returns the last receive time."""
    rng = np.random.default_rng(seed)
    period = S / rate_hz
    n = int(round(duration_s * rate_hz))
    recv = start_ns
    for i in range(n):
        recv = start_ns + int(i * period) + (int(rng.integers(-jitter_ns, jitter_ns + 1)) if jitter_ns else 0)
        h.on_message(recv - age_ns, recv)
    return recv


def _health(rate: float = 10.0, factor: float = 3.0, missing: float = 5.0, window: float = 5.0) -> SensorHealth:
    return SensorHealth(HealthConfig("lidar_top", "lidar", rate, factor, missing, window, frame_id="lidar_top"))


@pytest.mark.parametrize("rate", [1.0, 10.0, 13.0, 100.0, 400.0])
def test_rate_from_regular_arrivals(rate: float) -> None:
    h = _health(rate=rate)
    last = _feed(h, rate, 4.0)
    snap = h.snapshot(last)
    assert snap.rate_hz == pytest.approx(rate, rel=0.01)
    assert snap.state is SensorState.OK and snap.level is Level.OK
    assert snap.message == f"OK {snap.rate_hz:.1f} Hz"
    assert snap.received == int(round(4.0 * rate))


def test_rate_uses_only_the_window() -> None:
    h = _health(rate=10.0, window=2.0)
    last = _feed(h, 20.0, 5.0)  # 20 Hz for 5 s ...
    last = _feed(h, 5.0, 3.0, start_ns=last + S // 5)  # ... then 5 Hz for 3 s
    assert h.snapshot(last).rate_hz == pytest.approx(5.0, rel=0.02)


def test_age_and_jitter() -> None:
    h = _health(rate=10.0)
    last = _feed(h, 10.0, 3.0, age_ns=25_000_000, jitter_ns=2_000_000, seed=3)
    snap = h.snapshot(last)
    # Ages are from per-message stamps; jitter moved stamp and receive together, so age stays 25 ms.
    assert snap.age_ms_mean == pytest.approx(25.0, abs=1e-6)
    assert snap.age_ms_max == pytest.approx(25.0, abs=1e-6)
    # Uniform ±2 ms on each arrival: inter-arrival std = sqrt(2) * 2/sqrt(3) ≈ 1.63 ms.
    assert 0.8 < snap.jitter_ms < 2.5
    regular = _health(rate=10.0)
    last = _feed(regular, 10.0, 3.0)
    assert regular.snapshot(last).jitter_ms < 1e-3


def test_never_seen_is_missing() -> None:
    h = _health()
    snap = h.snapshot(T0)
    assert snap.state is SensorState.MISSING and snap.level is Level.ERROR
    assert snap.message == "MISSING: never received"
    assert snap.rate_hz == 0.0 and snap.received == 0


def test_stale_within_timeout_plus_minus_one_period() -> None:
    h = _health(rate=10.0, factor=3.0)  # stale after 0.3 s
    last = _feed(h, 10.0, 2.0)
    period = S // 10
    assert h.update(last + 3 * period - period) is SensorState.OK
    assert h.update(last + 3 * period) is SensorState.OK  # exactly at the timeout: not yet
    assert h.update(last + 3 * period + period) is SensorState.STALE
    snap = h.snapshot(last + int(1.2 * S))
    assert snap.state is SensorState.STALE and snap.level is Level.WARN
    assert snap.message == "STALE: no data for 1.2 s"


def test_missing_after_timeout_and_recovery() -> None:
    h = _health(rate=10.0, missing=5.0)
    last = _feed(h, 10.0, 1.0)
    assert h.update(last + 4 * S) is SensorState.STALE
    snap = h.snapshot(last + 6 * S)
    assert snap.state is SensorState.MISSING and snap.level is Level.ERROR
    assert snap.message.startswith("MISSING: no data for 6.0 s")
    # Recovery: data again → OK on the next update.
    last = _feed(h, 10.0, 1.0, start_ns=last + 6 * S)
    assert h.update(last) is SensorState.OK
    assert h.snapshot(last).rate_hz == pytest.approx(10.0, rel=0.02)


def test_low_rate_warns_but_stays_usable() -> None:
    h = _health(rate=10.0, factor=10.0)  # stale only after 1 s, so 4 Hz is not stale
    last = _feed(h, 4.0, 3.0)
    snap = h.snapshot(last)
    assert snap.state is SensorState.OK
    assert snap.level is Level.WARN
    assert snap.message.startswith("LOW RATE: 4.0 Hz")
    assert snap.usable
    ok = _health(rate=10.0)
    last = _feed(ok, 6.0, 3.0)  # 60 % of nominal is still OK level
    assert ok.snapshot(last).level is Level.OK


def test_single_message_rate_unknown_not_low() -> None:
    h = _health(rate=10.0)
    h.on_message(T0, T0)
    snap = h.snapshot(T0)
    assert snap.state is SensorState.OK and snap.level is Level.OK and snap.rate_hz == 0.0


def test_counts_by_reason() -> None:
    h = _health()
    h.on_reject("truncated")
    h.on_reject("truncated")
    h.on_reject("nan")
    h.on_drop("queue_full")
    h.on_message(T0, T0 + 1000, digest=b"abc")
    snap = h.snapshot(T0 + 1000)
    assert snap.rejected == {"truncated": 2, "nan": 1}
    assert snap.rejected_total == 3 and snap.dropped == {"queue_full": 1} and snap.dropped_total == 1
    assert snap.received == 1 and snap.last_stamp_ns == T0
    assert h.last_digest == b"abc"


def test_window_is_bounded_under_flood() -> None:
    h = _health(rate=10.0, window=5.0)
    _feed(h, 10_000.0, 2.0)  # 1000× nominal
    assert len(h._arrivals) <= 10 * 5 * 4 + 16


# --- stamp checks ---------------------------------------------------------------
FUT = S // 2
AGE = 10 * S


@pytest.mark.parametrize(
    ("stamp", "last", "expected"),
    [
        (T0, None, None),
        (T0 - S, T0 - 2 * S, None),
        (0, None, "stamp_zero"),
        (-5, None, "stamp_zero"),
        (int(np.iinfo(np.int64).min), None, "stamp_zero"),  # what numpy makes of NaN cast to int64
        (float("nan"), None, "stamp_invalid"),
        (float("inf"), None, "stamp_invalid"),
        ("123", None, "stamp_invalid"),
        (True, None, "stamp_invalid"),
        (12 * S, None, "stamp_old"),  # 1970: clock never set
        (T0 - AGE - 1, None, "stamp_old"),
        (T0 - AGE, None, None),
        (T0 + FUT + 1, None, "stamp_future"),
        (T0 + FUT, None, None),
        (T0 + 3600 * S, None, "stamp_future"),
        (T0 - S, T0 - S, "stamp_duplicate"),
        (T0 - 2 * S, T0 - S, "stamp_backwards"),
        (float(T0), None, None),
    ],
)
def test_check_stamp(stamp, last, expected) -> None:
    assert check_stamp(stamp, T0, last, FUT, AGE) == expected


def test_accept_stamp_resets_after_clock_jump() -> None:
    h = _health()
    for i in range(5):
        assert h.accept_stamp(T0 + i * S // 10, T0 + S, FUT, AGE) is None
        h.on_message(T0 + i * S // 10, T0 + S)
    # One out-of-order message: rejected, no reset.
    assert h.accept_stamp(T0, T0 + S, FUT, AGE) == "stamp_backwards"
    assert h.accept_stamp(T0 + S // 2, T0 + S, FUT, AGE) is None
    h.on_message(T0 + S // 2, T0 + S)
    # A bag loop: stamps go back 5 s and stay there.
    back = T0 - 5 * S
    results = [h.accept_stamp(back + i, T0 + S, FUT, AGE) for i in range(BACKWARDS_RESET_COUNT)]
    assert results[:-1] == ["stamp_backwards"] * (BACKWARDS_RESET_COUNT - 1)
    assert results[-1] is None and h.stamp_resets == 1
    h.on_message(back + BACKWARDS_RESET_COUNT, T0 + S)
    assert h.accept_stamp(back + 10 * S // 100, T0 + S, FUT, AGE) is None


def test_monitor_snapshot_from_rig() -> None:
    rig = load_rig(default_rig_path())
    mon = HealthMonitor(health_configs_from_rig(rig, 3.0, 5.0, 5.0))
    assert set(mon.sensors) == set(rig.sensors)
    last = _feed(mon["lidar_top"], 10.0, 2.0)
    _feed(mon["imu"], 100.0, 2.0)
    snap = mon.snapshot(last)
    assert set(snap.usable()) == {"lidar_top", "imu"}
    assert snap.usable("lidar") == ["lidar_top"]
    assert snap.modalities_usable() == {"lidar", "imu"}
    assert snap.sensors["camera_front"].state is SensorState.MISSING
    assert snap.worst_level is Level.ERROR
    assert snap.sensors["lidar_top"].frame_id == "lidar_top"
    with pytest.raises(ValueError, match="already monitored"):
        mon.add(HealthConfig("imu", "imu", 100.0))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_health_config_rejects_bad_rate(bad: float) -> None:
    with pytest.raises(ValueError, match="rate_hz"):
        HealthConfig("x", "lidar", bad)


def test_state_changes_are_remembered_with_their_times() -> None:
    """A STALE shorter than the diagnostics period still shows in the snapshot's transitions."""
    h = _health(rate=10.0, missing=5.0)
    first = _feed(h, 10.0, 1.0)
    assert h.update(first) is SensorState.OK
    gap_seen = first + S // 2  # 0.5 s silent > 3 periods: STALE
    assert h.update(gap_seen) is SensorState.STALE
    back = _feed(h, 10.0, 0.5, start_ns=first + int(0.6 * S))  # 5 messages ≥ recover_count
    assert h.update(back) is SensorState.OK
    assert h.snapshot(back).transitions == ((first, "OK"), (gap_seen, "STALE"), (back, "OK"))
    # bounded: a sensor that keeps flickering cannot grow it
    t = back
    for _ in range(20):
        h.update(t + S // 2)  # STALE
        t = _feed(h, 10.0, 0.5, start_ns=t + int(0.6 * S))
        h.update(t)  # OK again
    tr = h.snapshot(t).transitions
    assert len(tr) == TRANSITIONS_KEPT and tr[-1] == (t, "OK")
    assert [st for _, st in tr] == ["STALE", "OK"] * (TRANSITIONS_KEPT // 2)


def test_lidar_on_the_wrong_intensity_scale_is_a_warning_until_a_sweep_fits() -> None:
    """A 0–1 driver on a rig that says 8-bit: WARN naming intensity_max, counted; data still used (OK)."""
    from ros_fusion.core.types import PointCloud
    from ros_fusion.runtime.engine import FusionEngine

    rig = load_rig(default_rig_path())
    engine = FusionEngine(rig, None)
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    rng = np.random.default_rng(0)
    now = T0

    def sweep(k: int, scale: float) -> PointCloud:
        pts = np.zeros(4000, dt)
        pts["x"] = rng.uniform(-30, 30, 4000)
        pts["intensity"] = rng.uniform(0, scale, 4000)
        return PointCloud(now + k * 100_000_000, "lidar_top", pts)

    for k in range(3):
        assert engine.accept("lidar_top", sweep(k, 1.0), now + k * 100_000_000 + 1_000_000, None) is None
    snap = engine.health.snapshot(now + 250_000_000).sensors["lidar_top"]
    assert snap.state is SensorState.OK and snap.level == Level.WARN
    assert "intensity_max: 1" in snap.message and snap.warned == {"intensity_scale": 3}
    engine.accept("lidar_top", sweep(3, 255.0), now + 301_000_000, None)
    snap = engine.health.snapshot(now + 350_000_000).sensors["lidar_top"]
    assert snap.level == Level.OK and snap.input_warning is None and snap.warned == {"intensity_scale": 3}


def test_radar_rcs_on_another_scale_is_a_counted_warning() -> None:
    """A radar whose rcs is not in dBsm (a raw level of 45-97): used, WARN naming rcs_offset_db, counted."""
    from ros_fusion.core.types import PointCloud
    from ros_fusion.runtime.engine import FusionEngine

    rig = load_rig(default_rig_path())
    engine = FusionEngine(rig, None)
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("rcs", "<f4")])
    rng = np.random.default_rng(0)
    pts = np.zeros(300, dt)
    pts["x"] = rng.uniform(5, 80, 300)
    pts["rcs"] = rng.uniform(45, 97, 300)
    period = 77_000_000
    for k in range(2):
        stamp = T0 + k * period
        assert engine.accept("radar_front", PointCloud(stamp, "radar_front", pts), stamp + 1_000_000, None) is None
    snap = engine.health.snapshot(T0 + period + 2_000_000).sensors["radar_front"]
    assert snap.level == Level.WARN and "rcs_offset_db" in snap.message and snap.warned == {"rcs_scale": 2}
