"""Simulator end to end: determinism, ordering, schedule, faults (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core.events import GROUND_TRUTH_TOPIC, SIM_EPOCH_NS
from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import DEFAULT_CLASSES, CameraInfo, Image, ImuSample, Obstacles, Odometry, PointCloud
from ros_fusion.paths import default_rig_path
from ros_fusion.sim.drive import DriveSimulator, list_scenarios, simulate_drive
from ros_fusion.sim.faults import FaultSpec, parse_fault


@pytest.fixture(scope="module")
def rig():
    return load_rig(default_rig_path())


@pytest.fixture(scope="module")
def urban(rig):
    return list(simulate_drive(rig, "urban", 7, 1.5))


def payload_bytes(p) -> bytes:
    if isinstance(p, PointCloud):
        return p.points.tobytes() + str((p.stamp_ns, p.frame_id)).encode()
    if isinstance(p, Image):
        return p.data.tobytes() + str((p.stamp_ns, p.encoding)).encode()
    if isinstance(p, Obstacles):
        return p.table().tobytes() + str(p.stamp_ns).encode()
    if isinstance(p, ImuSample):
        return p.angular_velocity.tobytes() + p.linear_acceleration.tobytes() + str(p.stamp_ns).encode()
    if isinstance(p, Odometry):
        return p.position.tobytes() + p.orientation.tobytes() + p.linear_velocity.tobytes() + str(p.stamp_ns).encode()
    if isinstance(p, CameraInfo):
        return p.intrinsics.K.tobytes() + str(p.stamp_ns).encode()
    raise AssertionError(type(p))


def test_same_seed_bit_identical_different_seed_differs(rig, urban):
    again = list(simulate_drive(rig, "urban", 7, 1.5))
    assert [(e.topic, e.stamp_ns, e.publish_ns) for e in again] == [(e.topic, e.stamp_ns, e.publish_ns) for e in urban]
    assert all(payload_bytes(a.payload) == payload_bytes(b.payload) for a, b in zip(urban, again, strict=True))
    other = list(simulate_drive(rig, "urban", 8, 1.5))
    lid_a = [e.payload.points.tobytes() for e in urban if e.topic == "/sensors/lidar_top/points"]
    lid_b = [e.payload.points.tobytes() for e in other if e.topic == "/sensors/lidar_top/points"]
    assert lid_a[0] != lid_b[0]
    cam_topic = rig.sensors["camera_front"].topic
    img_a = next(e.payload.data for e in urban if e.topic == cam_topic)
    img_b = next(e.payload.data for e in other if e.topic == cam_topic)
    assert not np.array_equal(img_a, img_b)


def test_events_sorted_and_every_sensor_at_its_rate(rig, urban):
    pub = [e.publish_ns for e in urban]
    assert pub == sorted(pub)
    for e in urban:
        assert e.publish_ns >= e.stamp_ns >= SIM_EPOCH_NS - 10**9
    for name, spec in rig.sensors.items():
        stamps = sorted({e.stamp_ns for e in urban if e.sensor == name and e.topic == spec.topic})
        assert abs(len(stamps) - 1.5 * spec.rate_hz) <= 1, name
        gaps = np.diff(stamps) / 1e9
        assert np.allclose(gaps, spec.period_s, atol=1e-6), name
        lat = [e.publish_ns - e.stamp_ns for e in urban if e.sensor == name]
        assert min(lat) >= spec.latency_s * 1e9 - 1
    # CameraInfo travels with each image, same stamp.
    cam = rig.sensors["camera_front"]
    imgs = {e.stamp_ns for e in urban if e.topic == cam.topic}
    infos = {e.stamp_ns for e in urban if e.topic == cam.info_topic}
    assert imgs == infos and imgs


def test_ground_truth_per_lidar_sweep(urban):
    sweeps = [e.stamp_ns for e in urban if e.topic == "/sensors/lidar_top/points"]
    gts = [e for e in urban if e.topic == GROUND_TRUTH_TOPIC]
    assert [g.stamp_ns for g in gts] == sweeps
    n_total = 0
    for g in gts:
        o = g.payload
        assert o.frame_id == "base_link"
        assert np.all(np.hypot(o.boxes[:, 0], o.boxes[:, 1]) <= 60.0)
        assert np.all((o.labels >= 0) & (o.labels < len(DEFAULT_CLASSES)))
        assert np.all(o.scores == 1) and np.all(o.weights == 0)
        assert np.all(o.boxes[:, 3:6] > 0.3)
        n_total += len(o)
    assert n_total > 0


def test_scenarios_listed_and_unknown_rejected(rig):
    sc = list_scenarios()
    assert {"urban", "highway", "night_rain", "sensor_faults"} <= set(sc)
    assert all(isinstance(v, str) and v for v in sc.values())
    with pytest.raises(ValueError, match="unknown scenario"):
        list(simulate_drive(rig, "moon", 0, 1.0))
    with pytest.raises(ValueError, match="duration"):
        list(simulate_drive(rig, "urban", 0, -1.0))
    with pytest.raises(ValueError, match="no sensor 'nope'"):
        list(simulate_drive(rig, "urban", 0, 1.0, faults=[parse_fault("drop:nope@0-1")]))


def test_progress_reported(rig):
    seen: list[float] = []
    list(simulate_drive(rig, "highway", 1, 0.5, progress=seen.append))
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("drop:camera_front@5-8", FaultSpec("drop", "camera_front", 5.0, 8.0)),
        ("freeze:lidar_top@10-12", FaultSpec("freeze", "lidar_top", 10.0, 12.0)),
        ("delay:radar_front@3-6:0.2", FaultSpec("delay", "radar_front", 3.0, 6.0, 0.2)),
        ("noise:lidar_top@4-5:5.0", FaultSpec("noise", "lidar_top", 4.0, 5.0, 5.0)),
    ],
)
def test_parse_fault_ok(text, want):
    assert parse_fault(text) == want


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("explode:lidar_top@1-2", "unknown kind 'explode'"),
        ("drop:lidar_top", "expected KIND:SENSOR@START-END"),
        ("drop:lidar_top@5", "START-END"),
        ("drop:lidar_top@x-2", "start time 'x'"),
        ("drop:lidar_top@3-2", "must be after start"),
        ("delay:radar_front@1-2", "needs a value"),
        ("noise:lidar_top@1-2:abc", "value 'abc'"),
        ("drop:lidar_top@1-2:3", "takes no value"),
        ("drop:@1-2", "sensor name is empty"),
    ],
)
def test_parse_fault_rejects_with_named_part(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_fault(text)


def test_faults_drop_freeze_delay_noise(rig):
    clean = list(simulate_drive(rig, "urban", 3, 2.0))
    faults = [parse_fault("drop:camera_front@0.5-1.0"), parse_fault("freeze:lidar_top@1.0-1.5"),
              parse_fault("delay:radar_front@0.2-1.2:0.2"), parse_fault("noise:lidar_top@1.6-2.0:5")]
    bad = list(simulate_drive(rig, "urban", 3, 2.0, faults=faults))
    t0 = SIM_EPOCH_NS

    def win(a, b):
        return lambda ns: t0 + a * 1e9 <= ns < t0 + b * 1e9

    in_drop = win(0.5, 1.0)
    cam_clean = [e for e in clean if e.sensor == "camera_front" and in_drop(e.stamp_ns)]
    assert cam_clean, "the window should contain camera frames in the clean run"
    assert not [e for e in bad if e.sensor == "camera_front" and in_drop(e.stamp_ns)]
    # Freeze: every sweep in the window repeats the last sweep before it, with its own new stamp.
    lid = [e for e in bad if e.topic == "/sensors/lidar_top/points"]
    before = [e for e in lid if e.stamp_ns < t0 + 1.0e9][-1]
    frozen = [e for e in lid if win(1.0, 1.5)(e.stamp_ns)]
    assert len(frozen) >= 4
    assert all(np.array_equal(e.payload.points, before.payload.points) for e in frozen)
    assert len({e.stamp_ns for e in frozen}) == len(frozen)
    assert all(e.payload.stamp_ns == e.stamp_ns for e in frozen)
    # Delay: same payload, stamp 0.2 s older, publish time unchanged.
    rc = {e.publish_ns: e for e in clean if e.sensor == "radar_front"}
    rb = [e for e in bad if e.sensor == "radar_front"]
    delayed = [e for e in rb if e.stamp_ns != rc[e.publish_ns].stamp_ns]
    assert delayed
    for e in delayed:
        ref = rc[e.publish_ns]
        assert ref.stamp_ns - e.stamp_ns == 200_000_000
        assert np.array_equal(ref.payload.points, e.payload.points)
    # Noise: sweeps in the burst are noisier than the clean ones (ground-ring z spread).
    def z_spread(ev):
        p = ev.payload.points
        ring0 = p[p["ring"] == 0]
        return float(np.std(np.diff(np.hypot(ring0["x"], ring0["y"]))))
    noisy = [z_spread(e) for e in lid if win(1.6, 2.0)(e.stamp_ns)]
    calm = [z_spread(e) for e in clean if e.topic == "/sensors/lidar_top/points" and win(1.6, 2.0)(e.stamp_ns)]
    assert np.mean(noisy) > 2 * np.mean(calm)
    # Outside all windows the faulted drive equals the clean drive.
    outside = [e for e in clean if e.sensor == "imu"]
    assert [payload_bytes(e.payload) for e in outside] == [payload_bytes(e.payload) for e in bad if e.sensor == "imu"]


def test_sensor_faults_scenario_has_schedule(rig):
    sim = DriveSimulator(rig, "sensor_faults", 0, 20.0)
    kinds = sorted(f.kind for f in sim.faults)
    assert kinds == ["delay", "drop", "freeze", "noise"]
    assert all(0 <= f.start_s < f.end_s <= 20.0 for f in sim.faults)
