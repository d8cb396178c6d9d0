"""LiDAR mount height from a road-plane fit (bag.ground): synthetic scenes, and KITTI's known mount."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ros_fusion.bag.ground import fit_lidar_height, sweep_ground_height

KITTI_VELODYNE = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "kitti_object" / "training" / "velodyne"
#: KITTI's Velodyne HDL-64E sits 1.73 m above the road (Geiger et al., "Vision meets robotics", IJRR 2013, Fig. 3).
KITTI_MOUNT_M = 1.73


def street(height: float, rng: np.random.Generator, pitch_deg: float = 0.0) -> np.ndarray:
    """A road `height` below the sensor (2 cm noise), a façade, two parked cars and a kerb, sensor frame."""
    road = np.c_[rng.uniform(-30, 30, 6000), rng.uniform(-12, 12, 6000), np.full(6000, -height)]
    road[:, 2] += rng.normal(0, 0.02, len(road))
    facade = np.c_[rng.uniform(-30, 30, 3000), np.full(3000, 9.0), rng.uniform(-height, 8, 3000)]
    cars = np.vstack([np.c_[rng.uniform(x, x + 4.5, 800), rng.uniform(y, y + 1.8, 800),
                            rng.uniform(-height, -height + 1.5, 800)] for x, y in ((8, -5), (15, 4))])
    kerb = np.c_[rng.uniform(-30, 30, 500), np.full(500, 6.0), np.full(500, -height + 0.15)]
    p = np.vstack([road, facade, cars, kerb])
    a = np.radians(pitch_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return p @ rot.T


@pytest.mark.parametrize(("height", "pitch"), [(1.5, 0.0), (1.9, 0.0), (1.73, 3.0)])
def test_height_of_a_street_with_walls_cars_and_kerbs(height: float, pitch: float) -> None:
    h = sweep_ground_height(street(height, np.random.default_rng(1), pitch))
    assert h == pytest.approx(height, abs=0.03)


def test_no_road_no_height() -> None:
    rng = np.random.default_rng(2)
    wall = np.c_[rng.uniform(3, 20, 5000), np.full(5000, 5.0), rng.uniform(-2, -0.1, 5000)]  # vertical plane
    assert sweep_ground_height(wall) is None
    assert sweep_ground_height(street(1.6, rng)[:50]) is None  # too few returns
    assert sweep_ground_height(np.full((1000, 3), np.nan)) is None
    assert fit_lidar_height([wall, wall]) is None


def test_median_over_sweeps_ignores_the_sweeps_without_a_road() -> None:
    rng = np.random.default_rng(3)
    wall = np.c_[rng.uniform(3, 20, 5000), np.full(5000, 5.0), rng.uniform(-2, -0.1, 5000)]
    fit = fit_lidar_height([street(1.5, rng), wall, street(1.6, rng), street(1.55, rng)])
    assert fit is not None and (fit.sweeps_used, fit.sweeps_seen) == (3, 4)
    assert fit.height_m == pytest.approx(1.55, abs=0.02) and fit.q25_m <= fit.height_m <= fit.q75_m
    assert fit.describe().startswith("ground fit: 1.5")


@pytest.mark.skipif(not KITTI_VELODYNE.is_dir(), reason="../shared/realdata KITTI frames absent")
def test_kitti_frames_give_kittis_documented_mount_height() -> None:
    from ros_fusion.bag.convert_kitti import load_lidar

    fit = fit_lidar_height(load_lidar(f, 0).xyz() for f in sorted(KITTI_VELODYNE.glob("*.bin")))
    assert fit is not None and fit.sweeps_used >= 3
    assert fit.height_m == pytest.approx(KITTI_MOUNT_M, abs=0.05)


def test_normal_and_levelling_of_a_tilted_mount() -> None:
    """A sensor pitched 4° and rolled 3°: the fit reports the tilt, and its level rotation puts the road flat."""
    rng = np.random.default_rng(4)
    from scipy.spatial.transform import Rotation

    tilt = Rotation.from_euler("xy", [3.0, 4.0], degrees=True).as_matrix()
    sweeps = [street(1.6, rng) @ tilt.T for _ in range(3)]  # points seen by the tilted sensor
    fit = fit_lidar_height(sweeps)
    assert fit is not None and fit.height_m == pytest.approx(1.6, abs=0.03)
    assert fit.tilt_deg() == pytest.approx(np.degrees(np.arccos(tilt[2, 2])), abs=0.3)
    R = fit.level_rotation()
    np.testing.assert_allclose(R @ np.asarray(fit.normal), [0, 0, 1], atol=1e-9)
    road = (sweeps[0] @ R.T)[:6000]  # street() puts the road first
    assert np.median(road[:, 2]) == pytest.approx(-1.6, abs=0.03) and np.std(road[:, 2]) < 0.05
    flat = fit_lidar_height([street(1.6, rng)])
    assert flat is not None and flat.tilt_deg() < 0.3
