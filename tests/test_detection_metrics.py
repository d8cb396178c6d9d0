"""nuScenes-style metrics: hand-computed AP, perfect and shifted detections, range rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ros_fusion.core.types import Obstacles
from ros_fusion.eval.detection_metrics import (
    EvalConfig,
    accumulate,
    calc_ap,
    evaluate,
    scale_iou,
    yaw_diff,
)

CAR, PED, BARRIER = 0, 3, 5


def obs(rows, labels, scores=None) -> Obstacles:
    b = np.asarray(rows, np.float32).reshape(-1, 9)
    n = len(b)
    s = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Obstacles(0, "base_link", b, s, np.asarray(labels, np.int32), np.zeros((n, 3), np.float32))


def box(x, y, l=4.5, w=1.9, h=1.6, yaw=0.0, vx=0.0, vy=0.0):
    return [x, y, h / 2, l, w, h, yaw, vx, vy]


GT_CARS = [box(10, 0, vx=5), box(-15, 3, yaw=1.0), box(25, -8, vy=2), box(5, 30)]


def test_perfect_detections() -> None:
    gt = obs(GT_CARS, [CAR] * 4)
    pred = obs(GT_CARS, [CAR] * 4, [0.9, 0.8, 0.7, 0.6])
    r = evaluate([(gt, pred)])
    assert r.ap["car"] == pytest.approx({0.5: 1.0, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0})
    assert r.mean_ap == pytest.approx(1.0)  # classes without ground truth are left out (NaN)
    assert math.isnan(r.ap["bus"][2.0])
    assert r.tp_errors["car"] == pytest.approx({"trans_err": 0, "scale_err": 0, "orient_err": 0, "vel_err": 0},
                                               abs=1e-6)
    assert r.nds == pytest.approx(1.0)


def test_shifted_boxes_ate_equals_shift() -> None:
    gt = obs(GT_CARS, [CAR] * 4)
    shifted = [[b[0] + 0.18, b[1] - 0.24, *b[2:]] for b in GT_CARS]  # 0.3 m
    r = evaluate([(gt, obs(shifted, [CAR] * 4, [0.9, 0.8, 0.7, 0.6]))])
    assert r.tp_errors["car"]["trans_err"] == pytest.approx(0.3, abs=1e-5)
    assert r.class_ap("car") == pytest.approx(1.0)
    far = [[b[0] + 0.7, *b[1:]] for b in GT_CARS]  # 0.7 m: misses only the 0.5 m threshold
    r = evaluate([(gt, obs(far, [CAR] * 4))])
    assert r.ap["car"][0.5] == 0.0 and r.ap["car"][1.0] == pytest.approx(1.0)
    assert r.class_ap("car") == pytest.approx(0.75)
    assert r.tp_errors["car"]["trans_err"] == pytest.approx(0.7, abs=1e-5)


def test_hand_computed_ap() -> None:
    # 2 GT, one TP prediction: precision 1 up to recall 0.5, 0 beyond.
    # AP = mean over recall indices 11..100 of max(p - 0.1, 0) / 0.9 = (40 * 0.9 / 90) / 0.9 = 4/9
    gt = obs([box(10, 0), box(20, 0)], [CAR, CAR])
    r = evaluate([(gt, obs([box(10, 0)], [CAR]))])
    assert r.ap["car"][2.0] == pytest.approx(4 / 9)
    # 2 GT; TP, TP, then a FP: precision 1 for recall < 1 and 2/3 exactly at recall 1
    # AP = (89 * 0.9 + (2/3 - 0.1)) / 90 / 0.9
    pred = obs([box(10, 0), box(20, 0), box(-30, 0)], [CAR] * 3, [0.9, 0.8, 0.7])
    r = evaluate([(gt, pred)])
    assert r.ap["car"][2.0] == pytest.approx((89 * 0.9 + (2 / 3 - 0.1)) / 90 / 0.9)
    # a FP ranked first: (recall, precision) = (0, 0), (0.5, 1/2), (1, 2/3), linear in between
    pred = obs([box(-30, 0), box(10, 0), box(20, 0)], [CAR] * 3, [0.9, 0.8, 0.7])
    c = accumulate(gt.boxes.astype(float), np.zeros(2, int), pred.boxes.astype(float), np.zeros(3, int),
                   pred.scores.astype(float), 2.0)
    assert c.precision[75] == pytest.approx(0.5 + (2 / 3 - 0.5) * 0.5)
    assert c.precision[40] == pytest.approx(0.4)
    rec = np.linspace(0, 1, 101)[11:]
    p = np.where(rec <= 0.5, rec, 0.5 + (rec - 0.5) / 3)
    assert calc_ap(c) == pytest.approx(np.mean(np.clip(p - 0.1, 0, None)) / 0.9)


def test_tp_error_definitions() -> None:
    assert float(scale_iou([1, 1, 1], [2, 2, 2])) == pytest.approx(1 / 8)
    assert float(yaw_diff(3.0, -3.0)) == pytest.approx(2 * np.pi - 6.0)
    assert float(yaw_diff(0.1, 0.1 + np.pi, period=np.pi)) == pytest.approx(0.0, abs=1e-12)
    gt = obs([box(10, 0, l=1, w=1, h=1, yaw=0.2, vx=1.0)], [CAR])
    pred = obs([box(10, 0, l=2, w=2, h=2, yaw=0.5, vx=4.0, vy=4.0)], [CAR])
    e = evaluate([(gt, pred)]).tp_errors["car"]
    assert e["scale_err"] == pytest.approx(0.875) and e["orient_err"] == pytest.approx(0.3, abs=1e-6)
    assert e["vel_err"] == pytest.approx(5.0)
    # barriers: orientation modulo pi, no velocity error
    gtb = obs([box(10, 0, yaw=0.0)], [BARRIER])
    pb = obs([box(10, 0, yaw=np.pi, vx=9.0)], [BARRIER])
    eb = evaluate([(gtb, pb)]).tp_errors["barrier"]
    assert eb["orient_err"] == pytest.approx(0.0, abs=1e-6) and math.isnan(eb["vel_err"])


def test_matching_is_per_frame_and_per_class_and_in_range() -> None:
    gt0 = obs([box(10, 0)], [CAR])
    gt1 = obs([box(20, 0)], [CAR])
    # the frame-1 prediction sits on frame 0's GT: must not match
    r = evaluate([(gt0, obs([], [])), (gt1, obs([box(10, 0)], [CAR]))])
    assert r.ap["car"][4.0] == 0.0
    # wrong class never matches
    r = evaluate([(gt0, obs([box(10, 0)], [PED]))])
    assert r.ap["car"][4.0] == 0.0 and math.isnan(r.ap["pedestrian"][4.0])
    # GT and predictions beyond 50 m are ignored
    gt = obs([box(10, 0), box(60, 0)], [CAR, CAR])
    r = evaluate([(gt, obs([box(10, 0), box(-55, 0)], [CAR, CAR], [0.5, 0.9]))])
    assert r.n_gt["car"] == 1 and r.class_ap("car") == pytest.approx(1.0)
    assert evaluate([(gt, obs([box(10, 0)], [CAR]))], EvalConfig(max_range=70.0)).ap["car"][2.0] == pytest.approx(4 / 9)
    # one prediction cannot take two GT
    two = obs([box(10, 0), box(10.4, 0)], [CAR, CAR])
    assert evaluate([(two, obs([box(10.2, 0)], [CAR]))]).ap["car"][1.0] == pytest.approx(4 / 9)


def test_range_bands_and_devkit_empty_class() -> None:
    gt = obs([box(10, 0), box(40, 0)], [CAR, CAR])
    r = evaluate([(gt, obs([box(10, 0)], [CAR]))])
    assert r.per_band["0-20"] == pytest.approx(1.0) and r.per_band["35-50"] == 0.0 and math.isnan(r.per_band["20-35"])
    devkit = evaluate([(gt, obs([box(10, 0)], [CAR]))], EvalConfig(empty_class_ap=0.0))
    assert devkit.mean_ap == pytest.approx((4 / 9) / 6)  # five empty classes count as 0, as in the devkit
    s = r.summary()
    assert s["mAP"] == r.mean_ap and "trans_err" in s and s["per_class_AP"]["car"] == pytest.approx(4 / 9)


def test_ground_truth_without_sensor_returns_is_not_scored_but_counted() -> None:
    gt = obs(GT_CARS, [CAR] * 4)
    pred = obs(GT_CARS[:3], [CAR] * 3, [0.9, 0.8, 0.7])  # the fourth car is never detected
    assert evaluate([(gt, pred)]).class_ap("car") < 1.0  # num_points unknown: every box is scored
    gt.num_points = np.array([50, 8, 2, 0], np.int32)  # ...and no sensor saw it
    r = evaluate([(gt, pred)])
    assert r.class_ap("car") == pytest.approx(1.0)
    assert r.n_gt["car"] == 3 and r.n_gt_unobserved == 1 and r.summary()["n_gt_unobserved"] == 1
    strict = evaluate([(gt, pred)], EvalConfig(min_gt_points=3))  # the 2-return car goes too
    assert strict.n_gt["car"] == 2 and strict.n_gt_unobserved == 2
    assert gt.observed(3).num_points.tolist() == [50, 8]
