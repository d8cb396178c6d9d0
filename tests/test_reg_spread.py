"""Regression taught to the neighbours of each centre decodes the same box from a peak one cell off."""

from __future__ import annotations

import numpy as np

from ros_fusion.core import centerhead
from ros_fusion.core import network_io as nio
from ros_fusion.core.bev import BevGrid
from ros_fusion.models.reg_spread import spread_regression

REG = {c: i for i, c in enumerate(nio.REG_CHANNELS)}


def test_every_neighbour_points_at_its_own_centre() -> None:
    grid = BevGrid()
    fc = grid.feat_cell_m
    # two cars two feature cells apart (their neighbourhoods share a column) and one at the grid edge
    boxes = np.array([[10.3, 4.1, 0.8, 4.5, 1.9, 1.6, 0.3, 2.0, 0.0],
                      [10.3 + 2 * fc, 4.1, 0.8, 4.0, 1.8, 1.5, -1.0, 0.0, 0.0],
                      [nio.X_RANGE[0] + 0.2, 0.0, 0.8, 4.0, 1.8, 1.5, 0.0, 0.0, 0.0]])
    t = centerhead.encode(boxes, np.zeros(3, np.int64), grid)
    reg, mask = spread_regression(t.regression[None], t.mask[None], 0.5)
    assert (mask[0] == 1.0).sum() == 3  # centres keep weight 1
    assert (mask[0] == 0.5).sum() == 8 + 8 + 5 - 3  # 3 cells shared by the first two; the edge car has 5
    np.testing.assert_array_equal(reg[0][:, t.mask > 0], t.regression[:, t.mask > 0])  # centres untouched
    for i, j in zip(*np.nonzero(mask[0] == 0.5), strict=True):
        x, y = grid.cell_to_xy(i + reg[0, REG["dx"], i, j], j + reg[0, REG["dy"], i, j], grid.stride)
        d = np.hypot(boxes[:, 0] - x, boxes[:, 1] - y)
        k = int(np.argmin(d))
        assert d[k] < 1e-4  # the decoded centre is exactly one of the boxes ...
        others = np.delete(np.arange(3), k)
        cell_centre = np.array(grid.cell_to_xy(i + 0.5, j + 0.5, grid.stride))
        near = np.hypot(*(boxes[k, :2] - cell_centre))
        assert all(near <= np.hypot(*(boxes[o, :2] - cell_centre)) + 1e-9 for o in others)  # ... the nearest one
        np.testing.assert_allclose(reg[0, REG["log_l"], i, j], np.log(boxes[k, 3]), rtol=1e-6)


def test_weight_zero_is_off_and_inputs_stay_unchanged() -> None:
    t = centerhead.encode(np.array([[5.0, 5.0, 0.8, 4.5, 1.9, 1.6, 0.0, 0.0, 0.0]]), np.zeros(1, np.int64))
    reg, mask = t.regression[None].copy(), t.mask[None].copy()
    assert spread_regression(reg, mask, 0.0)[0] is reg
    spread_regression(reg, mask, 0.5)
    np.testing.assert_array_equal(mask, t.mask[None])
    np.testing.assert_array_equal(reg, t.regression[None])
