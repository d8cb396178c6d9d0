"""BEV grid, LiDAR/radar rasters against slow per-cell references, coverage masks."""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core import network_io as nio
from ros_fusion.core.bev import LIDAR_SLICES, OCCUPANCY_NORM, BevGrid, camera_coverage
from ros_fusion.core.rig import load_rig
from ros_fusion.core.transforms import xyz_rpy_to_transform
from ros_fusion.core.types import Modality, PointCloud, RejectedInput
from ros_fusion.paths import default_rig_path

G = BevGrid()


def slow_lidar_raster(xyz: np.ndarray, inten: np.ndarray) -> np.ndarray:
    """Reference: loop over occupied cells with plain Python/float64 maths."""
    out = np.zeros((8, 128, 128), np.float64)
    cells: dict[tuple[int, int], list[int]] = {}
    for k, (x, y, z) in enumerate(xyz):
        if not (-51.2 <= x < 51.2 and -51.2 <= y < 51.2 and -1.0 <= z < 4.0):
            continue
        cells.setdefault((int(np.floor((x + 51.2) / 0.8)), int(np.floor((y + 51.2) / 0.8))), []).append(k)
    for (i, j), ks in cells.items():
        z = xyz[ks, 2]
        zn = (z + 1.0) / 5.0
        out[0, i, j] = np.log1p(len(ks)) / np.log1p(64)
        out[1, i, j] = zn.max()
        out[2, i, j] = zn.min()
        out[3, i, j] = zn.mean()
        out[4, i, j] = np.clip(inten[ks], 0, 1).mean()
        for s, (lo, hi) in enumerate(LIDAR_SLICES):
            out[5 + s, i, j] = np.mean((z >= lo) & (z < hi))
    return out


def test_grid_geometry_matches_design() -> None:
    assert (G.nx, G.ny, G.feat_nx, G.feat_ny) == (128, 128, 64, 64)
    assert G.feat_cell_m == pytest.approx(1.6)
    i, j = G.cell_index(np.array([-51.2, 0.0, 51.1]), np.array([-51.2, 0.79, -0.01]))
    assert i.tolist() == [0, 64, 127] and j.tolist() == [0, 64, 63]
    cx, cy = G.cell_centres(2)
    assert cx.shape == (64, 64) and cx[0, 0] == pytest.approx(-50.4) and cy[0, 1] == pytest.approx(-48.8)
    assert cx[1, 0] > cx[0, 0] and cy[0, 1] > cy[0, 0]  # rows along x, columns along y
    x, y = G.cell_to_xy(*G.to_cells(3.3, -7.1, 2), 2)
    assert (float(x), float(y)) == pytest.approx((3.3, -7.1))
    assert G.in_grid(np.array([51.2, -51.2, np.nan]), np.array([0.0, 0.0, 0.0])).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="whole number"):
        BevGrid(x_range=(-51.0, 51.2))


@pytest.mark.parametrize("seed", [0, 1])
def test_lidar_raster_matches_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    # clustered points (several per cell) plus outliers outside grid / z window and a NaN
    centres = rng.uniform(-55, 55, (300, 2))
    xy = centres[rng.integers(0, 300, n)] + rng.normal(0, 0.3, (n, 2))
    xyz = np.c_[xy, rng.uniform(-1.5, 4.5, n)]
    xyz[5] = np.nan
    inten = rng.uniform(-0.1, 1.2, n)  # already on the 0–1 scale; out-of-range values are clipped
    fast = G.lidar_raster(xyz, inten)
    ref = slow_lidar_raster(xyz, inten)
    assert fast.shape == (len(nio.LIDAR_SWEEP_CHANNELS), 128, 128) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, ref, atol=2e-6)
    assert (fast[0] > 0).sum() > 100  # the test really exercised many cells


def test_lidar_raster_known_cell() -> None:
    # three points in cell (70, 60): x in [4.8, 5.6), y in [-3.2, -2.4)
    xyz = np.array([[5.0, -3.0, 0.5], [5.5, -2.5, 1.5], [5.2, -2.9, 3.0]], np.float32)
    r = G.lidar_raster(xyz, np.array([1.0, 0.0, 0.5]))
    assert np.count_nonzero(r[0]) == 1 and r[0, 70, 60] == pytest.approx(np.log1p(3) / OCCUPANCY_NORM)
    assert r[1, 70, 60] == pytest.approx(0.8) and r[2, 70, 60] == pytest.approx(0.3)
    assert r[4, 70, 60] == pytest.approx(0.5)
    assert r[5:, 70, 60] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert not G.lidar_raster(np.zeros((0, 3))).any()
    with pytest.raises(RejectedInput, match="intensities"):
        G.lidar_raster(xyz, np.ones(2))
    with pytest.raises(RejectedInput, match="points"):
        G.lidar_raster(np.ones((4, 2)))
    # filling one sweep's slice of the multi-sweep input gives the same numbers, in place
    both = np.zeros((len(nio.LIDAR_CHANNELS), 128, 128), np.float32)
    n = len(nio.LIDAR_SWEEP_CHANNELS)
    assert G.lidar_raster(xyz, np.array([1.0, 0.0, 0.5]), out=both[n:]).base is both
    np.testing.assert_array_equal(both[n:], r)
    assert not both[:n].any()
    with pytest.raises(ValueError, match="out"):
        G.lidar_raster(xyz, out=np.zeros((n, 128, 128), np.float64))


def test_radar_raster_statistics() -> None:
    xyz = np.array([[10.1, 0.1, 0.5], [10.3, 0.5, 0.5], [-20.0, 5.0, 0.5], [80.0, 0.0, 0.5]])
    rcs = np.array([10.0, -5.0, 40.0, 0.0])
    v = np.array([-3.0, 6.0, 45.0, 1.0])
    r = G.radar_raster(xyz, rcs, v)
    i, j = G.cell_index(10.1, 0.1)
    assert r[0, i, j] == pytest.approx(np.log1p(2))
    assert r[1, i, j] == pytest.approx(0.5) and r[2, i, j] == pytest.approx((0.5 + 0.25) / 2)
    assert r[3, i, j] == pytest.approx((-0.1 + 0.2) / 2) and r[4, i, j] == pytest.approx(0.2)
    k, m = G.cell_index(-20.0, 5.0)
    assert r[1, k, m] == 1.0 and r[3, k, m] == 1.0  # clipped
    assert np.count_nonzero(r[0]) == 2  # the 80 m point is outside the grid
    with pytest.raises(RejectedInput):
        G.radar_raster(xyz, rcs[:2], v)


def test_sector_coverage_follows_sensor_pose() -> None:
    front = G.sector_coverage(xyz_rpy_to_transform([3.65, 0, 0.55], [0, 0, 0]), np.deg2rad(60), 70.0)
    cx, cy = G.cell_centres(2)
    assert front.shape == (64, 64)
    assert front[cx > 5].mean() > 0.5 and not front[cx < 3].any()
    rear = G.sector_coverage(xyz_rpy_to_transform([-1.0, 0, 0.5], [0, 0, np.pi]), np.deg2rad(30), 40.0)
    assert rear[cx < -5].any() and not rear[cx > 0].any()
    i, j = G.cell_index(np.array([-30.0]), np.array([0.0]), 2)
    assert rear[i[0], j[0]] == 1.0


def test_rig_coverage() -> None:
    rig = load_rig(default_rig_path())
    lidar = G.modality_coverage(rig.of(Modality.LIDAR))
    radar = G.modality_coverage(rig.of(Modality.RADAR))
    assert lidar.mean() > 0.95  # 100 m range covers the whole grid but the blind circle
    assert 0.2 < radar.mean() < 0.5  # 120 deg forward sector
    assert not G.modality_coverage([]).any()
    with pytest.raises(ValueError, match="no BEV coverage"):
        G.sensor_coverage(rig.of(Modality.IMU)[0])
    valid = np.zeros((2, 4, 64, 64), np.float32)
    valid[1, 3, 10, 20] = 1
    cov = camera_coverage(valid)
    assert cov.sum() == 1 and cov[10, 20] == 1


def test_normalised_intensity_follows_each_sensors_scale() -> None:
    """A KITTI-style 0–1 sensor and an 8-bit one seeing the same surfaces feed the network the same values."""
    from ros_fusion.core.bev import normalised_intensity

    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    eight_bit, unit = np.zeros(3, dt), np.zeros(3, dt)
    eight_bit["intensity"] = [255.0, 0.0, 51.0]
    unit["intensity"] = [1.0, 0.0, 0.2]
    a = normalised_intensity(PointCloud(0, "l", eight_bit), 255.0)
    b = normalised_intensity(PointCloud(0, "l", unit), 1.0)
    assert a.dtype == np.float32 and np.allclose(a, [1.0, 0.0, 0.2]) and np.allclose(a, b)
    # read on the wrong scale, the 0–1 sensor looks black: what the rig's intensity_max prevents
    assert normalised_intensity(PointCloud(0, "l", unit), 255.0).max() < 0.004
    no_field = np.zeros(4, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))
    assert normalised_intensity(PointCloud(0, "l", no_field), 255.0).tolist() == [0.0] * 4


def _sweep(intensity: np.ndarray) -> PointCloud:
    pts = np.zeros(len(intensity), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")]))
    pts["intensity"] = intensity
    return PointCloud(0, "lidar_top", pts)


def test_intensity_scale_mismatch_names_both_contradictions() -> None:
    from ros_fusion.core.bev import intensity_scale_mismatch

    rng = np.random.default_rng(0)
    eight_bit, unit = rng.uniform(0, 255, 5000), rng.uniform(0, 1, 5000)
    assert intensity_scale_mismatch(_sweep(eight_bit), 255.0) is None
    assert intensity_scale_mismatch(_sweep(unit), 1.0) is None
    black = intensity_scale_mismatch(_sweep(unit), 255.0)  # KITTI-style driver, 8-bit rig
    assert black is not None and "intensity_max: 1" in black
    white = intensity_scale_mismatch(_sweep(eight_bit), 1.0)  # 8-bit driver, 0-1 rig
    assert white is not None and "exceed intensity_max 1" in white
    # too few returns, NaN-only or no intensity field: not judged
    assert intensity_scale_mismatch(_sweep(unit[:100]), 255.0) is None
    assert intensity_scale_mismatch(_sweep(np.full(5000, np.nan)), 255.0) is None
    assert intensity_scale_mismatch(_sweep(np.zeros(5000)), 255.0) is None  # all-black: no evidence of a scale


def _scan(rcs: np.ndarray | None) -> PointCloud:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("rcs", "<f4")] if rcs is not None else [])
    pts = np.zeros(200 if rcs is None else len(rcs), np.dtype(fields))
    if rcs is not None:
        pts["rcs"] = rcs
    return PointCloud(0, "radar_front", pts)


def test_radar_rcs_reads_dbsm_through_the_rigs_offset() -> None:
    from ros_fusion.core.bev import UNKNOWN_RCS_DBSM, radar_rcs_dbsm

    assert np.allclose(radar_rcs_dbsm(_scan(np.array([10.0, -5.0])), 0.0), [10.0, -5.0])
    assert np.allclose(radar_rcs_dbsm(_scan(np.array([50.0, 35.0])), -40.0), [10.0, -5.0])  # dB over 1 cm²
    assert radar_rcs_dbsm(_scan(None), 0.0).tolist() == [UNKNOWN_RCS_DBSM] * 200


def test_rcs_scale_mismatch_names_the_rig_key() -> None:
    from ros_fusion.core.bev import rcs_scale_mismatch

    rng = np.random.default_rng(0)
    dbsm = rng.uniform(-20, 30, 500)  # what an ARS 408 reports
    assert rcs_scale_mismatch(_scan(dbsm), 0.0) is None
    raw = rng.uniform(45, 97, 500)  # an uncalibrated magnitude (Astyx Mag's range) written as rcs
    msg = rcs_scale_mismatch(_scan(raw), 0.0)
    assert msg is not None and "rcs_offset_db" in msg and "outside" in msg
    assert rcs_scale_mismatch(_scan(raw), -60.0) is None  # the rig says how to read it: no warning
    one_odd = np.concatenate([rng.uniform(-10, 30, 63), [95.0]])  # one glitch in a 64-detection scan
    assert rcs_scale_mismatch(_scan(one_odd), 0.0) is None
    assert rcs_scale_mismatch(_scan(np.concatenate([one_odd[:56], np.full(8, 95.0)])), 0.0) is not None
    # too few detections, a constant placeholder or no rcs field: not judged
    assert rcs_scale_mismatch(_scan(raw[:20]), 0.0) is None
    assert rcs_scale_mismatch(_scan(np.full(500, 90.0)), 0.0) is None
    assert rcs_scale_mismatch(_scan(None), 0.0) is None
