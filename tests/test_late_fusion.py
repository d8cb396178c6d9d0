"""Late fusion (core/late_fusion.py): move_to_time, weighted box fusion, Platt calibration (docs/DESIGN.md §8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_fusion.core.late_fusion import (
    ScoreCalibration,
    WbfConfig,
    drop_non_finite,
    dt_seconds,
    fit_platt,
    move_to_time,
    source_modality,
    source_order,
    weighted_box_fusion,
)
from ros_fusion.core.transforms import make_transform, rot_z, rpy_to_matrix, wrap_angle
from ros_fusion.core.types import DEFAULT_CLASSES, Obstacles

T = 1_700_000_000_000_000_000
CAR, PED = DEFAULT_CLASSES.index("car"), DEFAULT_CLASSES.index("pedestrian")


def obs(rows, scores, labels, stamp=T, frame="base_link") -> Obstacles:
    """Obstacles from rows of [x y z l w h yaw vx vy] (short rows padded with a default car size)."""
    boxes = np.zeros((len(rows), 9), np.float32)
    for i, r in enumerate(rows):
        full = [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]
        full[: len(r)] = r
        boxes[i] = full
    n = len(rows)
    return Obstacles(stamp, frame, boxes, np.asarray(scores, np.float32).reshape(n),
                     np.asarray(labels, np.int32).reshape(n), np.zeros((n, 3), np.float32))


def empty(stamp=T, frame="base_link") -> Obstacles:
    return Obstacles.empty(stamp, frame)


# ============================================================================ move_to_time


def test_identity_pose_and_zero_dt_returns_same_boxes():
    o = obs([[1, 2, 0.5, 4, 2, 1.5, 0.3, 1.0, -2.0], [-7, 3, 1, 0.8, 0.6, 1.7, -2.5, 0.0, 0.5]], [0.9, 0.4], [0, 3],
            stamp=T - 50_000_000)
    o.weights[:] = [[0.2, 0.7, 0.1], [1, 0, 0]]
    out = move_to_time(o, np.eye(4), 0.0, T)
    assert out.stamp_ns == T and out.frame_id == "base_link"
    np.testing.assert_allclose(out.boxes, o.boxes, atol=1e-6)
    np.testing.assert_array_equal(out.scores, o.scores)
    np.testing.assert_array_equal(out.labels, o.labels)
    np.testing.assert_array_equal(out.weights, o.weights)
    assert out.boxes is not o.boxes


def test_pure_translation_shifts_centre_only():
    o = obs([[1, 2, 0.5, 4, 2, 1.5, 0.3, 1.0, -2.0]], [0.9], [0])
    out = move_to_time(o, make_transform(t=[-3.0, 1.5, 0.25]), 0.0, T)
    np.testing.assert_allclose(out.boxes[0], [-2, 3.5, 0.75, 4, 2, 1.5, 0.3, 1.0, -2.0], atol=1e-6)


def test_yaw_90_rotation_moves_centre_yaw_and_velocity():
    # Ego turned so that base_link(t_m) axes are rotated +90 deg in base_link(T), then shifted (1, 2).
    pose = make_transform(rot_z(math.pi / 2), [1.0, 2.0, 0.0])
    o = obs([[3, 0, 0.5, 4, 2, 1.5, 0.0, 1.0, 0.0]], [0.8], [0])
    out = move_to_time(o, pose, 0.0, T)
    # (3, 0) -> R (0, 3) + (1, 2) = (1, 5); heading x -> y (yaw pi/2); velocity (1, 0) -> (0, 1)
    np.testing.assert_allclose(out.boxes[0], [1, 5, 0.5, 4, 2, 1.5, math.pi / 2, 0, 1], atol=1e-6)
    # with dt = 0.5 s the object moves 0.5 m along its rotated velocity (+y)
    out = move_to_time(o, pose, 0.5, T)
    np.testing.assert_allclose(out.boxes[0, :3], [1, 5.5, 0.5], atol=1e-6)


def test_velocity_times_dt_moves_the_object():
    o = obs([[5, 1, 0, 4, 2, 1.5, 0.0, 10.0, 0.0], [0, 0, 0, 1, 1, 1, 0.0, 0.0, -4.0]], [0.5, 0.5], [0, 3])
    out = move_to_time(o, np.eye(4), 0.1, T)
    np.testing.assert_allclose(out.boxes[0, :3], [6, 1, 0], atol=1e-6)
    np.testing.assert_allclose(out.boxes[1, :3], [0, -0.4, 0], atol=1e-6)
    np.testing.assert_allclose(out.boxes[:, 7:9], o.boxes[:, 7:9])


def test_yaw_is_wrapped_after_rotation():
    o = obs([[0, 0, 0, 4, 2, 1.5, 3.0]], [0.5], [0])
    out = move_to_time(o, make_transform(rot_z(0.5)), 0.0, T)
    assert out.boxes[0, 6] == pytest.approx(3.5 - 2 * math.pi, abs=1e-6)


def _planar_pose(yaw, tx, ty, tz):
    return make_transform(rot_z(yaw), [tx, ty, tz])


def _compose_check(boxes, A, B, dt1, dt2, yaw_too: bool):
    o = obs(boxes.tolist(), np.full(len(boxes), 0.5), np.zeros(len(boxes)))
    two = move_to_time(move_to_time(o, A, dt1, T - 1), B, dt2, T)
    one = move_to_time(o, B @ A, dt1 + dt2, T)
    np.testing.assert_allclose(two.boxes[:, :6], one.boxes[:, :6], atol=2e-3)
    if yaw_too:
        assert np.all(np.abs(wrap_angle(two.boxes[:, 6].astype(np.float64) - one.boxes[:, 6])) < 1e-4)
        np.testing.assert_allclose(two.boxes[:, 7:9], one.boxes[:, 7:9], atol=1e-4)


def test_composition_fixed_example():
    A = _planar_pose(0.7, 1.0, -2.0, 0.1)
    B = _planar_pose(-2.1, -4.0, 0.5, 0.0)
    boxes = np.array([[10, 5, 0.5, 4, 2, 1.5, 2.9, 3.0, -1.0], [-3, 8, 1, 1, 1, 1.8, -1.0, 0.0, 1.2]])
    _compose_check(boxes, A, B, 0.03, 0.07, yaw_too=True)


finite = st.floats(-40, 40, allow_nan=False)
angle = st.floats(-math.pi, math.pi, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    ya=angle, yb=angle, ta=st.tuples(finite, finite, finite), tb=st.tuples(finite, finite, finite),
    dt1=st.floats(-0.5, 0.5), dt2=st.floats(-0.5, 0.5),
    box=st.tuples(finite, finite, st.floats(-2, 2), angle, st.floats(-20, 20), st.floats(-20, 20)),
)
def test_composition_property_planar(ya, yb, ta, tb, dt1, dt2, box):
    x, y, z, yaw, vx, vy = box
    boxes = np.array([[x, y, z, 4, 2, 1.5, yaw, vx, vy]])
    _compose_check(boxes, _planar_pose(ya, *ta), _planar_pose(yb, *tb), dt1, dt2, yaw_too=True)


@settings(max_examples=40, deadline=None)
@given(
    ra=st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3), angle),
    rb=st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3), angle),
    ta=st.tuples(finite, finite, finite), tb=st.tuples(finite, finite, finite),
    dt1=st.floats(-0.5, 0.5), dt2=st.floats(-0.5, 0.5),
    box=st.tuples(finite, finite, st.floats(-2, 2), angle, st.floats(-20, 20), st.floats(-20, 20)),
)
def test_composition_property_3d_centre(ra, rb, ta, tb, dt1, dt2, box):
    """With roll/pitch only the centre composes exactly (yaw/velocity lose their z part)."""
    x, y, z, yaw, vx, vy = box
    boxes = np.array([[x, y, z, 4, 2, 1.5, yaw, vx, vy]])
    A = make_transform(rpy_to_matrix(*ra), ta)
    B = make_transform(rpy_to_matrix(*rb), tb)
    o = obs(boxes.tolist(), [0.5], [0])
    two = move_to_time(move_to_time(o, A, 0.0, T - 1), B, 0.0, T)
    one = move_to_time(o, B @ A, 0.0, T)
    np.testing.assert_allclose(two.boxes[:, :3], one.boxes[:, :3], atol=2e-3)


@pytest.mark.parametrize(
    "pose",
    [
        np.full((4, 4), np.nan),
        np.where(np.eye(4) == 1, np.inf, 0.0),
        np.eye(3),
        np.diag([2.0, 1.0, 1.0, 1.0]),  # not a rotation
        np.diag([-1.0, 1.0, 1.0, 1.0]),  # reflection
        np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]], float),  # bad bottom row
        "eye",
    ],
)
def test_move_rejects_bad_pose(pose):
    with pytest.raises(ValueError, match="relative_pose"):
        move_to_time(obs([[0, 0, 0]], [0.5], [0]), pose, 0.0, T)


def test_move_rejects_bad_inputs():
    good = obs([[0, 0, 0]], [0.5], [0])
    with pytest.raises(ValueError, match="dt_s"):
        move_to_time(good, np.eye(4), float("nan"), T)
    with pytest.raises(ValueError, match="stamp_ns"):
        move_to_time(good, np.eye(4), 0.0, 1.5)
    bad = obs([[0, 0, 0]], [0.5], [0])
    bad.boxes = bad.boxes[:, :8]
    with pytest.raises(ValueError, match="boxes"):
        move_to_time(bad, np.eye(4), 0.0, T)
    bad = obs([[0, 0, 0]], [0.5], [0])
    bad.scores = np.array([0.5, 0.4], np.float32)
    with pytest.raises(ValueError, match="scores"):
        move_to_time(bad, np.eye(4), 0.0, T)
    bad = obs([[0, 0, 0]], [0.5], [0])
    bad.boxes[0, 7] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        move_to_time(bad, np.eye(4), 0.0, T)
    with pytest.raises(ValueError, match="Obstacles"):
        move_to_time(good.boxes, np.eye(4), 0.0, T)


def test_drop_non_finite_counts_and_keeps_good_rows():
    o = obs([[1, 0, 0], [2, 0, 0], [3, 0, 0]], [0.5, 0.6, 0.7], [0, 1, 2])
    o.boxes[1, 2] = np.inf
    o.scores[2] = np.nan
    out, n = drop_non_finite(o)
    assert n == 2
    np.testing.assert_array_equal(out.boxes[:, 0], [1])
    np.testing.assert_array_equal(out.labels, [0])


def test_dt_seconds_keeps_nanosecond_precision():
    assert dt_seconds(T - 1, T) == pytest.approx(1e-9, rel=1e-12)
    assert dt_seconds(T, T - 250_000_000) == pytest.approx(-0.25)


# ============================================================================ weighted box fusion


def test_two_modalities_same_car_fuse_at_score_weighted_centre():
    dets = {
        "camera": obs([[10.0, 0.0, 0.4, 4.4, 2.0, 1.5, 0.1, 5.0, 0.0]], [0.6], [CAR]),
        "lidar": obs([[10.5, 0.0, 0.6, 4.0, 1.8, 1.6, 0.0, 6.0, 1.0]], [0.9], [CAR]),
    }
    out = weighted_box_fusion(dets, T)
    assert len(out) == 1 and out.labels[0] == CAR and out.stamp_ns == T
    w = np.array([0.6, 0.9]) / 1.5
    expect = w @ np.array([[10.0, 0.0, 0.4, 4.4, 2.0, 1.5], [10.5, 0.0, 0.6, 4.0, 1.8, 1.6]])
    np.testing.assert_allclose(out.boxes[0, :6], expect, atol=1e-5)
    assert out.boxes[0, 0] == pytest.approx(10.3, abs=1e-5)
    np.testing.assert_allclose(out.boxes[0, 7:9], w @ np.array([[5.0, 0.0], [6.0, 1.0]]), atol=1e-5)
    assert out.boxes[0, 6] == pytest.approx(math.atan2(w[0] * math.sin(0.1), w[0] * math.cos(0.1) + w[1]), abs=1e-6)
    assert out.scores[0] == pytest.approx(0.75, abs=1e-6)  # mean(0.6, 0.9) * 2/2
    np.testing.assert_allclose(out.weights[0], [0.4, 0.6, 0.0], atol=1e-6)


def test_class_aware_car_and_pedestrian_stay_separate():
    dets = {
        "camera": obs([[10, 0, 0]], [0.7], [PED]),
        "lidar": obs([[10, 0, 0]], [0.8], [CAR]),
    }
    out = weighted_box_fusion(dets, T)
    assert len(out) == 2
    assert sorted(out.labels.tolist()) == sorted([CAR, PED])
    # each is seen by one of two present modalities -> wbf halves its score; sorted by score
    np.testing.assert_allclose(out.scores, [0.4, 0.35], atol=1e-6)
    np.testing.assert_array_equal(out.labels, [CAR, PED])


def test_cars_3m_apart_stay_separate_and_class_radius_applies():
    out = weighted_box_fusion({"camera": obs([[0, 0, 0]], [0.7], [CAR]), "lidar": obs([[3, 0, 0]], [0.8], [CAR])}, T)
    assert len(out) == 2
    # 1.5 m apart: cars (radius 2) merge, pedestrians (radius 1) do not
    cars = weighted_box_fusion({"camera": obs([[0, 0, 0]], [0.7], [CAR]),
                                "lidar": obs([[0, 1.5, 0]], [0.8], [CAR])}, T)
    peds = weighted_box_fusion({"camera": obs([[0, 0, 0]], [0.7], [PED]),
                                "lidar": obs([[0, 1.5, 0]], [0.8], [PED])}, T)
    assert len(cars) == 1 and len(peds) == 2
    # a single float radius overrides all classes
    peds = weighted_box_fusion({"camera": obs([[0, 0, 0]], [0.7], [PED]),
                                "lidar": obs([[0, 1.5, 0]], [0.8], [PED])}, T, WbfConfig(radius_m=2.0))
    assert len(peds) == 1


def test_attribution_shares_sum_to_one_and_match_scores():
    dets = {
        "camera": obs([[20, 5, 0], [-5, 0, 0]], [0.2, 0.5], [CAR, PED]),
        "lidar": obs([[20.3, 5, 0]], [0.3], [CAR]),
        "radar": obs([[19.8, 5.2, 0]], [0.5], [CAR]),
    }
    out = weighted_box_fusion(dets, T)
    assert len(out) == 2
    np.testing.assert_allclose(out.weights.sum(axis=1), 1.0, atol=1e-6)
    car = int(np.flatnonzero(out.labels == CAR)[0])
    np.testing.assert_allclose(out.weights[car], [0.2, 0.3, 0.5], atol=1e-6)
    ped = int(np.flatnonzero(out.labels == PED)[0])
    np.testing.assert_allclose(out.weights[ped], [1.0, 0.0, 0.0], atol=1e-6)


def test_score_modes_hand_computed():
    dets = {
        "camera": obs([[10, 0, 0], [10.2, 0.1, 0]], [0.6, 0.5], [CAR, CAR]),
        "lidar": obs([[10.4, 0, 0]], [0.8], [CAR]),
        "radar": empty(),
    }
    wbf = weighted_box_fusion(dets, T, WbfConfig(score_mode="wbf"))
    nor = weighted_box_fusion(dets, T, WbfConfig(score_mode="noisy_or"))
    assert len(wbf) == 1 and len(nor) == 1
    # wbf: mean over all 3 members, 2 of 3 present modalities contributed
    assert wbf.scores[0] == pytest.approx((0.6 + 0.5 + 0.8) / 3 * 2 / 3, abs=1e-6)
    # noisy-or on the best score per modality: 1 - (1 - 0.6)(1 - 0.8)
    assert nor.scores[0] == pytest.approx(1 - 0.4 * 0.2, abs=1e-6)
    # the duplicate camera box counts in the averages
    np.testing.assert_allclose(wbf.boxes[0, 0], (0.6 * 10 + 0.5 * 10.2 + 0.8 * 10.4) / 1.9, atol=1e-5)
    np.testing.assert_allclose(wbf.weights[0], [1.1 / 1.9, 0.8 / 1.9, 0.0], atol=1e-6)


def test_expected_fov_sets_n_expected():
    dets = {"camera": obs([[30, 20, 0]], [0.7], [CAR]), "lidar": empty(), "radar": empty()}
    # without FOV knowledge the absent LiDAR and radar each count against the box
    assert weighted_box_fusion(dets, T).scores[0] == pytest.approx(0.7 / 3, abs=1e-6)
    calls = []

    def lidar_fov(xy):
        calls.append(xy.shape)
        return xy[:, 0] < 20.0

    def radar_fov(xy):
        return np.abs(xy[:, 1]) < 10.0

    out = weighted_box_fusion(dets, T, expected={"lidar": lidar_fov, "radar": radar_fov})
    assert out.scores[0] == pytest.approx(0.7, abs=1e-6)  # camera-only region: not penalised
    assert calls == [(1, 2)]
    # a LiDAR that could have seen it (and did not) halves the score; radar has no function -> sees everywhere
    out = weighted_box_fusion(dets, T, expected={"lidar": lambda xy: np.ones(len(xy), bool)})
    assert out.scores[0] == pytest.approx(0.7 / 3, abs=1e-6)
    out = weighted_box_fusion(dets, T, expected={"lidar": lambda xy: np.ones(len(xy), bool), "radar": radar_fov})
    assert out.scores[0] == pytest.approx(0.35, abs=1e-6)


def test_n_expected_is_at_least_n_contributing():
    # a FOV function wrongly saying "not visible" cannot push the score above the mean
    dets = {"camera": obs([[5, 0, 0]], [0.6], [CAR]), "lidar": obs([[5, 0.2, 0]], [0.8], [CAR])}
    never = {"camera": lambda xy: np.zeros(len(xy), bool), "lidar": lambda xy: np.zeros(len(xy), bool)}
    out = weighted_box_fusion(dets, T, expected=never)
    assert out.scores[0] == pytest.approx(0.7, abs=1e-6)


def test_yaw_average_across_pi_wrap():
    dets = {"camera": obs([[5, 5, 0, 4, 2, 1.5, 3.1]], [0.7], [CAR]),
            "lidar": obs([[5, 5, 0, 4, 2, 1.5, -3.1]], [0.7], [CAR])}
    for align in (True, False):
        out = weighted_box_fusion(dets, T, WbfConfig(align_flipped_yaw=align))
        assert abs(abs(float(out.boxes[0, 6])) - math.pi) < 1e-5


def test_flipped_heading_is_aligned_to_best_member():
    dets = {"camera": obs([[5, 5, 0, 4, 2, 1.5, 2.0]], [0.4], [CAR]),
            "lidar": obs([[5, 5, 0, 4, 2, 1.5, 0.0]], [0.6], [CAR])}
    aligned = weighted_box_fusion(dets, T)
    raw = weighted_box_fusion(dets, T, WbfConfig(align_flipped_yaw=False))
    w = np.array([0.4, 0.6])
    flipped = 2.0 - math.pi
    assert aligned.boxes[0, 6] == pytest.approx(
        math.atan2(w[0] * math.sin(flipped), w[0] * math.cos(flipped) + w[1]), abs=1e-6)
    assert raw.boxes[0, 6] == pytest.approx(math.atan2(w[0] * math.sin(2.0), w[0] * math.cos(2.0) + w[1]), abs=1e-6)
    assert aligned.boxes[0, 6] < 0 < raw.boxes[0, 6]


def test_greedy_joins_first_cluster_by_current_centre():
    # 0.9 founds a cluster at x=0; 0.8 at x=1.9 joins (within 2 m) and moves the centre to ~0.894;
    # 0.7 at x=2.8 is 2.8 m from the founder but within 2 m of the current centre, so it joins too.
    dets = {"camera": obs([[0, 0, 0], [2.8, 0, 0]], [0.9, 0.7], [CAR, CAR]), "lidar": obs([[1.9, 0, 0]], [0.8], [CAR])}
    out = weighted_box_fusion(dets, T)
    assert len(out) == 1
    assert out.boxes[0, 0] == pytest.approx((0.8 * 1.9 + 0.7 * 2.8) / 2.4, abs=1e-5)


def test_min_score_and_calibration():
    dets = {"camera": obs([[5, 0, 0], [30, 0, 0]], [0.5, 0.1], [CAR, CAR])}
    out = weighted_box_fusion(dets, T, WbfConfig(min_score=0.2))
    np.testing.assert_allclose(out.scores, [0.5], atol=1e-6)
    cal = {"camera": ScoreCalibration(a=1.0, b=1.0)}
    out = weighted_box_fusion(dets, T, calibration=cal)
    expect = [1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(-(math.log(0.1 / 0.9) + 1.0)))]
    np.testing.assert_allclose(out.scores, expect, atol=1e-6)


def test_empty_inputs_give_empty_output():
    for dets in ({}, {"camera": empty(frame="odom")}, {"camera": empty(), "lidar": empty()}):
        out = weighted_box_fusion(dets, T)
        assert len(out) == 0 and out.stamp_ns == T
        assert out.boxes.shape == (0, 9) and out.weights.shape == (0, 3)
    assert weighted_box_fusion({"camera": empty(frame="odom")}, T).frame_id == "odom"


def _random_dets(rng, n_per=25):
    dets = {}
    for m in ("camera", "lidar", "radar"):
        n = n_per
        boxes = np.zeros((n, 9), np.float32)
        boxes[:, 0:2] = rng.uniform(-15, 15, (n, 2))
        boxes[:, 2] = rng.uniform(-1, 1, n)
        boxes[:, 3:6] = rng.uniform(0.5, 5, (n, 3))
        boxes[:, 6] = rng.uniform(-math.pi, math.pi, n)
        boxes[:, 7:9] = rng.normal(0, 3, (n, 2))
        scores = rng.choice([0.3, 0.5, 0.7, 0.9], n).astype(np.float32)  # many ties on purpose
        labels = rng.integers(0, len(DEFAULT_CLASSES), n).astype(np.int32)
        dets[m] = Obstacles(T, "base_link", boxes, scores, labels, np.zeros((n, 3), np.float32))
    return dets


def _shuffled(rng, dets):
    out = {}
    for m in rng.permutation(list(dets)):
        o = dets[m]
        p = rng.permutation(len(o))
        out[str(m)] = Obstacles(o.stamp_ns, o.frame_id, o.boxes[p], o.scores[p], o.labels[p], o.weights[p])
    return out


@pytest.mark.parametrize("mode", ["wbf", "noisy_or"])
def test_deterministic_under_shuffled_input(mode):
    rng = np.random.default_rng(7)
    dets = _random_dets(rng)
    cfg = WbfConfig(score_mode=mode)
    ref = weighted_box_fusion(dets, T, cfg)
    assert 0 < len(ref) < 75  # some clusters merged
    assert np.all(np.diff(ref.scores) <= 0)
    for _ in range(5):
        out = weighted_box_fusion(_shuffled(rng, dets), T, cfg)
        np.testing.assert_array_equal(out.boxes, ref.boxes)
        np.testing.assert_array_equal(out.scores, ref.scores)
        np.testing.assert_array_equal(out.labels, ref.labels)
        np.testing.assert_array_equal(out.weights, ref.weights)


def test_move_then_fuse_recovers_one_object():
    """End to end: camera saw the car 100 ms before T from a different ego pose; after move_to_time it fuses."""
    t_cam = T - 100_000_000
    # ego moved 2 m forward between t_cam and T: a point at x in the old frame is at x - 2 now
    pose = make_transform(t=[-2.0, 0.0, 0.0])
    car_now = [18.0, 3.0, 0.5, 4, 2, 1.5, 0.0, 10.0, 0.0]
    car_then = [19.0, 3.0, 0.5, 4, 2, 1.5, 0.0, 10.0, 0.0]  # 1 m behind, in a frame 2 m behind
    cam = move_to_time(obs([car_then], [0.8], [CAR], stamp=t_cam), pose, dt_seconds(t_cam, T), T)
    np.testing.assert_allclose(cam.boxes[0], car_now, atol=1e-5)
    out = weighted_box_fusion({"camera": cam, "lidar": obs([car_now], [0.8], [CAR])}, T)
    assert len(out) == 1
    np.testing.assert_allclose(out.boxes[0], car_now, atol=1e-5)


def test_wbf_rejects_bad_input():
    good = obs([[0, 0, 0]], [0.5], [CAR])
    with pytest.raises(ValueError, match="unknown source 'thermal'"):
        weighted_box_fusion({"thermal": good}, T)
    with pytest.raises(ValueError, match="unknown source 'sonar'"):
        weighted_box_fusion({"camera": good}, T, calibration={"sonar": ScoreCalibration()})
    with pytest.raises(ValueError, match="unknown source 'imu.geometric'"):
        weighted_box_fusion({"camera": good}, T, expected={"imu.geometric": lambda xy: np.ones(len(xy), bool)})
    with pytest.raises(ValueError, match="empty detector name"):
        weighted_box_fusion({"lidar.": good}, T)
    with pytest.raises(ValueError, match="frame_id"):
        weighted_box_fusion({"camera": good, "lidar": obs([[0, 0, 0]], [0.5], [CAR], frame="odom")}, T)
    with pytest.raises(ValueError, match="move_to_time"):
        weighted_box_fusion({"camera": obs([[0, 0, 0]], [0.5], [CAR], stamp=T - 1)}, T)
    bad = obs([[0, 0, 0]], [0.5], [CAR])
    bad.boxes = np.zeros((1, 7), np.float32)
    with pytest.raises(ValueError, match="boxes"):
        weighted_box_fusion({"camera": bad}, T)
    bad = obs([[0, 0, 0]], [0.5], [CAR])
    bad.weights = np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match="weights"):
        weighted_box_fusion({"camera": bad}, T)
    bad = obs([[0, 0, 0]], [0.5], [CAR])
    bad.labels = np.zeros(2, np.int32)
    with pytest.raises(ValueError, match="labels"):
        weighted_box_fusion({"camera": bad}, T)
    with pytest.raises(ValueError, match="out of range"):
        weighted_box_fusion({"camera": obs([[0, 0, 0]], [0.5], [len(DEFAULT_CLASSES)])}, T)
    with pytest.raises(ValueError, match="scores"):
        weighted_box_fusion({"camera": obs([[0, 0, 0]], [1.5], [CAR])}, T)
    bad = obs([[0, 0, 0]], [0.5], [CAR])
    bad.boxes[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        weighted_box_fusion({"camera": bad}, T)
    with pytest.raises(ValueError, match="expected"):
        weighted_box_fusion({"camera": good}, T, expected={"camera": lambda xy: np.ones(3, bool)})
    with pytest.raises(ValueError, match="expected"):
        weighted_box_fusion({"camera": good}, T, expected={"camera": lambda xy: np.full(len(xy), 0.5)})
    with pytest.raises(ValueError, match="Obstacles"):
        weighted_box_fusion({"camera": good.boxes}, T)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"score_mode": "max"}, "score_mode"),
        ({"min_score": float("nan")}, "min_score"),
        ({"min_score": 1.5}, "min_score"),
        ({"radius_m": -1.0}, "radius_m"),
        ({"radius_m": {"car": 2.0}}, "no radius"),
        ({"radius_m": {c: float("inf") for c in DEFAULT_CLASSES}}, "radius_m"),
        ({"classes": ()}, "classes"),
        ({"classes": ("car", "car")}, "duplicates"),
        ({"classes": ("vehicle",)}, "no radius"),
    ],
)
def test_wbf_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WbfConfig(**kwargs)


def test_wbf_config_custom_classes():
    cfg = WbfConfig(classes=("car", "pedestrian"))
    np.testing.assert_allclose(cfg.radii(), [2.0, 1.0])
    cfg = WbfConfig(classes=("vehicle",), radius_m={"vehicle": 3.0})
    out = weighted_box_fusion({"camera": obs([[0, 0, 0]], [0.5], [0]), "lidar": obs([[2.5, 0, 0]], [0.5], [0])}, T, cfg)
    assert len(out) == 1


# ============================================================================ Platt calibration


def test_fit_platt_recovers_known_parameters():
    rng = np.random.default_rng(3)
    a, b = 2.0, -0.5
    s = rng.uniform(0.02, 0.98, 40_000)
    p = 1 / (1 + np.exp(-(a * np.log(s / (1 - s)) + b)))
    y = rng.random(len(s)) < p
    cal = fit_platt(s, y)
    assert cal.a == pytest.approx(a, abs=0.1)
    assert cal.b == pytest.approx(b, abs=0.1)
    # the fitted calibration reproduces the generating probabilities
    np.testing.assert_allclose(cal(s.astype(np.float32)), p, atol=0.02)


def test_fit_platt_separable_data_stays_finite():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    cal = fit_platt(s, y)
    assert math.isfinite(cal.a) and math.isfinite(cal.b) and cal.a > 1.0
    assert np.all(np.diff(cal(s)) > 0)


def test_fit_platt_regularisation_pulls_towards_identity():
    s = np.array([0.2, 0.4, 0.6, 0.8])
    y = np.array([1, 1, 0, 0], bool)  # inverted ranking, four samples
    loose = fit_platt(s, y, l2=1e-3)
    tight = fit_platt(s, y, l2=1e6)
    assert loose.a < 0  # the data alone says "inverted"
    assert tight.a == pytest.approx(1.0, abs=1e-3) and tight.b == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="l2"):
        fit_platt(s, y, l2=0.0)


def test_identity_calibration_leaves_scores_unchanged():
    s = np.array([0.0, 1e-9, 0.3, 0.5, 0.999, 1.0], np.float32)
    out = ScoreCalibration()(s)
    np.testing.assert_array_equal(out, s)
    assert out.dtype == np.float32 and out is not s
    # a non-identity calibration keeps 0/1 inputs inside [0, 1] and is monotone
    out = ScoreCalibration(a=0.5, b=0.2)(s)
    assert np.all((out >= 0) & (out <= 1)) and np.all(np.diff(out) >= 0)


def test_calibration_dict_roundtrip_and_validation():
    cal = ScoreCalibration(a=1.7, b=-0.3)
    assert ScoreCalibration.from_dict(cal.to_dict()) == cal
    for bad, match in [
        ({"a": 1.0}, "missing"),
        ({"b": 0.0}, "missing"),
        ({"a": float("nan"), "b": 0.0}, "finite"),
        ({"a": 1.0, "b": float("inf")}, "finite"),
        ({"a": "1", "b": 0.0}, "real number"),
        ({"a": 1.0, "b": 0.0, "c": 2.0}, "unknown"),
    ]:
        with pytest.raises(ValueError, match=match):
            ScoreCalibration.from_dict(bad)
    with pytest.raises(ValueError, match="mapping"):
        ScoreCalibration.from_dict([1.0, 0.0])


def test_calibration_and_fit_reject_bad_scores():
    with pytest.raises(ValueError, match="scores"):
        ScoreCalibration(a=2.0)(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="scores"):
        ScoreCalibration()(np.array([1.2]))
    with pytest.raises(ValueError, match="is_tp"):
        fit_platt(np.array([0.5, 0.6]), np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="is_tp"):
        fit_platt(np.array([0.5, 0.6]), np.array([2, 0]))
    with pytest.raises(ValueError, match="at least one"):
        fit_platt(np.zeros(0), np.zeros(0, bool))


# ----------------------------------------------------------------------------------- sources


def test_two_detectors_of_one_modality_are_two_opinions_attributed_to_it():
    """The network's and the geometric detector's LiDAR boxes of one car: one fused box, two contributing
    sources (wbf score = their mean, not halved), all attribution on the LiDAR."""
    car = [12.0, 1.0, 0.8, 4.2, 1.8, 1.5, 0.1, 0.0, 0.0]
    out = weighted_box_fusion({"lidar": obs([car], [0.2], [CAR]), "lidar.geometric": obs([car], [0.8], [CAR])}, T)
    assert len(out) == 1
    assert out.scores[0] == pytest.approx(0.5)
    np.testing.assert_allclose(out.weights[0], [0.0, 1.0, 0.0])
    alone = weighted_box_fusion({"lidar": Obstacles.empty(T), "lidar.geometric": obs([car], [0.8], [CAR])}, T)
    assert alone.scores[0] == pytest.approx(0.4)  # one of two sources that could have seen it


def test_fused_source_keeps_its_gate_attribution():
    car = [12.0, 1.0, 0.8, 4.2, 1.8, 1.5, 0.1, 0.0, 0.0]
    fused = obs([car], [0.6], [CAR])
    fused.weights[:] = [[0.2, 0.6, 0.2]]
    out = weighted_box_fusion({"fused": fused, "lidar.geometric": obs([car], [0.6], [CAR])}, T)
    np.testing.assert_allclose(out.weights[0], [0.1, 0.8, 0.1], atol=1e-6)
    assert out.scores[0] == pytest.approx(0.6)


def test_source_order_is_canonical():
    assert source_order(["radar.geometric", "lidar.geometric", "camera", "fused", "lidar"]) == [
        "fused", "camera", "lidar", "lidar.geometric", "radar.geometric"]
    assert source_modality("radar.geometric") == "radar"
    assert source_modality("fused") is None
