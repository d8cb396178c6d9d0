"""Health bookkeeping cost (run: python -m pytest benchmarks/bench_health.py --benchmark-only).

Why: every sensor message of every stream (IMU at up to 400 Hz) passes through
`accept_stamp` + `on_message` on the node's executor thread, and the snapshot
runs once per diagnostics period; both must stay far below a millisecond.
"""

from __future__ import annotations

from ros_fusion.core.health import HealthConfig, HealthMonitor, SensorHealth, health_configs_from_rig
from ros_fusion.core.rig import load_rig
from ros_fusion.paths import default_rig_path

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_bench_accept_and_record(benchmark) -> None:
    h = SensorHealth(HealthConfig("imu", "imu", 400.0))
    state = {"t": T0}

    def one() -> None:
        state["t"] += S // 400
        t = state["t"]
        if h.accept_stamp(t - 1_000_000, t, S // 2, 10 * S) is None:
            h.on_message(t - 1_000_000, t)

    benchmark(one)
    assert h.received > 0 and not h.rejected


def test_bench_snapshot_full_rig(benchmark) -> None:
    mon = HealthMonitor(health_configs_from_rig(load_rig(default_rig_path())))
    t = T0
    for i in range(500):  # 5 s of IMU at 100 Hz and LiDAR at 10 Hz fills the windows
        t = T0 + i * S // 100
        mon["imu"].on_message(t, t)
        if i % 10 == 0:
            mon["lidar_top"].on_message(t, t)
    snap = benchmark(mon.snapshot, t)
    assert snap.sensors["imu"].rate_hz > 90
