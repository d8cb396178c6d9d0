"""Simulator speed: one simulated frame of each sensor at the default rig, plus 1 s of drive.

Run: pytest benchmarks/bench_sim.py --benchmark-only
Goal: a whole drive ≥ 2× faster than real time on 2 cores.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ros_fusion.core.rig import load_rig
from ros_fusion.paths import default_rig_path
from ros_fusion.sim.drive import DriveSimulator, simulate_drive


@pytest.fixture(scope="module")
def rig():
    return load_rig(default_rig_path())


@pytest.fixture(scope="module")
def sim(rig):
    return DriveSimulator(rig, "urban", 0, 5.0)


@pytest.mark.parametrize("sensor", ["lidar_top", "camera_front", "radar_front", "imu", "odometry"])
def test_bench_sensor_frame(benchmark, sim, rig, sensor):
    spec = rig.sensors[sensor]
    ts = itertools.cycle(np.arange(0.5, 4.5, 0.01))
    out = benchmark(lambda: sim.generate(spec, float(next(ts)), 0))
    assert out


def test_bench_one_second_of_urban_drive(benchmark, rig):
    n = benchmark.pedantic(lambda: sum(1 for _ in simulate_drive(rig, "urban", 0, 1.0)), rounds=3, iterations=1)
    assert n > 150
