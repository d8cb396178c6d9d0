"""PoseHistory: conventions, integration accuracy, bias, bounds and bad input (docs/DESIGN.md §6)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ego_motion_scenarios import TruePoses, feed, ns, planned_ego, rig
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_fusion.core.ego_motion import GRAVITY, EgoMotionConfig, OutOfHistory, PoseHistory
from ros_fusion.core.transforms import invert_transform, se2_transform, xyz_rpy_to_transform
from ros_fusion.core.types import ImuSample, Odometry
from ros_fusion.sim.inertial import ImuModel

S = 1_000_000_000
T0 = 1_700_000_000 * S


def imu(t: int, w=(0.0, 0.0, 0.0), f=(0.0, 0.0, GRAVITY), frame: str = "") -> ImuSample:
    return ImuSample(t, frame, np.asarray(w, float), np.asarray(f, float))


def odo(t: int, v: float, w: float = 0.0, child: str = "base_link") -> Odometry:
    return Odometry(t, "odom", child, np.zeros(3), np.array([0, 0, 0, 1.0]), np.array([v, 0, 0]),
                    np.array([0, 0, w]))


def circle_pose(t_s: float, v: float, w: float) -> np.ndarray:
    """base_link → world on a circle started at the origin heading +x (analytic truth)."""
    return se2_transform(v / w * np.sin(w * t_s), v / w * (1 - np.cos(w * t_s)), w * t_s)


def turning_history(v: float = 20.0, w: float = 0.5, seconds: float = 2.0, rate: int = 100,
                    odometry: bool = True, **cfg) -> PoseHistory:
    """Noise-free IMU (base_link = imu_link) and odometry on a circle."""
    h = PoseHistory(EgoMotionConfig(nominal_rate_hz=rate, **cfg))
    for k in range(int(seconds * rate) + 1):
        t = T0 + k * S // rate
        if odometry and k % 2 == 0:
            h.add_odometry(odo(t, v, w))
        h.add_imu(imu(t, (0, 0, w), (0, v * w, GRAVITY)))
    return h


# ------------------------------------------------------------------ conventions


def test_relative_pose_convention_matches_analytic_circle() -> None:
    h = turning_history()
    t_from, t_to = T0 + S // 2, T0 + 3 * S // 2
    got = h.relative_pose(t_from, t_to)
    want = invert_transform(circle_pose(1.5, 20, 0.5)) @ circle_pose(0.5, 20, 0.5)
    assert np.abs(got[:3, 3] - want[:3, 3]).max() < 1e-3
    assert np.abs(got[:3, :3] - want[:3, :3]).max() < 1e-6
    # base_link at t_from sits behind (negative x) the car at t_to and, on a left turn, to its left.
    assert got[0, 3] < -15 and got[1, 3] > 0
    # A point fixed in the world, seen 10 m ahead at t_from, is ~10 m closer at t_to.
    p_to = got @ np.array([30.0, 0, 0, 1])
    p_world = circle_pose(0.5, 20, 0.5) @ np.array([30.0, 0, 0, 1])
    assert np.allclose(p_to, invert_transform(circle_pose(1.5, 20, 0.5)) @ p_world, atol=1e-3)
    # Composition and inverse.
    mid = T0 + S
    assert np.allclose(h.relative_pose(mid, t_to) @ h.relative_pose(t_from, mid), got, atol=1e-9)
    assert np.allclose(h.relative_pose(t_to, t_from), invert_transform(got), atol=1e-9)
    assert np.allclose(h.relative_pose(mid, mid), np.eye(4), atol=1e-12)


def test_queries_between_samples_and_velocity() -> None:
    h = turning_history()
    t = T0 + S + 3_333_333  # between two IMU samples
    want = invert_transform(circle_pose(1.0, 20, 0.5)) @ circle_pose(t / S - T0 / S, 20, 0.5)
    assert np.abs(h.relative_pose(t, T0 + S)[:3, 3] - want[:3, 3]).max() < 1e-3
    v, w = h.velocity(t)
    assert np.allclose(v, [20, 0, 0], atol=1e-3) and np.allclose(w, [0, 0, 0.5], atol=1e-9)
    R, p = h.poses([T0, T0 + S])
    assert R.shape == (2, 3, 3) and p.shape == (2, 3)
    assert np.allclose(h.relative_poses([t, T0], T0 + S)[0], h.relative_pose(t, T0 + S))


def test_out_of_history_queries_raise_and_covers_says_so() -> None:
    h = PoseHistory()
    assert not h.covers(T0) and h.check(T0, T0) == "empty"
    with pytest.raises(OutOfHistory):
        h.relative_pose(T0, T0)
    h = turning_history(seconds=1.0)
    t0, t1 = h.span()
    assert h.covers(t0) and h.covers(t1 + S // 20) and not h.covers(t0 - 1) and not h.covers(t1 + S)
    assert h.check(t0 - 1, t1) == "before_history" and h.check(t0, t1 + S) == "after_history"
    with pytest.raises(OutOfHistory):
        h.relative_pose(t0 - S, t1)
    # Extrapolation past the newest sample holds the last rates.
    ext = h.relative_pose(t1, t1 + S // 20)
    want = invert_transform(circle_pose(1.05, 20, 0.5)) @ circle_pose(1.0, 20, 0.5)
    assert np.abs(ext[:3, 3] - want[:3, 3]).max() < 2e-3


def test_from_rig_takes_imu_extrinsic_frame_and_rate() -> None:
    r = rig()
    h = PoseHistory.from_rig(r)
    spec = r.of("imu")[0]
    assert np.allclose(h.config.imu_extrinsic, spec.extrinsic)
    assert h.config.imu_frame == spec.frame_id and h.config.nominal_rate_hz == spec.rate_hz
    assert not h.add_imu(imu(T0, frame="wrong_frame"))
    assert h.stats.imu_rejected == {"frame": 1}


# ---------------------------------------------------------- integration accuracy


def test_imu_only_from_standstill_constant_acceleration() -> None:
    h = PoseHistory()
    for k in range(301):  # 1 s still, then 2 s at 2 m/s² straight ahead
        t = T0 + k * S // 100
        h.add_imu(imu(t, f=(2.0 if k > 100 else 0.0, 0, GRAVITY)))
    rel = h.relative_pose(T0 + 3 * S, T0 + S)  # base at 3 s seen from base at 1 s
    assert abs(rel[0, 3] - 0.5 * 2.0 * 4.0) < 0.05
    v, _ = h.velocity(T0 + 3 * S)
    assert abs(v[0] - 4.0) < 0.03
    assert h.mode == "imu"


@pytest.mark.parametrize("odometry", [True, False])
def test_simulated_imu_with_lever_arm_and_rotated_mount(odometry: bool) -> None:
    """sim.inertial samples from an IMU mounted off-centre and rotated; motion recovered in base_link."""
    r = rig()
    spec = r.of("imu")[0]
    spec = dataclasses.replace(spec, extrinsic=xyz_rpy_to_transform([1.2, 0.5, 0.4], [0.0, 0.0, np.pi / 2]))
    r.sensors[spec.name] = spec

    def sp(t):
        return np.clip((t + 3.0) * 4.0, 0.0, 20.0)  # still until -3 s, then 4 m/s² to 20 m/s at +2 s

    ego = planned_ego(-5.5, 3.5, sp, lambda t: sp(t) * 0.5 / 20.0, (0.0, 0.0, 0.0), 0.0)
    h = PoseHistory.from_rig(r)
    feed(h, r, ego, -5.0, 3.0, seed=4, odometry=odometry)
    truth = TruePoses(ego)
    for a, b, tol in ((2.5, 2.6, 0.03), (2.0, 3.0, 0.25)):  # wheel-speed scale error: ~1 %
        est = h.relative_pose(ns(a), ns(b))
        ref = truth.relative_pose(ns(a), ns(b))
        assert np.linalg.norm(est[:3, 3] - ref[:3, 3]) < tol, (a, b, est[:3, 3], ref[:3, 3])
        assert np.abs(est[:3, :3] - ref[:3, :3]).max() < 2e-3
    v, w = h.velocity(ns(2.5))
    assert abs(v[0] - 20.0) < (0.4 if odometry else 0.5) and abs(w[2] - 0.5) < 0.01


def test_odometry_only_drives_the_history() -> None:
    h = PoseHistory()
    for k in range(101):
        assert h.add_odometry(odo(T0 + k * S // 50, 20.0, 0.5))
    assert h.mode == "odometry"
    got = h.relative_pose(T0, T0 + 2 * S)
    want = invert_transform(circle_pose(2.0, 20, 0.5)) @ circle_pose(0.0, 20, 0.5)
    assert np.abs(got[:3, 3] - want[:3, 3]).max() < 0.01


# ---------------------------------------------------------------------- bias


def test_gyro_bias_and_accel_bias_along_gravity_estimated_while_stationary() -> None:
    r = rig()
    spec = r.of("imu")[0]
    model = ImuModel(spec, np.random.default_rng([9, 1]))
    model.gyro_bias = np.array([0.004, -0.003, 0.006])
    model.accel_bias = np.array([0.0, 0.0, 0.05])
    ego = planned_ego(-1.0, 4.0, lambda t: np.zeros_like(t), lambda t: np.zeros_like(t), (0, 0, 0), 0.0)
    h = PoseHistory.from_rig(r)
    for k in range(300):
        h.add_imu(model.sample(ego, k / 100, stamp_ns=ns(k / 100)))
    assert h.stationary and h.stats.bias_updates > 0
    assert np.abs(h.gyro_bias - model.gyro_bias).max() < 5e-4
    assert abs(h.accel_bias[2] - 0.05) < 0.01
    v, w = h.velocity(ns(2.9))
    assert np.linalg.norm(v) < 1e-9 and np.linalg.norm(w) < 1e-9  # zero-velocity and zero-rate updates
    # 3 s standing still with a 0.006 rad/s yaw bias would drift 0.018 rad; the estimate removes it.
    rel = h.relative_pose(ns(1.0), ns(2.9))
    assert abs(np.arctan2(rel[1, 0], rel[0, 0])) < 2e-3 and np.linalg.norm(rel[:3, 3]) < 0.02


def test_cruising_with_odometry_is_not_mistaken_for_standstill() -> None:
    """A quiet IMU at constant speed on a straight road looks still; odometry says otherwise."""
    h = turning_history(v=20.0, w=1e-9, seconds=2.0)
    assert not h.stationary and h.stats.stationary_samples == 0
    assert abs(h.velocity(T0 + 2 * S)[0][0] - 20.0) < 1e-6


# ---------------------------------------------------------------- bad input


def test_nan_out_of_range_shape_and_bad_stamps_are_rejected_and_counted() -> None:
    h = turning_history(seconds=0.5)
    t = h.span()[1]
    before = h.relative_pose(T0, t)
    bad = [
        imu(t + 10 * S // 1000, (np.nan, 0, 0.5)),
        imu(t + 10 * S // 1000, (0, 0, 0.5), (0, np.inf, GRAVITY)),
        imu(t + 10 * S // 1000, (0, 0, 100.0)),
        imu(t + 10 * S // 1000, (0, 0, 0.5), (0, 0, 1000.0)),
        ImuSample(t + 10 * S // 1000, "", np.zeros(2), np.zeros(3)),
        imu(0), imu(-5), ImuSample(1.5e18, "", np.zeros(3), np.zeros(3)),  # type: ignore[arg-type]
        ImuSample(True, "", np.zeros(3), np.zeros(3)),  # type: ignore[arg-type]
    ]
    for s in bad:
        assert h.add_imu(s) is False
    assert h.stats.imu_rejected == {"nonfinite": 2, "out_of_range": 2, "shape": 1, "bad_stamp": 4}
    assert np.allclose(h.relative_pose(T0, t), before)
    assert h.stats.imu_received == h.stats.imu_accepted + sum(h.stats.imu_rejected.values())


def test_duplicates_and_out_of_order_are_dropped() -> None:
    h = turning_history(seconds=0.5)
    t = h.span()[1]
    assert not h.add_imu(imu(t, (0, 0, 0.5), (0, 10, GRAVITY)))
    assert not h.add_imu(imu(t - 5 * S // 1000, (0, 0, 0.5), (0, 10, GRAVITY)))
    assert not h.add_odometry(odo(t, 20.0, 0.5))  # the history fed this stamp already
    assert not h.add_odometry(odo(t - 3 * S // 100, 20.0, 0.5))
    assert h.stats.imu_rejected == {"duplicate": 1, "out_of_order": 1}
    assert h.stats.odometry_rejected == {"duplicate": 1, "out_of_order": 1}
    assert h.span()[1] == t


def test_spikes_are_rejected_and_do_not_disturb_the_pose() -> None:
    clean = turning_history(seconds=1.0)
    h = PoseHistory(EgoMotionConfig(nominal_rate_hz=100))
    for k in range(101):
        t = T0 + k * S // 100
        if k % 2 == 0:
            h.add_odometry(odo(t, 20, 0.5))
        if k in (30, 31, 60):  # single- and double-sample spikes within the sensor's range
            h.add_imu(imu(t, (0, 0, 20.0), (0, 10, GRAVITY)))
            h.add_imu(imu(t + 1, (0, 0, 0.5), (150.0, 10, GRAVITY)))
        h.add_imu(imu(t + 2, (0, 0, 0.5), (0, 10, GRAVITY)))
    assert h.stats.imu_rejected == {"spike": 6}
    d = h.relative_pose(T0 + 2, T0 + S) - clean.relative_pose(T0, T0 + S)
    assert np.abs(d[:3, 3]).max() < 2e-3 and np.abs(d[:3, :3]).max() < 1e-5


def test_a_lasting_step_is_accepted_after_spike_reseed() -> None:
    h = PoseHistory()
    for k in range(10):
        h.add_imu(imu(T0 + k * S // 100))
    for k in range(10, 20):  # the rate really jumps (e.g. a bump that lasts): not a spike forever
        h.add_imu(imu(T0 + k * S // 100, (0, 0, 3.0)))
    assert h.stats.imu_rejected == {"spike": 2} and h.stats.spikes_reseeded == 1
    assert h.velocity(h.span()[1])[1][2] == pytest.approx(3.0)


def test_gaps_short_bridged_long_flagged_huge_reset() -> None:
    clean = turning_history(seconds=2.0)
    h = PoseHistory(EgoMotionConfig(nominal_rate_hz=100, max_bridge_s=0.1, reset_gap_s=1.0))
    for k in range(201):
        t = T0 + k * S // 100
        if 50 < k < 55 or 100 < k < 130:  # 50 ms and 300 ms IMU gaps; odometry keeps going
            h.add_odometry(odo(t, 20, 0.5)) if k % 2 == 0 else None
            continue
        if k % 2 == 0:
            h.add_odometry(odo(t, 20, 0.5))
        h.add_imu(imu(t, (0, 0, 0.5), (0, 10, GRAVITY)))
    assert h.stats.short_gaps == 1 and h.stats.long_gaps == 1
    assert h.check(T0, T0 + S // 2 + S // 10) is None  # across the bridged 50 ms gap
    assert h.check(T0 + S // 2, T0 + 2 * S) == "long_gap"
    assert h.check(T0 + 3 * S // 2, T0 + 2 * S) is None
    # Holding/interpolating the rates across the gaps keeps the motion exact for steady motion.
    d = h.relative_pose(T0, T0 + 2 * S) - clean.relative_pose(T0, T0 + 2 * S)
    assert np.abs(d[:3, 3]).max() < 0.02  # chord vs arc over the 0.3 s bridge
    # A 2 s silence cannot be bridged: the history restarts.
    h.add_imu(imu(T0 + 4 * S, (0, 0, 0.5), (0, 10, GRAVITY)))
    assert h.stats.resets == 1 and h.span() == (T0 + 4 * S, T0 + 4 * S)


def test_stamps_jumping_back_restart_the_history() -> None:
    h = turning_history(seconds=3.0)
    h.add_imu(imu(T0 - 10 * S))  # bag loop: back to the start
    assert h.stats.resets == 1 and h.span()[0] == T0 - 10 * S
    assert h.add_imu(imu(T0 - 10 * S + S // 100))


def test_history_is_bounded_by_age_and_capacity() -> None:
    h = turning_history(seconds=5.0, max_age_s=1.0)
    t0, t1 = h.span()
    assert t1 - t0 <= S + S // 100 and h.stats.evicted > 350
    assert h.covers(t1 - S) and not h.covers(t1 - 2 * S)
    h = turning_history(seconds=2.0, max_knots=50)
    assert h._n == 50 and h.stats.evicted == 151
    t0, t1 = h.span()
    assert t1 - t0 == 49 * S // 100
    want = invert_transform(circle_pose((t1 - T0) / S, 20, 0.5)) @ circle_pose((t0 - T0) / S, 20, 0.5)
    assert np.abs(h.relative_pose(t0, t1)[:3, 3] - want[:3, 3]).max() < 1e-3


def test_odometry_bad_input_counted() -> None:
    h = PoseHistory()
    bad = [odo(T0, np.nan), odo(T0, 500.0), odo(T0, 1.0, child="other_frame"), odo(0, 1.0)]
    for m in bad:
        assert not h.add_odometry(m)
    assert h.stats.odometry_rejected == {"nonfinite": 1, "out_of_range": 1, "frame": 1, "bad_stamp": 1}
    assert h.stats.odometry_received == 4 and h.stats.odometry_accepted == 0


def test_config_misuse_raises() -> None:
    with pytest.raises(ValueError):
        EgoMotionConfig(imu_extrinsic=np.eye(3))
    with pytest.raises(ValueError):
        EgoMotionConfig(max_age_s=0)
    with pytest.raises(ValueError):
        EgoMotionConfig(imu_extrinsic=np.diag([2.0, 1, 1, 1]))


_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.just(0.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3 * S, 3 * S), st.lists(_value, min_size=6, max_size=6),
                          st.booleans()), max_size=60))
def test_random_garbage_never_raises_and_is_accounted(stream) -> None:
    h = PoseHistory()
    for dt, vals, is_odo in stream:
        t = T0 + dt
        if is_odo:
            h.add_odometry(odo(t, vals[0], vals[1]))
        else:
            h.add_imu(imu(t, vals[:3], vals[3:]))
    s = h.stats
    assert s.imu_received == s.imu_accepted + sum(s.imu_rejected.values())
    assert s.odometry_received == s.odometry_accepted + sum(s.odometry_rejected.values())
    if not h.empty:
        t0, t1 = h.span()
        T = h.relative_pose(t0, t1)
        assert np.all(np.isfinite(T))
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)


def test_odometry_at_the_stamp_of_the_kept_sample_stays_finite() -> None:
    """Found by hypothesis in CI: after a restart the same odometry stamp came twice; acceleration divided by 0."""
    h = PoseHistory()
    h.add_imu(imu(T0 - 1_000_000_001, [0.0] * 3, [0.0] * 3))
    h.add_odometry(odo(T0, 0.0, 0.0))
    h.add_odometry(odo(T0, 0.0, 0.0))
    h.add_imu(imu(T0 + 1, [0.0] * 3, [0.0] * 3))
    if not h.empty:
        t0, t1 = h.span()
        assert np.all(np.isfinite(h.relative_pose(t0, t1)))
