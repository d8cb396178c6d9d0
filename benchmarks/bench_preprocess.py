"""Pre-processing cost (run: python -m pytest benchmarks/bench_preprocess.py --benchmark-only).

Why: the numpy pre-processing runs on the fusion node's thread for every LiDAR
sweep, before the network; the budget is 5 ms for the raster of a
100k-point cloud, and the rest of a bundle (camera grid, radar, image, IMU)
must stay small next to the ~30 ms inference.
"""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core.bev import BevGrid, tune_allocator
from ros_fusion.core.camera_lift import camera_grid, prepare_image
from ros_fusion.core.preprocess import CameraFrame, Preprocessor, SensorFrame
from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import ImuSample
from ros_fusion.paths import default_rig_path

G = BevGrid()
T = 1_700_000_000 * 10**9
#: What the fusion pipeline and dataset generation do at startup (see `tune_allocator`):
#: without it every large numpy temporary is a fresh mmap and the raster costs ~2x.
TUNED = tune_allocator()


def lidar_like_cloud(n: int = 100_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A sweep-like cloud: dense ground near the car thinning with range, plus objects, float32 like a driver."""
    rng = np.random.default_rng(seed)
    r = 3.0 + rng.exponential(15.0, n)
    az = rng.uniform(-np.pi, np.pi, n)
    z = np.where(rng.random(n) < 0.6, rng.normal(0.0, 0.03, n), rng.uniform(0.0, 3.5, n))
    xyz = np.c_[r * np.cos(az), r * np.sin(az), z].astype(np.float32)
    return xyz, rng.uniform(0, 1, n).astype(np.float32)


@pytest.fixture(scope="module")
def rig():
    return load_rig(default_rig_path())


def test_bench_lidar_raster_100k(benchmark) -> None:
    xyz, inten = lidar_like_cloud()
    out = benchmark(G.lidar_raster, xyz, inten)
    assert out.shape == (8, 128, 128) and out[0].sum() > 0
    benchmark.extra_info["allocator_tuned"] = TUNED


def test_bench_lidar_input_two_sweeps_100k(benchmark) -> None:
    """The network's LiDAR input: two 100k-point sweeps (this one and the one before, `LIDAR_SWEEPS`)."""
    xyz, inten = lidar_like_cloud()
    prev, prev_inten = lidar_like_cloud(seed=1)
    pre = Preprocessor()
    out = benchmark(pre.lidar_input, xyz, inten, prev, prev_inten)
    assert out.shape == (16, 128, 128) and out[0].sum() > 0 and out[8].sum() > 0
    benchmark.extra_info["allocator_tuned"] = TUNED


def test_bench_radar_raster(benchmark) -> None:
    rng = np.random.default_rng(1)
    n = 300  # a busy ARS 408 scan is ~100-250 detections
    xyz = np.c_[rng.uniform(0, 60, n), rng.uniform(-30, 30, n), np.full(n, 0.5)]
    out = benchmark(G.radar_raster, xyz, rng.uniform(-10, 20, n), rng.normal(0, 5, n))
    assert np.count_nonzero(out[0]) > 0


def test_bench_camera_grid(benchmark, rig) -> None:
    spec = rig.sensors["camera_front"]
    g, valid = benchmark(camera_grid, spec.intrinsics, spec.extrinsic, np.eye(4))
    assert valid.sum() > 0


def test_bench_image_prepare(benchmark) -> None:
    img = np.random.default_rng(2).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    out = benchmark(prepare_image, img)
    assert out.shape == (3, 240, 320)


def test_bench_full_bundle(benchmark, rig) -> None:
    """Everything `Preprocessor.build` does for 1 camera, 1 LiDAR (100k points), 1 radar, IMU."""
    pre = Preprocessor(rig)
    xyz, inten = lidar_like_cloud()
    spec = rig.sensors["camera_front"]
    rng = np.random.default_rng(3)
    frame = SensorFrame(
        stamp_ns=T, lidar_xyz=xyz, lidar_intensity=inten,
        radar_xyz=np.c_[rng.uniform(0, 60, 100), rng.uniform(-30, 30, 100), np.full(100, 0.5)],
        radar_rcs=rng.uniform(-10, 20, 100), radar_v_comp=rng.normal(0, 5, 100),
        cameras=[CameraFrame(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), spec.intrinsics,
                             spec.extrinsic)],
        imu=[ImuSample(T - k * 10_000_000, "imu_link", np.zeros(3), np.array([0, 0, 9.81])) for k in range(40)],
    )
    x = benchmark(pre.build, frame)
    assert x.arrays["present"].tolist() == [1, 1, 1]
