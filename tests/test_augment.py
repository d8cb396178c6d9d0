"""The lateral mirror equals pre-processing the mirrored scene (rasters and targets)."""

from __future__ import annotations

import numpy as np

from ros_fusion.core import centerhead
from ros_fusion.core import network_io as nio
from ros_fusion.core.bev import BevGrid
from ros_fusion.models.augment import mirror_lateral


def _scene(rng: np.random.Generator, n_points: int = 4000, n_boxes: int = 6):
    grid = BevGrid()
    # Points away from cell borders so floor() cannot round differently for y and -y.
    i = rng.integers(0, nio.GRID, n_points)
    j = rng.integers(0, nio.GRID, n_points)
    x = nio.X_RANGE[0] + (i + rng.uniform(0.2, 0.8, n_points)) * nio.CELL_M
    y = nio.Y_RANGE[0] + (j + rng.uniform(0.2, 0.8, n_points)) * nio.CELL_M
    z = rng.uniform(-0.8, 3.5, n_points)
    xyz = np.stack([x, y, z], axis=1)
    fc = grid.feat_cell_m
    bi = rng.integers(2, nio.FEAT - 2, n_boxes)
    bj = rng.integers(2, nio.FEAT - 2, n_boxes)
    boxes = np.stack([
        nio.X_RANGE[0] + (bi + rng.uniform(0.2, 0.8, n_boxes)) * fc,
        nio.Y_RANGE[0] + (bj + rng.uniform(0.2, 0.8, n_boxes)) * fc,
        rng.uniform(0.5, 1.5, n_boxes), rng.uniform(3.5, 5.0, n_boxes), rng.uniform(1.6, 2.0, n_boxes),
        rng.uniform(1.4, 1.8, n_boxes), rng.uniform(-np.pi, np.pi, n_boxes), rng.normal(0, 5, n_boxes),
        rng.normal(0, 5, n_boxes)], axis=1)
    labels = rng.integers(0, len(nio.CLASSES), n_boxes)
    return grid, xyz, rng.uniform(0, 1, n_points), boxes, labels


def _sample(grid: BevGrid, xyz, intensity, boxes, labels) -> dict[str, np.ndarray]:
    lidar = np.concatenate([grid.lidar_raster(xyz, intensity)] * 2)
    radar = grid.radar_raster(xyz[:300], np.linspace(-10, 30, 300), np.linspace(-5, 5, 300))
    t = centerhead.encode(boxes, labels, grid)
    return {"lidar_bev": lidar[None], "radar_bev": radar[None], "heatmap_target": t.heatmap[None],
            "reg_target": t.regression[None], "reg_mask": t.mask[None]}


def test_mirror_equals_mirrored_scene() -> None:
    rng = np.random.default_rng(3)
    grid, xyz, it, boxes, labels = _scene(rng)
    mirrored = xyz * np.array([1.0, -1.0, 1.0])
    mboxes = boxes.copy()
    mboxes[:, 1] *= -1
    mboxes[:, 6] *= -1
    mboxes[:, 8] *= -1
    got = mirror_lateral(_sample(grid, xyz, it, boxes, labels), np.random.default_rng(0), p=1.0)
    want = _sample(grid, mirrored, it, mboxes, labels)
    for key in ("lidar_bev", "radar_bev", "heatmap_target", "reg_mask"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
    m = want["reg_mask"][0] > 0
    assert m.sum() == len(boxes)
    np.testing.assert_allclose(got["reg_target"][0][:, m], want["reg_target"][0][:, m], atol=1e-5)


def test_mirror_probability_and_untouched_input() -> None:
    rng = np.random.default_rng(5)
    grid, xyz, it, boxes, labels = _scene(rng)
    one = _sample(grid, xyz, it, boxes, labels)
    batch = {k: np.concatenate([v] * 64) for k, v in one.items()}
    batch["imu"] = np.tile(np.arange(1.0, 7.0, dtype=np.float32), (64, nio.IMU_WINDOW, 1))
    before = {k: v.copy() for k, v in batch.items()}
    out = mirror_lateral(batch, np.random.default_rng(1), p=0.5)
    flipped = ~np.all(out["lidar_bev"] == batch["lidar_bev"], axis=(1, 2, 3))
    assert 16 < flipped.sum() < 48  # about half of 64
    for k, v in before.items():
        np.testing.assert_array_equal(batch[k], v, err_msg=f"{k} changed in place")
    # gyro x, gyro z and acc y change sign on mirrored samples only
    assert (out["imu"][flipped, 0] == [-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]).all()
    assert (out["imu"][~flipped, 0] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).all()
    assert mirror_lateral(batch, np.random.default_rng(1), p=0.0) is batch
