"""Synchroniser cost per bundle (run: python -m pytest benchmarks/bench_sync.py --benchmark-only).

Why: every sensor message passes through `Synchroniser.add` + `poll` on the
node's executor thread. Budget (docs/results.md §6): ≤ 0.2 ms of synchroniser work per
bundle for 1 LiDAR (10 Hz), 6 cameras (15 Hz, free-running), 5 radars (13 Hz)
and an IMU at 400 Hz — about 57 messages and 57 polls per bundle. The
benchmark replays 2 s of such arrivals (20 bundles) through a fresh
synchroniser, polling after every message as the node does; the per-bundle
cost is the median time divided by the bundles emitted (in `extra_info`).
"""

from __future__ import annotations

from ros_fusion.core.sync import Synchroniser
from ros_fusion.eval.sync_study import StreamSpec, generate_events, stream_configs

SPECS = (
    [StreamSpec("lidar_top", 10.0, phase_ms=3.0, stamp_jitter_ms=0.3, latency_ms=12.0, latency_jitter_ms=1.0)]
    + [StreamSpec(f"camera_{i}", 15.0, phase_ms=7.0 * i, stamp_jitter_ms=1.0, latency_ms=25.0, latency_jitter_ms=2.0)
       for i in range(6)]
    + [StreamSpec(f"radar_{i}", 13.0, phase_ms=11.0 * i, stamp_jitter_ms=2.0, latency_ms=30.0,
                  latency_jitter_ms=3.0) for i in range(5)]
    + [StreamSpec("imu", 400.0, phase_ms=0.5, stamp_jitter_ms=0.05, latency_ms=1.0, latency_jitter_ms=0.2)]
)
EVENTS = [(e.name, e.stamp_ns, e.recv_ns) for e in generate_events(SPECS, 2.2, seed=42)]
CONFIGS = stream_configs(SPECS)


def _replay() -> int:
    sync = Synchroniser(CONFIGS, "lidar_top")
    n = 0
    add, poll = sync.add, sync.poll
    for name, stamp, recv in EVENTS:
        add(name, stamp, recv, None)
        n += len(poll(recv))
    return n


def test_bench_sync_per_bundle(benchmark) -> None:
    n = benchmark(_replay)
    assert n >= 20
    if benchmark.stats is not None:  # None with --benchmark-disable (the smoke run of `make test`)
        benchmark.extra_info["bundles"] = n
        benchmark.extra_info["messages"] = len(EVENTS)
        benchmark.extra_info["ms_per_bundle_median"] = benchmark.stats.stats.median * 1e3 / n
