"""Geometric detector cost (run: python -m pytest benchmarks/bench_geometric.py --benchmark-only).

Why: `detect_lidar` runs on the fusion node's thread for every LiDAR sweep when the training-free
detector is the LiDAR source; the goal is a median of at most 15 ms for a 120k-point sweep on a slow
2-core CPU, so it fits beside the pre-processing (5 ms) inside one 10 Hz period with room to spare. The
sweep is ray-cast from a street scene (buildings, parked and moving cars, a truck, pedestrians,
cyclists, trees and poles on a 2 % grade, tests/geometric_scenes.py) by a 64-beam LiDAR and resampled
to exactly 120k points, float32 like a driver.
"""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core.types import DEFAULT_CLASSES
from ros_fusion.runtime.geometric import GeometricConfig, detect_lidar, detect_radar
from tests.geometric_scenes import HDL64, street_scene, sweep_of

T = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def sweep() -> tuple[np.ndarray, np.ndarray]:
    return sweep_of(street_scene(), HDL64, 120_000)


def test_bench_detect_lidar_120k(benchmark, sweep) -> None:
    xyz, inten = sweep
    cfg = GeometricConfig(ring_spacing_deg=26.9 / 63)  # the 64-beam sensor of the scene
    obs = benchmark(detect_lidar, xyz, inten, T, cfg)
    cars = int(np.sum(obs.labels == DEFAULT_CLASSES.index("car")))
    benchmark.extra_info["boxes"] = len(obs)
    benchmark.extra_info["cars"] = cars
    assert len(xyz) == 120_000 and cars >= 5


def test_bench_detect_radar(benchmark) -> None:
    rng = np.random.default_rng(1)
    n = 300  # a busy ARS 408 scan is ~100-250 detections
    xyz = np.c_[rng.uniform(0, 80, n), rng.uniform(-30, 30, n), np.full(n, 0.5)]
    v = np.where(rng.random(n) < 0.2, rng.normal(8, 3, n), rng.normal(0, 0.2, n))
    obs = benchmark(detect_radar, xyz, v, rng.normal(5, 5, n), T)
    assert len(obs) >= 1
