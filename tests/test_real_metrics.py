"""Recall ≤ range and false positives inside the labelled region (eval/real_metrics.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_fusion.core.rig import load_rig, rig_from_dict
from ros_fusion.core.types import Modality, Obstacles
from ros_fusion.eval.real_metrics import camera_view, in_region, score_real

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("car", "pedestrian")


def _obs(rows: list[tuple[float, float, int, float]]) -> Obstacles:
    """Boxes at (x, y) with a label and a score; car-sized, no motion."""
    n = len(rows)
    boxes = np.zeros((n, 9), np.float32)
    for i, (x, y, _, _) in enumerate(rows):
        boxes[i, :7] = (x, y, 0.8, 4.5, 1.9, 1.6, 0.0)
    return Obstacles(0, "base_link", boxes, np.asarray([r[3] for r in rows], np.float32),
                     np.asarray([r[2] for r in rows], np.int32), np.zeros((n, 3), np.float32))


def everywhere(xyz: np.ndarray) -> np.ndarray:
    return np.ones(len(xyz), bool)


def test_recall_per_range_and_false_positives():
    gt = _obs([(10, 0, 0, 1), (40, 2, 0, 1), (60, 0, 0, 1), (8, -2, 1, 1)])
    pred = _obs([(10.8, 0.5, 0, 0.9),   # matches the car at 10 m
                 (41.0, 3.0, 0, 0.5),   # 1.4 m from the car at 40 m: matched
                 (20, 5, 0, 0.8),       # nothing there: a false car
                 (8, -2, 0, 0.7),       # right place, wrong class: a false car, the pedestrian missed
                 (55, 0, 0, 0.9)])      # beyond 50 m: neither matched nor counted as false
    s = score_real([(gt, pred)], CLASSES, everywhere, score_threshold=0.3)
    car = s.recall["car"]
    assert (car[30.0].found, car[30.0].total) == (1, 1)
    assert (car[50.0].found, car[50.0].total) == (2, 2)
    assert s.recall["pedestrian"][30.0].total == 1 and s.recall["pedestrian"][30.0].found == 0
    assert s.false_positives["car"] == 2 and s.fp_per_frame("car") == 2.0
    d = s.as_dict()
    assert d["recall"]["car"]["50"]["recall"] == 1.0 and d["frames"] == 1


def test_threshold_and_one_detection_per_box():
    gt = _obs([(10, 0, 0, 1)])
    pred = _obs([(10, 0.2, 0, 0.2), (10, -0.2, 0, 0.6), (10.5, 0, 0, 0.5)])
    high = score_real([(gt, pred)], CLASSES, everywhere, score_threshold=0.3)
    # the best-scoring one takes the box, the other above threshold is a duplicate: a false positive
    assert high.recall["car"][30.0].found == 1 and high.false_positives["car"] == 1
    none = score_real([(gt, pred)], CLASSES, everywhere, score_threshold=0.7)
    assert none.recall["car"][30.0].found == 0 and none.false_positives["car"] == 0
    two = score_real([(gt, pred), (gt, _obs([]))], CLASSES, everywhere, score_threshold=0.3)
    assert two.frames == 2 and two.recall["car"][30.0].total == 2 and two.fp_per_frame("car") == 0.5


def test_one_region_per_frame():
    """Frames pooled from two rigs: each is scored inside its own labelled region."""
    gt, pred = _obs([(10, 0, 0, 1)]), _obs([(20, 5, 0, 0.9)])

    def left(xyz: np.ndarray) -> np.ndarray:
        return xyz[:, 1] > 0

    def nowhere(xyz: np.ndarray) -> np.ndarray:
        return np.zeros(len(xyz), bool)

    s = score_real([(gt, pred), (gt, pred)], CLASSES, [left, nowhere], score_threshold=0.3)
    # the false car at y = 5 counts in the first frame's region only; the car at y = 0 is in neither
    assert s.false_positives["car"] == 1 and s.recall["car"][30.0].total == 0
    with pytest.raises(ValueError, match="1 regions for 2 frames"):
        score_real([(gt, pred), (gt, pred)], CLASSES, [left], score_threshold=0.3)


def test_camera_view_is_the_front_cameras_image():
    rig = load_rig(ROOT / "config" / "rig_default.yaml")
    region = camera_view(rig)
    inside = region(np.array([[20.0, 0.0, 0.5], [-20.0, 0.0, 0.5], [0.5, 20.0, 0.5], [20.0, 60.0, 0.5]]))
    assert inside.tolist() == [True, False, False, False]
    # outside the view neither a missed box nor a false positive counts
    gt = _obs([(-15, 0, 0, 1), (15, 0, 0, 1)])
    pred = _obs([(-10, 0, 0, 0.9), (15, 0.5, 0, 0.9)])
    s = score_real([(gt, pred)], CLASSES, region, score_threshold=0.3)
    assert (s.recall["car"][30.0].found, s.recall["car"][30.0].total) == (1, 1)
    assert s.false_positives["car"] == 0
    kept = in_region(pred, region, max_range=50.0)
    assert len(kept) == 1 and kept.boxes[0, 0] == pytest.approx(15.0)


def test_a_rig_without_cameras_labels_everywhere():
    d = yaml.safe_load((ROOT / "config" / "rig_default.yaml").read_text())
    d = copy.deepcopy(d)
    d["sensors"] = {k: v for k, v in d["sensors"].items() if v["modality"] != "camera"}
    rig = rig_from_dict(d)
    assert not rig.of(Modality.CAMERA)
    assert camera_view(rig)(np.array([[-20.0, 0.0, 0.0]])).tolist() == [True]
