"""core.health extensions: frozen-data detection from payload digests, OK/STALE/MISSING hysteresis."""

from __future__ import annotations

import pytest

from ros_fusion.core.health import (
    HealthConfig,
    HealthMonitor,
    Level,
    SensorHealth,
    SensorState,
    health_configs_from_rig,
)
from ros_fusion.core.rig import load_rig
from ros_fusion.paths import default_rig_path

S = 1_000_000_000
T0 = 1_700_000_000 * S
P = S // 10


def _h(**kw) -> SensorHealth:
    return SensorHealth(HealthConfig("lidar_top", "lidar", 10.0, **kw))


def test_identical_payloads_freeze_after_n_repeats_and_recover_with_hysteresis() -> None:
    h = _h(frozen_repeats=3, recover_count=3)
    t = T0
    for i in range(5):
        h.on_message(t, t, digest=bytes([i]))
        t += P
    assert h.update(t - P) is SensorState.OK
    states = []
    for _ in range(4):  # the same payload again and again with fresh stamps
        h.on_message(t, t, digest=b"\x04")
        states.append(h.update(t))
        t += P
    assert states == [SensorState.OK, SensorState.OK, SensorState.STALE, SensorState.STALE]
    snap = h.snapshot(t - P)
    assert snap.frozen and snap.level is Level.WARN and not snap.usable
    assert snap.message == "STALE: frozen data (5 identical messages in a row)"
    assert snap.frozen_messages == 4 and snap.frozen_episodes == 1
    recovered = []
    for i in range(4):
        h.on_message(t, t, digest=bytes([10 + i]))
        recovered.append(h.update(t))
        t += P
    assert recovered == [SensorState.STALE, SensorState.STALE, SensorState.OK, SensorState.OK]
    h.on_message(t, t, digest=bytes([20]))  # after recovering: a new message is plainly OK
    assert h.update(t) is SensorState.OK and not h.snapshot(t).frozen


def test_recovering_message() -> None:
    h = _h(recover_count=4)
    t = T0
    for _ in range(3):
        h.on_message(t, t)
        t += P
    assert h.update(t + S) is SensorState.STALE  # silent 1 s
    t += S
    h.on_message(t, t)
    snap = h.snapshot(t)
    assert snap.state is SensorState.STALE and snap.recovering
    assert snap.message == "STALE: recovering (1/4 healthy messages)"
    for _ in range(3):
        t += P
        h.on_message(t, t)
    assert h.update(t) is SensorState.OK and not h.snapshot(t).recovering


def test_missing_sensor_needs_hysteresis_too_but_first_data_is_ok_at_once() -> None:
    h = _h(recover_count=2, missing_timeout_s=1.0)
    h.on_message(T0, T0)
    assert h.update(T0) is SensorState.OK  # first data ever: no history to distrust
    assert h.update(T0 + 2 * S) is SensorState.MISSING
    h.on_message(T0 + 2 * S, T0 + 2 * S)
    assert h.update(T0 + 2 * S) is SensorState.STALE
    h.on_message(T0 + 2 * S + P, T0 + 2 * S + P)
    assert h.update(T0 + 2 * S + P) is SensorState.OK


def test_no_digest_or_empty_payload_never_freezes() -> None:
    h = _h(frozen_repeats=1)
    t = T0
    for _ in range(10):
        h.on_message(t, t, digest=None)
        t += P
    assert h.update(t - P) is SensorState.OK and h.frozen_messages == 0


@pytest.mark.parametrize("key", ["frozen_repeats", "recover_count"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_config_validation(key, bad) -> None:
    with pytest.raises(ValueError, match=key):
        HealthConfig("x", "lidar", 10.0, **{key: bad})


def test_rig_configs_carry_the_new_settings() -> None:
    mon = HealthMonitor(health_configs_from_rig(load_rig(default_rig_path()), frozen_repeats=5, recover_count=7))
    assert {(h.config.frozen_repeats, h.config.recover_count) for h in mon.sensors.values()} == {(5, 7)}
