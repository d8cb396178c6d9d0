"""CenterPoint targets and decoding: peaks where the boxes are, exact round trip."""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core import network_io as nio
from ros_fusion.core.bev import BevGrid
from ros_fusion.core.centerhead import (
    MIN_RADIUS,
    REG,
    decode,
    draw_gaussian,
    encode,
    gaussian_radius,
    max_pool3,
)

G = BevGrid()


def boxes_fixture() -> tuple[np.ndarray, np.ndarray]:
    b = np.array([
        # x     y     z     l     w     h    yaw   vx    vy
        [12.3, -4.1, 0.8, 4.6, 1.9, 1.6, 0.3, 8.0, 0.5],  # car
        [-20.7, 9.9, 1.5, 10.5, 2.5, 3.0, -2.9, -3.0, 0.0],  # truck
        [5.05, 6.3, 0.9, 0.7, 0.6, 1.8, 1.2, 0.0, 1.1],  # pedestrian
        [40.0, -30.0, 0.6, 1.8, 0.6, 1.5, 3.0, -5.0, -1.0],  # cyclist
        [-3.3, -45.2, 0.5, 0.5, 2.5, 1.0, 1.57, 0.0, 0.0],  # barrier
    ])
    return b, np.array([0, 1, 3, 4, 5])


def test_heatmap_peaks_at_box_cells() -> None:
    b, lab = boxes_fixture()
    t = encode(b, lab)
    assert t.heatmap.shape == (len(nio.CLASSES), 64, 64) and t.regression.shape == (len(nio.REG_CHANNELS), 64, 64)
    assert t.n_objects == 5 and t.mask.sum() == 5
    for box, c in zip(b, lab, strict=True):
        i, j = (int(v) for v in G.cell_index(box[0], box[1], 2))
        assert t.heatmap[c, i, j] == 1.0
        assert np.unravel_index(np.argmax(t.heatmap[c]), (64, 64)) == (i, j)
        assert t.mask[i, j] == 1
        u, v = G.to_cells(box[0], box[1], 2)
        assert t.regression[REG["dx"], i, j] == pytest.approx(u - i, abs=1e-6)
        assert t.regression[REG["log_l"], i, j] == pytest.approx(np.log(box[3]), abs=1e-6)
    assert t.heatmap[2].max() == 0  # no bus
    # Gaussian falls off from the peak; neighbours below 1
    i, j = (int(v) for v in G.cell_index(12.3, -4.1, 2))
    assert 0 < t.heatmap[0, i + 1, j] < 1 and t.heatmap[0, i + 1, j] > t.heatmap[0, i + 2, j]


def test_radius_rule() -> None:
    # a small box gets the minimum radius, a bus a wider one
    assert max(MIN_RADIUS, int(gaussian_radius(0.7 / 1.6, 0.6 / 1.6))) == MIN_RADIUS
    assert gaussian_radius(12 / 1.6, 3 / 1.6) > gaussian_radius(4.5 / 1.6, 1.9 / 1.6) > 0
    # growing with size, monotonic
    r = [gaussian_radius(s, s) for s in (1, 2, 4, 8)]
    assert r == sorted(r)
    hm = np.zeros((9, 9), np.float32)
    draw_gaussian(hm, 4, 4, 2)
    assert hm[4, 4] == 1 and hm[4, 6] > 0 and hm[4, 7] == 0 and np.allclose(hm, hm.T)
    edge = np.zeros((5, 5), np.float32)
    draw_gaussian(edge, 0, 4, 3)  # clipped at the border, no error
    assert edge[0, 4] == 1


def test_round_trip_exact() -> None:
    b, lab = boxes_fixture()
    t = encode(b, lab)
    det = decode(t.heatmap, t.regression, logits=False, score_threshold=0.99, stamp_ns=7)
    assert len(det) == len(b) and det.stamp_ns == 7
    for box, c in zip(b, lab, strict=True):
        k = int(np.argmin(np.hypot(det.boxes[:, 0] - box[0], det.boxes[:, 1] - box[1])))
        assert det.labels[k] == c and det.scores[k] == pytest.approx(1.0)
        expect = box.copy()
        expect[6] = np.arctan2(np.sin(box[6]), np.cos(box[6]))
        np.testing.assert_allclose(det.boxes[k], expect, atol=2e-5)


def test_decode_threshold_topk_and_logits() -> None:
    hm = np.full((len(nio.CLASSES), 64, 64), -10.0, np.float32)
    hm[0, 10, 10] = 3.0  # p = 0.95
    hm[0, 10, 11] = 2.0  # neighbour of a higher peak: suppressed by max-pool
    hm[1, 30, 30] = 0.0  # p = 0.5
    hm[2, 50, 5] = -1.0  # p = 0.27
    reg = np.zeros((len(nio.REG_CHANNELS), 64, 64), np.float32)
    reg[REG["cos_yaw"]] = 1.0
    det = decode(hm, reg, score_threshold=0.3)
    assert det.labels.tolist() == [0, 1]
    assert det.scores == pytest.approx([1 / (1 + np.exp(-3)), 0.5])
    assert det.boxes[0, :2] == pytest.approx([-51.2 + 10 * 1.6, -51.2 + 10 * 1.6])
    assert det.boxes[0, 3:6] == pytest.approx([1.0, 1.0, 1.0])  # exp(0)
    assert len(decode(hm, reg, score_threshold=0.2, top_k=1)) == 1
    assert len(decode(hm, reg, score_threshold=0.2)) == 3
    gates = np.zeros((3, 64, 64), np.float32)
    gates[:, 10, 10] = [0.2, 0.5, 0.3]
    assert decode(hm, reg, score_threshold=0.9, gates=gates).weights[0] == pytest.approx([0.2, 0.5, 0.3])
    with pytest.raises(ValueError, match="regression"):
        decode(hm, reg[:3])


def test_max_pool_and_bad_boxes() -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    p = max_pool3(a)
    assert p[0, 0, 0] == 5 and p[0, 3, 3] == 15 and p[0, 1, 1] == 10
    b, lab = boxes_fixture()
    b = np.vstack([b, [np.nan, 0, 0, 1, 1, 1, 0, 0, 0], [80.0, 0, 0, 4, 2, 1.5, 0, 0, 0]])
    lab = np.r_[lab, 0, 0]
    lab[0] = 17  # unknown class
    t = encode(b, lab)
    assert t.n_objects == 4  # NaN box, out-of-grid box and unknown class skipped
    with pytest.raises(ValueError, match="labels"):
        encode(b, lab[:2])


def test_shared_cell_keeps_smaller_box() -> None:
    b = np.array([[10.1, 10.1, 1.0, 10.0, 2.5, 3.0, 0, 0, 0], [10.3, 10.4, 0.9, 0.7, 0.6, 1.8, 0, 0, 0]])
    t = encode(b, np.array([2, 3]))
    i, j = (int(v) for v in G.cell_index(10.1, 10.1, 2))
    assert t.mask.sum() == 1 and t.regression[REG["log_l"], i, j] == pytest.approx(np.log(0.7))
    assert t.heatmap[2, i, j] == 1 and t.heatmap[3, i, j] == 1


def test_barriers_in_a_row_are_all_decoded() -> None:
    """Barriers 2.4 m apart (adjacent 1.6 m cells): the 3×3 max-pool keeps one of each pair,
    the circle NMS of the dense classes keeps them all; cars keep the max-pool."""
    row = np.array([[10.0 + 2.4 * k, -3.0, 0.5, 0.5, 2.0, 1.0, 0.0, 0.0, 0.0] for k in range(5)])
    barrier = nio.CLASSES.index("barrier")
    t = encode(row, np.full(len(row), barrier))
    hm = t.heatmap.copy()
    # A network's peaks are not all exactly 1: make the row's centres slightly uneven.
    centres = np.argwhere(t.mask > 0)
    for k, (i, j) in enumerate(centres):
        hm[barrier, i, j] = 0.9 + 0.02 * k
    pooled = decode(hm, t.regression, logits=False, score_threshold=0.85, dense_nms={})
    dense = decode(hm, t.regression, logits=False, score_threshold=0.85)
    assert len(pooled) < len(row) == len(dense)
    np.testing.assert_allclose(np.sort(dense.boxes[:, 0]), row[:, 0], atol=1e-4)
    assert np.all(np.diff(dense.scores) <= 0)  # still highest score first
    # The same heatmap as cars goes through the max-pool.
    car = nio.CLASSES.index("car")
    as_cars = np.zeros_like(hm)
    as_cars[car] = hm[barrier]
    assert len(decode(as_cars, t.regression, logits=False, score_threshold=0.85)) == len(pooled)


def test_circle_nms_keeps_the_first_of_close_points() -> None:
    from ros_fusion.core.centerhead import circle_nms

    x = np.array([0.0, 0.5, 3.0, 3.9, 10.0])
    y = np.zeros(5)
    assert circle_nms(x, y, 1.0).tolist() == [0, 2, 4]  # 3.9 is 0.9 m from the kept 3.0
    assert circle_nms(x, y, 1.0 - 0.6).tolist() == [0, 1, 2, 3, 4]
    assert circle_nms(x, y, 4.0).tolist() == [0, 4]
    assert circle_nms(x[:0], y[:0], 1.0).tolist() == []


def test_a_lone_barrier_decodes_once_even_at_a_low_threshold() -> None:
    """The Gaussian shoulder around a dense-class centre is not a second box."""
    import ros_fusion.core.centerhead as ch

    box = np.array([[7.3, 2.1, 0.5, 0.5, 2.0, 1.0, 0.4, 0.0, 0.0]])
    t = encode(box, np.array([nio.CLASSES.index("barrier")]))
    assert len(decode(t.heatmap, t.regression, logits=False, score_threshold=0.05)) == 1
    saved = ch.DENSE_PEAK_RATIO
    try:
        ch.DENSE_PEAK_RATIO = 0.0  # without the ratio the shoulder 2 cells out (0.055) would be a box
        assert len(decode(t.heatmap, t.regression, logits=False, score_threshold=0.05)) > 1
    finally:
        ch.DENSE_PEAK_RATIO = saved


def test_nonfinite_head_outputs_never_become_boxes() -> None:
    """NaN scores count as 0 and NaN offsets drop the box, on the max-pool and the circle-NMS path alike."""
    hm = np.full((len(nio.CLASSES), 64, 64), -10.0, np.float32)
    reg = np.zeros((len(nio.REG_CHANNELS), 64, 64), np.float32)
    reg[REG["cos_yaw"]] = 1.0
    for name, cells in (("car", [(5, 5), (40, 40)]), ("barrier", [(10, 10), (10, 30)])):
        for i, j in cells:
            hm[nio.CLASSES.index(name), i, j] = 3.0
    hm[0, 20, 20] = np.nan
    reg[REG["dx"], 40, 40] = np.nan  # a car
    reg[REG["dy"], 10, 30] = np.inf  # a barrier
    det = decode(hm, reg, score_threshold=0.3)
    assert np.isfinite(det.boxes).all() and np.isfinite(det.scores).all()
    assert sorted(det.labels.tolist()) == [0, nio.CLASSES.index("barrier")]
