"""Our numpy nuScenes metrics against nuscenes-devkit 1.2.0 on the same (ground truth, prediction) frames."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from ros_fusion.core.types import Obstacles
from ros_fusion.eval.detection_metrics import TP_METRICS, EvalConfig, evaluate

pytest.importorskip("nuscenes")

from ros_fusion.eval.devkit_check import devkit_map, to_eval_boxes, yaw_quaternion
from ros_fusion.eval.plots import box_corners_bev

CLASSES = ("car", "truck", "bus", "pedestrian", "cyclist", "barrier")
SIZES = {0: (4.5, 1.9, 1.6), 1: (8.0, 2.5, 3.2), 2: (11.0, 2.9, 3.4), 3: (0.7, 0.7, 1.75), 4: (1.8, 0.6, 1.5),
         5: (2.0, 0.5, 1.0)}
NOISE = {0: 0.25, 1: 0.6, 2: 0.9, 3: 0.4, 4: 1.2, 5: 0.15}  # centre noise σ per class: AP differs per threshold


def make(rows: np.ndarray, labels: np.ndarray, scores: np.ndarray | None = None) -> Obstacles:
    rows = np.asarray(rows, np.float32).reshape(-1, 9)
    n = len(rows)
    s = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Obstacles(0, "base_link", rows, s, np.asarray(labels, np.int32), np.zeros((n, 3), np.float32))


def random_frames(seed: int, n_frames: int = 30, present=(0, 1, 3, 4, 5)) -> list[tuple[Obstacles, Obstacles]]:
    """GT of several classes within 60 m (some beyond the 50 m range); predictions: noisy GT, misses, false ones."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        n = int(rng.integers(3, 12))
        labels = rng.choice(present, n)
        r = rng.uniform(2.0, 60.0, n)
        a = rng.uniform(-np.pi, np.pi, n)
        gt = np.zeros((n, 9))
        gt[:, 0], gt[:, 1] = r * np.cos(a), r * np.sin(a)
        for i, lab in enumerate(labels):
            l, w, h = SIZES[int(lab)]
            gt[i, 2:6] = (h / 2, l, w, h)
        gt[:, 6] = rng.uniform(-np.pi, np.pi, n)
        gt[:, 7:9] = rng.normal(0, 4, (n, 2))
        keep = rng.random(n) > 0.15  # ~15 % missed
        pred = gt[keep].copy()
        p_lab = labels[keep]
        sig = np.array([NOISE[int(k)] for k in p_lab]) * rng.uniform(0.3, 2.0, len(pred))
        pred[:, :2] += rng.normal(0, 1, (len(pred), 2)) * sig[:, None]
        pred[:, 3:6] *= rng.uniform(0.8, 1.25, (len(pred), 3))
        pred[:, 6] += rng.normal(0, 0.3, len(pred))
        pred[:, 7:9] += rng.normal(0, 1.0, (len(pred), 2))
        n_fp = int(rng.integers(0, 4))
        fp = np.zeros((n_fp, 9))
        fp_r, fp_a = rng.uniform(2, 55, n_fp), rng.uniform(-np.pi, np.pi, n_fp)
        fp[:, 0], fp[:, 1] = fp_r * np.cos(fp_a), fp_r * np.sin(fp_a)
        fp[:, 2:6] = (0.8, 4.5, 1.9, 1.6)
        fp_lab = rng.choice(present, n_fp)
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(pred)), rng.uniform(0.05, 0.7, n_fp)])
        frames.append((make(gt, labels), make(np.vstack([pred, fp]), np.concatenate([p_lab, fp_lab]), scores)))
    return frames


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_per_class_ap_and_tp_errors_match_the_devkit(seed):
    frames = random_frames(seed)
    ours = evaluate(frames, EvalConfig(classes=CLASSES))
    theirs = devkit_map(frames, CLASSES)
    assert 0.2 < ours.mean_ap < 0.98  # a realistic, non-trivial operating point
    assert abs(ours.mean_ap - theirs["mAP"]) <= 0.01
    assert theirs["mAP"] == pytest.approx(ours.mean_ap, abs=1e-6)  # the same algorithm: equal, not only close
    assert theirs["NDS"] == pytest.approx(ours.nds, abs=1e-6)
    for c in CLASSES:
        a, b = ours.class_ap(c), theirs["per_class_AP"][c]
        if ours.n_gt[c] == 0:
            assert math.isnan(a) and math.isnan(b)
            continue
        assert abs(a - b) <= 0.01, c
        assert b == pytest.approx(a, abs=1e-6)
        for th, v in ours.ap[c].items():
            assert theirs["AP_by_threshold"][c][f"{th:g}"] == pytest.approx(v, abs=1e-6)
        for m in TP_METRICS:
            mine, dev = ours.tp_errors[c][m], theirs["tp_errors"][c][m]
            if math.isnan(mine):
                assert math.isnan(dev), (c, m)
            else:
                assert dev == pytest.approx(mine, abs=1e-6), (c, m)
    assert theirs["n_gt"] == ours.n_gt
    assert theirs["left_out"]["beyond_range"] > 0  # the 50-60 m boxes were dropped on both sides


def test_bus_has_no_ground_truth_and_the_devkit_rule_counts_it_as_zero():
    frames = random_frames(3)  # no bus in `present`
    theirs = devkit_map(frames, CLASSES)
    assert math.isnan(theirs["per_class_AP"]["bus"])
    ours_devkit_rule = evaluate(frames, EvalConfig(classes=CLASSES, empty_class_ap=0.0))
    assert theirs["mAP_all_classes"] == pytest.approx(ours_devkit_rule.mean_ap, abs=1e-6)
    assert theirs["mAP_all_classes"] < theirs["mAP"]


def test_range_filter_is_the_same_as_ours():
    """Kept when the centre is at most max_range from the ego (exactly 50 m is in), non-finite centres dropped."""
    gt = make([[49.9, 0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0], [50.5, 0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0],
               [30, 40, 0.8, 4.5, 1.9, 1.6, 0, 0, 0], [np.nan, 3, 0.8, 4.5, 1.9, 1.6, 0, 0, 0]], [0, 0, 0, 0])
    pred = make([[49.9, 0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0], [30, 30, 0.8, 4.5, 1.9, 1.6, 0, 0, 0]], [0, 0], [0.9, 0.8])
    for max_range in (50.0, 51.0):
        ours = evaluate([(gt, pred)], EvalConfig(classes=CLASSES, max_range=max_range))
        theirs = devkit_map([(gt, pred)], CLASSES, max_range=max_range)
        assert theirs["per_class_AP"]["car"] == pytest.approx(ours.class_ap("car"), abs=1e-9)
        assert theirs["n_gt"]["car"] == ours.n_gt["car"] == (2 if max_range == 50.0 else 3)
        assert theirs["left_out"]["non_finite_centre"] == 1


def test_conversion_matches_the_devkits_box_geometry():
    """Size order [w, l, h] and the yaw quaternion: the devkit's own Box must have our corners."""
    from nuscenes.eval.common.utils import quaternion_yaw
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    rows = np.array([[10, -4, 0.8, 4.5, 1.9, 1.6, 0.3, 1, 2], [-20, 7, 1.5, 11, 2.9, 3.4, np.pi / 2, 0, 0],
                     [3, 30, 0.5, 2.0, 0.5, 1.0, -2.5, 0, 0]])
    gt = make(rows, [0, 2, 5])
    gt_eb, pred_eb, _ = to_eval_boxes([(gt, make(rows[:0], []))], CLASSES)
    ours = box_corners_bev(gt.boxes)  # the float32 values the conversion saw
    for i, db in enumerate(gt_eb.all):
        assert db.size == pytest.approx((rows[i, 4], rows[i, 3], rows[i, 5]), abs=1e-6)
        q = Quaternion(db.rotation)
        assert quaternion_yaw(q) == pytest.approx(rows[i, 6], abs=1e-6)
        corners = Box(db.translation, db.size, q).corners()[:2, [0, 1, 5, 4]].T  # FL, FR, RR, RL in BEV
        assert corners == pytest.approx(ours[i], abs=1e-9)
    assert [b.detection_name for b in gt_eb.all] == ["car", "bus", "barrier"]
    assert pred_eb.sample_tokens == gt_eb.sample_tokens  # an empty prediction frame is still a sample
    assert yaw_quaternion(np.pi) == pytest.approx((0.0, 0.0, 0.0, 1.0), abs=1e-12)


def test_scale_error_sees_length_changed_and_not_width():
    """Predictions 1.5× longer: ASE = 1 − 1/1.5 in both; a width/length mix-up on one side would break it."""
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(10):
        n = 5
        g = np.zeros((n, 9))
        g[:, 0], g[:, 1] = rng.uniform(-30, 30, n), rng.uniform(-30, 30, n)
        g[:, 2:6] = (0.8, 4.5, 1.9, 1.6)
        g[:, 6] = rng.uniform(-np.pi, np.pi, n)
        p = g.copy()
        p[:, 3] *= 1.5
        frames.append((make(g, [0] * n), make(p, [0] * n, rng.uniform(0.2, 1.0, n))))
    ours = evaluate(frames, EvalConfig(classes=CLASSES))
    theirs = devkit_map(frames, CLASSES)
    assert theirs["tp_errors"]["car"]["scale_err"] == pytest.approx(1 - 1 / 1.5, abs=1e-6)
    assert ours.tp_errors["car"]["scale_err"] == pytest.approx(1 - 1 / 1.5, abs=1e-6)
    assert theirs["tp_errors"]["car"]["orient_err"] == pytest.approx(0.0, abs=1e-6)


def test_cyclist_is_bicycle_and_unknown_classes_are_refused():
    gt = make([[5, 0, 0.75, 1.8, 0.6, 1.5, 0, 0, 0]], [0])
    res = devkit_map([(gt, make(gt.boxes, [0], [0.9]))], ("cyclist",))
    assert res["nuscenes_names"] == {"cyclist": "bicycle"}
    assert res["per_class_AP"]["cyclist"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="forklift"):
        devkit_map([(gt, gt)], ("car", "forklift"))
    with pytest.raises(ValueError, match="both map"):
        devkit_map([(gt, gt)], ("cyclist", "bicycle"))
    with pytest.raises(ValueError, match="max_range"):
        devkit_map([(gt, gt)], CLASSES, max_range=-1.0)
    with pytest.raises(ValueError, match="frame 0"):
        devkit_map([(gt,)], CLASSES)  # type: ignore[list-item]


def test_non_finite_score_is_refused_and_unknown_labels_are_counted():
    gt = make([[5, 0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0]], [0])
    with pytest.raises(ValueError, match="score"):
        devkit_map([(gt, make(gt.boxes, [0], [float("nan")]))], CLASSES)
    res = devkit_map([(gt, make(np.vstack([gt.boxes, gt.boxes]), [0, 17], [0.9, 0.8]))], CLASSES)
    assert res["left_out"]["unknown_label"] == 1
    assert res["per_class_AP"]["car"] == pytest.approx(1.0)


def test_missing_devkit_names_the_pip_command(monkeypatch):
    for name in [m for m in sys.modules if m == "nuscenes" or m.startswith("nuscenes.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nuscenes", None)  # makes `import nuscenes…` raise ImportError
    gt = make([[5, 0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0]], [0])
    with pytest.raises(ImportError, match=r"pip install --no-deps nuscenes-devkit==1\.2\.0"):
        devkit_map([(gt, gt)], CLASSES)


def test_ground_truth_no_sensor_hit_is_left_out_by_both():
    """num_points == 0 is what the devkit's filter_eval_boxes drops; we do the same, and count it."""
    gt = make([[10, 0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0], [20, 5, 0.8, 4.5, 1.9, 1.6, 0, 0, 0],
               [30, -5, 0.8, 4.5, 1.9, 1.6, 0, 0, 0]], [0, 0, 0])
    gt.num_points = np.array([120, 0, 3], np.int32)  # the second car is hidden
    pred = make([[10, 0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0], [30, -5, 0.8, 4.5, 1.9, 1.6, 0, 0, 0]], [0, 0], [0.9, 0.8])
    ours = evaluate([(gt, pred)], EvalConfig(classes=CLASSES))
    theirs = devkit_map([(gt, pred)], CLASSES)
    assert ours.n_gt["car"] == theirs["n_gt"]["car"] == 2
    assert ours.n_gt_unobserved == theirs["left_out"]["no_sensor_points"] == 1
    assert ours.class_ap("car") == pytest.approx(1.0) and theirs["per_class_AP"]["car"] == pytest.approx(1.0)
    every_box = evaluate([(gt, pred)], EvalConfig(classes=CLASSES, min_gt_points=0))
    assert every_box.n_gt["car"] == 3 and every_box.class_ap("car") < 0.9
    assert devkit_map([(gt, pred)], CLASSES, min_gt_points=0)["per_class_AP"]["car"] == pytest.approx(
        every_box.class_ap("car"), abs=1e-9)
