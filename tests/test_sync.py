"""core.sync: matching, waiting, watchdog, staleness, bounded buffers and bad input (no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from ros_fusion.core.rig import ConfigError, load_rig, rig_from_yaml
from ros_fusion.core.sync import (
    BundleStats,
    StreamConfig,
    Synchroniser,
    default_reference,
    describe_bundle,
    open_interval_free,
    stream_configs_from_rig,
)
from ros_fusion.paths import default_rig_path

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S


def _sync(**kw) -> Synchroniser:
    streams = [
        StreamConfig.from_ms("lidar", 10.0, latency_ms=10.0),
        StreamConfig.from_ms("cam", 20.0, latency_ms=20.0),
    ]
    return Synchroniser(streams, "lidar", **kw)


def test_waits_exactly_until_the_best_match_is_certain() -> None:
    s = _sync()
    # camera stamps every 50 ms: T0-50, T0, T0+50 ... ; LiDAR stamp T0+20 (nearest camera: T0).
    s.add("cam", T0 - 50 * MS, T0 - 30 * MS, "c-50")
    s.add("cam", T0, T0 + 20 * MS, "c0")
    s.add("lidar", T0 + 20 * MS, T0 + 30 * MS, "l")
    # c0 is 20 ms from T; a camera frame in (T0, T0+40) could still beat it until it is excluded:
    # stamps are >= 25 ms apart (half a period), so only (T0+25, T0+40) is possible, and such a frame
    # would arrive by its stamp + the 21 ms latency bound -> certain at T0 + 40 + 21 ms.
    assert s.poll(T0 + 30 * MS) == []
    assert s.next_wake_ns() == T0 + 40 * MS + 21 * MS
    assert s.poll(T0 + 60 * MS) == []
    (b,) = s.poll(T0 + 61 * MS)
    assert b.trigger == "reference" and b.t_ns == T0 + 20 * MS
    assert b.members["cam"].payload == "c0" and b.members["cam"].age_ns == 20 * MS
    assert b.members["lidar"].payload == "l" and b.missing == frozenset()
    assert b.wait_ns == 31 * MS and b.emitted_ns == T0 + 61 * MS


def test_next_frame_ends_the_wait_early() -> None:
    s = _sync()
    s.add("cam", T0, T0 + 20 * MS, "c0")
    s.add("lidar", T0 + 20 * MS, T0 + 30 * MS, "l")
    s.add("cam", T0 + 50 * MS, T0 + 55 * MS, "c50")  # farther than c0 from T and proves nothing nearer comes
    (b,) = s.poll(T0 + 55 * MS)
    assert b.members["cam"].payload == "c0" and b.wait_ns == 25 * MS


def test_known_offset_selects_the_triggered_frame() -> None:
    streams = [StreamConfig.from_ms("lidar", 10.0, latency_ms=5.0),
               StreamConfig.from_ms("cam", 10.0, latency_ms=5.0, offset_ms=-40.0, tolerance_ms=10.0)]
    s = Synchroniser(streams, "lidar")
    s.add("cam", T0 - 40 * MS, T0 - 30 * MS, "exposed for this sweep")
    s.add("cam", T0 + 60 * MS, T0 + 70 * MS, "next")
    s.add("lidar", T0, T0 + 6 * MS, "sweep")
    (b,) = s.poll(T0 + 70 * MS)
    assert b.members["cam"].payload == "exposed for this sweep" and b.members["cam"].age_ns == 40 * MS


def test_tolerance_is_never_exceeded_and_frames_are_not_reused() -> None:
    s = _sync()
    s.add("cam", T0 - 30 * MS, T0 - 10 * MS, "far")  # 30 ms > tolerance 25 ms
    s.add("lidar", T0, T0 + 10 * MS, "l0")
    out = s.poll(T0 + 100 * MS)  # nothing within 25 ms of T can arrive after T0 + 25 + 21 ms
    assert len(out) == 1 and out[0].missing == {"cam"}
    s.add("cam", T0 + 95 * MS, T0 + 215 * MS, "c95")
    s.add("lidar", T0 + 100 * MS, T0 + 216 * MS, "l1")
    s.add("lidar", T0 + 200 * MS, T0 + 217 * MS, "l2")
    out = s.poll(T0 + 400 * MS)
    assert [b.t_ns for b in out] == [T0 + 100 * MS, T0 + 200 * MS]
    assert out[0].members["cam"].payload == "c95" and "cam" in out[1].missing  # c95 is not used twice


def test_stale_sensor_is_not_waited_for_and_recovers() -> None:
    s = _sync()
    for k in range(10):  # both streams for 1 s
        s.add("cam", T0 + k * 100 * MS, T0 + k * 100 * MS + 20 * MS)
        s.add("lidar", T0 + k * 100 * MS, T0 + k * 100 * MS + 10 * MS)
        s.poll(T0 + k * 100 * MS + 25 * MS)
    last_cam = T0 + 920 * MS
    stale_after = s.streams["cam"].cfg.stale_after  # 3 periods of 50 ms
    waits, stale = [], []
    for k in range(10, 20):  # camera silent
        t = T0 + k * 100 * MS
        s.add("lidar", t, t + 10 * MS)
        out = s.poll(t + 10 * MS)
        if not out:
            assert t + 10 * MS < s.next_wake_ns() < t + 100 * MS
            out = s.poll(s.next_wake_ns())
        (b,) = out
        waits.append(b.wait_ns)
        stale.append("cam" in b.stale)
        assert s.stream_state("cam", b.emitted_ns) == ("STALE" if b.emitted_ns - last_cam > stale_after else "OK")
    # the first bundle waits for the camera until no in-tolerance frame can arrive any more
    # (T + 25 ms tolerance + 21 ms latency bound, before the 51 ms timeout); from then on the camera is
    # STALE and costs no latency
    assert waits[0] == 25 * MS + 1 + 21 * MS - 10 * MS and not stale[0]
    assert all(stale[1:])
    assert all(w == 0 for w in waits[1:])
    s.add("cam", T0 + 2000 * MS, T0 + 2020 * MS, "back")
    s.add("lidar", T0 + 2000 * MS, T0 + 2021 * MS)
    (b,) = s.poll(T0 + 2100 * MS)
    assert b.members["cam"].payload == "back" and "cam" not in b.stale


def _run_camera_only(s: Synchroniser) -> list:
    """One LiDAR sweep at T0, then only the camera for 2 s; poll every 5 ms."""
    s.add("lidar", T0, T0 + 10 * MS)
    got = []
    k = 1
    for t in range(T0 + 10 * MS, T0 + 2 * S, 5 * MS):
        while T0 + k * 50 * MS + 20 * MS <= t:
            s.add("cam", T0 + k * 50 * MS, T0 + k * 50 * MS + 20 * MS)
            k += 1
        got += s.poll(t)
    return got


def test_watchdog_triggers_at_nominal_rate_while_reference_is_silent() -> None:
    got = _run_camera_only(_sync())
    wd = [b for b in got if b.trigger == "watchdog"]
    assert got[0].trigger == "reference"
    assert [b.t_ns - T0 for b in wd][:5] == [k * 100 * MS for k in range(1, 6)]
    assert all("lidar" in b.missing and "cam" in b.members for b in wd)
    assert [b.t_ns for b in got] == sorted(b.t_ns for b in got)
    assert len(wd) >= 17  # 1.9 s of silence at 10 Hz, less the watchdog's grace
    off = _run_camera_only(_sync(watchdog=False))
    assert [b.trigger for b in off] == ["reference"]


def test_late_reference_takes_over_its_pending_watchdog_slot() -> None:
    s = Synchroniser([StreamConfig.from_ms("lidar", 10.0, latency_ms=10.0),
                      StreamConfig.from_ms("slow", 10.0, latency_ms=300.0)], "lidar")
    s.add("slow", T0 - 250 * MS, T0 + 50 * MS)
    s.add("lidar", T0, T0 + 10 * MS)
    s.poll(T0 + 175 * MS)  # the next sweep (T0+100) is overdue: a watchdog slot is pending (waiting for "slow")
    assert s.pending >= 1
    s.add("lidar", T0 + 103 * MS, T0 + 180 * MS, "late sweep")
    out = []
    for t in range(T0 + 180 * MS, T0 + 2 * S, 10 * MS):
        out += s.poll(t)
    sweep = [b for b in out if "lidar" in b.members and b.members["lidar"].payload == "late sweep"]
    assert len(sweep) == 1 and sweep[0].trigger == "reference" and sweep[0].t_ns == T0 + 103 * MS
    assert s.reference_late == 0


@pytest.mark.parametrize(
    ("stamp", "recv", "reason"),
    [
        (float("nan"), T0, "invalid"),
        (float("inf"), T0, "invalid"),
        ("123", T0, "invalid"),
        (None, T0, "invalid"),
        (True, T0, "invalid"),
        (1.5, T0, "invalid"),
        (T0, float("nan"), "invalid"),
        (0, T0, "zero"),
        (-5, T0, "zero"),
        (int(np.iinfo(np.int64).min), T0, "zero"),
        (12 * S, T0, "old"),  # 1970: clock never set
        (T0 + 3600 * S, T0, "future"),
        (2**70, T0, "invalid"),  # does not fit int64
    ],
)
def test_bad_stamps_are_rejected_and_counted(stamp, recv, reason) -> None:
    s = _sync()
    assert s.add("cam", stamp, recv) == reason
    assert s.streams["cam"].rejected == {reason: 1}
    assert s.streams["cam"].received == 0
    assert s.poll(T0 + S) == []  # nothing to emit, and no crash


def test_duplicates_unknown_streams_and_late_messages_are_counted() -> None:
    s = _sync()
    assert s.add("radar", T0, T0) == "unknown_stream" and s.rejected_unknown == 1
    assert s.add("cam", T0, T0 + 20 * MS) is None
    assert s.add("cam", T0, T0 + 21 * MS) == "duplicate"
    s.add("lidar", T0, T0 + 10 * MS)
    s.poll(T0 + S)  # bundle at T0 emitted: horizon moves past T0 - tolerance
    assert s.add("cam", T0 - 200 * MS, T0 + S) == "out_of_order"
    assert s.streams["cam"].rejected == {"duplicate": 1, "out_of_order": 1}
    assert s.poll(float("nan")) == []


def test_bag_loop_and_clock_jump_reset_and_are_counted() -> None:
    s = _sync()
    for k in range(5):
        s.add("cam", T0 + k * 50 * MS, T0 + k * 50 * MS + 20 * MS)
        s.add("lidar", T0 + k * 100 * MS, T0 + k * 100 * MS + 10 * MS)
    s.poll(T0 + S)
    assert s.epoch == 0
    # bag loop: stamps and the (sim) clock go back 20 s
    back = T0 - 20 * S
    assert s.add("lidar", back, back + 10 * MS) is None
    assert s.epoch == 1 and s.resets["clock_backwards"] == 1
    s.add("cam", back + 5 * MS, back + 25 * MS)
    s.add("cam", back + 55 * MS, back + 75 * MS)
    out = s.poll(back + 80 * MS)
    assert len(out) == 1 and out[0].epoch == 1 and out[0].members["cam"].stamp_ns == back + 5 * MS
    # a single stream restarting (stamps back > 1 s, clock steady) resets only that stream
    s.add("cam", back - 5 * S, back + 90 * MS)
    assert s.resets["stamps_backwards"] == 1 and s.streams["cam"].resets == 2 and s.epoch == 1


def test_buffers_are_bounded_and_drops_counted() -> None:
    s = _sync(watchdog=False)
    cap = s.streams["cam"].capacity
    for k in range(5000):
        s.add("cam", T0 + k * 50 * MS, T0 + k * 50 * MS + 20 * MS)
    assert len(s.streams["cam"].stamps) == cap
    assert s.streams["cam"].dropped["buffer_full"] == 5000 - cap
    for k in range(5000, 5100):  # the reference returns: bundles again, unused frames counted as unmatched
        s.add("cam", T0 + k * 50 * MS, T0 + k * 50 * MS + 20 * MS)
        if k % 2 == 0:
            s.add("lidar", T0 + k * 50 * MS + 3 * MS, T0 + k * 50 * MS + 13 * MS)
    bundles = s.poll(T0 + 5200 * 50 * MS)
    assert len(bundles) == 50 and s.streams["cam"].dropped["unmatched"] > 0


def test_open_interval_free() -> None:
    assert open_interval_free([], 0, 10, 3) == 10
    assert open_interval_free([5], 0, 10, 3) == 10  # (8, 10) is free
    assert open_interval_free([5], 0, 7, 3) == 2  # only (0, 2) is free
    assert open_interval_free([2, 8], 0, 10, 3) is None
    assert open_interval_free([5], 4, 4, 3) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"rate_hz": 0.0}, "rate_hz"), ({"rate_hz": math.nan}, "rate_hz"), ({"tolerance_ns": 0}, "tolerance_ns"),
     ({"buffer_size": 0}, "buffer_size"), ({"timeout_ns": -1}, "timeout_ns"), ({"offset_ns": 1.5}, "offset_ns"),
     ({"min_spacing_fraction": 0.0}, "min_spacing")],
)
def test_stream_config_validation(kwargs, match) -> None:
    args = {"name": "x", "rate_hz": 10.0} | kwargs
    with pytest.raises(ValueError, match=match):
        StreamConfig(**args)


def test_synchroniser_rejects_bad_setup() -> None:
    with pytest.raises(ValueError, match="reference"):
        Synchroniser([StreamConfig("a", 10.0)], "b")
    with pytest.raises(ValueError, match="twice"):
        Synchroniser([StreamConfig("a", 10.0), StreamConfig("a", 5.0)], "a")


def test_rig_sync_keys_and_defaults() -> None:
    rig = load_rig(default_rig_path())
    assert default_reference(rig) == "lidar_top"
    cfg = {c.name: c for c in stream_configs_from_rig(rig)}
    cam = cfg["camera_front"]
    # The default rig matches camera and radar past-only (the newest frame captured by T: low latency).
    assert (cam.offset_ns, cam.tolerance) == (-33 * MS, 34 * MS)
    assert cam.latency_bound_ns == 25 * MS + 4 * 2 * MS + 1 * MS
    lidar = cfg["lidar_top"]
    assert lidar.tolerance == S // 10 // 2 and lidar.offset_ns == 0  # derived defaults where no sync: block
    d = yaml.safe_load(default_rig_path().read_text())
    d["sensors"]["camera_front"]["sync"] = {"offset_ms": -40, "tolerance_ms": 10, "timeout_ms": 80, "buffer_size": 5}
    cam = {c.name: c for c in stream_configs_from_rig(rig_from_yaml(yaml.safe_dump(d)))}["camera_front"]
    assert (cam.offset_ns, cam.tolerance, cam.timeout, cam.capacity) == (-40 * MS, 10 * MS, 80 * MS, 5)
    for bad, key in (({"tolerance_ms": 0}, "tolerance_ms"), ({"offset": 1}, "unknown keys"),
                     ({"buffer_size": 1.5}, "buffer_size"), ({"timeout_ms": float("nan")}, "timeout_ms"), (3, "sync")):
        d["sensors"]["camera_front"]["sync"] = bad
        with pytest.raises(ConfigError, match=key):
            rig_from_yaml(yaml.safe_dump(d))


def test_bundle_stats_and_description() -> None:
    s = _sync()
    s.add("cam", T0, T0 + 20 * MS)
    s.add("lidar", T0 + 10 * MS, T0 + 20 * MS)
    s.add("lidar", T0 + 110 * MS, T0 + 120 * MS)
    bundles = s.poll(T0 + S)
    stats = BundleStats(["lidar", "cam"])
    for b in bundles:
        stats.add(b)
    summ = stats.summary()
    assert summ["bundles"] == 2 and summ["sensors"]["cam"]["matched_pct"] == 50.0
    assert summ["sensors"]["cam"]["age_ms_p50"] == pytest.approx(10.0)
    line = describe_bundle(bundles[0])
    assert "cam +10.0ms" in line and "reference" in line
    assert "missing cam" in describe_bundle(bundles[1])
