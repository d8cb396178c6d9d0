"""Ego-motion and compensation cost (run: python -m pytest benchmarks/bench_compensation.py --benchmark-only).

Why: every LiDAR sweep (~100k points, 10–20 Hz) is deskewed on the fusion
path before rasterisation (budget ≤ 3 ms, docs/results.md §6); radar scans and camera
poses are compensated per bundle; every IMU sample (up to 400 Hz) is
integrated on the node's executor thread.
"""

from __future__ import annotations

import numpy as np

from ros_fusion.core.compensation import compensate_radar, deskew_lidar
from ros_fusion.core.ego_motion import GRAVITY, EgoMotionConfig, PoseHistory
from ros_fusion.core.transforms import invert_transform, se2_transform, xyz_rpy_to_transform
from ros_fusion.core.types import ImuSample, Odometry

S = 1_000_000_000
T0 = 1_700_000_000 * S
V, W = 20.0, 0.5
LIDAR_E = xyz_rpy_to_transform([0.95, 0.0, 1.84], [0.0, 0.0, 0.0])
RADAR_E = xyz_rpy_to_transform([3.65, 0.0, 0.55], [0.0, 0.0, 0.0])


def _history(seconds: float = 2.0, rate: int = 100) -> PoseHistory:
    """Noisy IMU (BMI088-like white noise) + 50 Hz odometry on a 20 m/s, 0.5 rad/s circle."""
    h = PoseHistory(EgoMotionConfig(imu_extrinsic=xyz_rpy_to_transform([0, 0, 0.4], [0, 0, 0]),
                                    nominal_rate_hz=rate))
    rng = np.random.default_rng(0)
    for k in range(int(seconds * rate) + 1):
        t = T0 + k * S // rate
        if k % (rate // 50) == 0:
            h.add_odometry(Odometry(t, "odom", "base_link", np.zeros(3), np.array([0, 0, 0, 1.0]),
                                    np.array([V, 0, 0]), np.array([0, 0, W])))
        h.add_imu(ImuSample(t, "", np.array([0, 0, W]) + rng.normal(0, 2.4e-3, 3),
                            np.array([0, V * W, GRAVITY]) + rng.normal(0, 1.7e-2, 3)))
    return h


def test_bench_deskew_100k(benchmark) -> None:
    h = _history()
    T = h.span()[1]
    rng = np.random.default_rng(1)
    n = 100_000
    # A world point cloud observed along the sweep: the truth of each point at T is known.
    world = np.c_[rng.uniform(-60, 60, (n, 2)), rng.uniform(-1.5, 3.0, n)]
    times = T - rng.integers(0, S // 10, n)
    ts = (times - T0) / S
    yaw = W * ts
    bx, by = V / W * np.sin(yaw), V / W * (1 - np.cos(yaw))
    # world → base_link at each point's time (analytic circle) → sensor frame (no rotation)
    dx, dy = world[:, 0] - bx, world[:, 1] - by
    c, s = np.cos(yaw), np.sin(yaw)
    base = np.c_[c * dx + s * dy, -s * dx + c * dy, world[:, 2]]
    xyz = (base - LIDAR_E[:3, 3]).astype(np.float32)
    tT = (T - T0) / S
    pose_T = se2_transform(V / W * np.sin(W * tT), V / W * (1 - np.cos(W * tT)), W * tT)
    truth = world @ invert_transform(pose_T)[:3, :3].T + invert_transform(pose_T)[:3, 3]

    out = benchmark(deskew_lidar, xyz, times, T, h, LIDAR_E)
    err = np.linalg.norm(out - truth, axis=1)
    assert out.shape == (n, 3) and float(np.percentile(err, 99)) < 0.05


def test_bench_radar_compensation(benchmark) -> None:
    h = _history()
    t = h.span()[1] - 40_000_000
    rng = np.random.default_rng(2)
    pts = np.c_[rng.uniform(5, 100, 64), rng.uniform(-30, 30, 64), np.zeros(64)]
    v_r = rng.normal(0, 5, 64)
    xyz, vc = benchmark(compensate_radar, pts, v_r, t, t + 40_000_000, h, RADAR_E)
    assert xyz.shape == (64, 3) and np.all(np.isfinite(vc))


def test_bench_pose_query(benchmark) -> None:
    h = _history()
    t1 = h.span()[1]
    rel = benchmark(h.relative_pose, t1 - 73_456_789, t1)
    assert abs(rel[0, 3] + V * 0.0734) < 0.1


def test_bench_add_imu_sample(benchmark) -> None:
    h = _history(seconds=1.0)
    state = {"t": h.span()[1]}

    def one() -> None:
        state["t"] += S // 400
        h.add_imu(ImuSample(state["t"], "", np.array([0, 0, W]), np.array([0, V * W, GRAVITY])))

    benchmark(one)
    assert h.stats.imu_rejected == {}
