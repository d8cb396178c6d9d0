"""Known-motion scenarios for the ego-motion / compensation acceptance numbers.

Used by tests/test_ego_motion.py and tests/test_compensation.py, and runnable
to print the acceptance table:

    AMENT_PREFIX_PATH=.venv .venv/bin/python tests/ego_motion_scenarios.py

Ground truth comes only from the simulator (`ros_fusion.sim`): the ego
trajectory table, the LiDAR model's per-point firing times and the radar
model's world. Nothing here calls the code under test to make a reference.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass

import numpy as np

from ros_fusion.core.ego_motion import PoseHistory
from ros_fusion.core.events import SIM_EPOCH_NS
from ros_fusion.core.rig import Rig, load_rig
from ros_fusion.core.transforms import invert_transform
from ros_fusion.core.types import NS_PER_S, Odometry
from ros_fusion.paths import default_rig_path
from ros_fusion.sim.drive import DriveSimulator
from ros_fusion.sim.ego import DT, EgoTrajectory, TrueMotion
from ros_fusion.sim.inertial import ImuModel, WheelOdometry


def ns(t_s: float) -> int:
    return SIM_EPOCH_NS + int(round(t_s * NS_PER_S))


def rig() -> Rig:
    return load_rig(default_rig_path())


def planned_ego(t0: float, t1: float, speed, yaw_rate, anchor: tuple[float, float, float], t_anchor: float
                ) -> EgoTrajectory:
    """Trajectory with speed(t), yaw_rate(t) (vectorised callables), placed so its pose at
    `t_anchor` is `anchor` (x, y, yaw). Integrated on the simulator's own DT grid."""
    t = np.arange(t0, t1 + DT / 2, DT)
    v = np.asarray(speed(t), dtype=np.float64) * np.ones_like(t)
    w = np.asarray(yaw_rate(t), dtype=np.float64) * np.ones_like(t)
    yaw = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * DT)])
    mid = 0.5 * (yaw[1:] + yaw[:-1])
    vm = 0.5 * (v[1:] + v[:-1])
    x = np.concatenate([[0.0], np.cumsum(vm * np.cos(mid) * DT)])
    y = np.concatenate([[0.0], np.cumsum(vm * np.sin(mid) * DT)])
    xa, ya, yawa = (np.interp(t_anchor, t, arr) for arr in (x, y, yaw))
    c, s = np.cos(anchor[2] - yawa), np.sin(anchor[2] - yawa)
    X = anchor[0] + c * (x - xa) - s * (y - ya)
    Y = anchor[1] + s * (x - xa) + c * (y - ya)
    a = np.gradient(v, DT)
    return EgoTrajectory(t, np.zeros_like(t), X, Y, yaw + anchor[2] - yawa, v, a, w, 0.0)


# The simulator's trajectory behind the PoseHistory query interface (the 'true poses' case).
TruePoses = TrueMotion


def feed(history: PoseHistory, r: Rig, ego: EgoTrajectory, t0: float, t1: float, seed: int,
         odometry: bool = True, odometry_until: float | None = None) -> None:
    """Feed simulated IMU (+ wheel odometry) samples of `ego` over [t0, t1] in stamp order."""
    imu_spec = r.of("imu")[0]
    odo_spec = r.of("odometry")[0]
    imu = ImuModel(imu_spec, np.random.default_rng([seed, 200]))
    odo = WheelOdometry(odo_spec, np.random.default_rng([seed, 300]))
    events: list[tuple[float, int, str]] = []
    for k in range(int(np.floor((t1 - t0) * imu_spec.rate_hz)) + 1):
        events.append((t0 + k / imu_spec.rate_hz, 0, "imu"))
    if odometry:
        end = t1 if odometry_until is None else min(t1, odometry_until)
        for k in range(int(np.floor((end - t0) * odo_spec.rate_hz)) + 1):
            events.append((t0 + k / odo_spec.rate_hz, 1, "odo"))
    for t, _, kind in sorted(events):
        if kind == "imu":
            history.add_imu(imu.sample(ego, t, stamp_ns=ns(t)))
        else:
            history.add_odometry(odo.sample(ego, t, stamp_ns=ns(t)))


# ------------------------------------------------------------------ deskew


@dataclass
class SweepCase:
    sim: DriveSimulator
    ego: EgoTrajectory
    t_end: float  # sweep end (header stamp), sim seconds
    xyz: np.ndarray  # (N, 3) float32, sensor frame at each firing time
    times_ns: np.ndarray  # (N,) int64 absolute
    truth: np.ndarray  # (N, 3) base_link at T = t_end
    rng_m: np.ndarray  # (N,) range of each point


def turning_sweep(seed: int = 3, speed: float = 20.0, yaw_rate: float = 0.5, lead_in_still_s: float = 0.0,
                  accel: float = 4.0) -> SweepCase:
    """One simulated LiDAR sweep (sim.lidar, urban street) with the ego at `speed` and `yaw_rate`.

    With `lead_in_still_s` > 0 the ego first stands still, then accelerates at
    `accel` on a circle of the same curvature until the sweep (for IMU-only
    integration, which needs a known initial velocity). Truth: each point back
    to the world with the true sensor pose at its firing time, then into
    base_link at the sweep end.
    """
    from ros_fusion.sim.lidar import lidar_sweep

    r = rig()
    sim = DriveSimulator(r, "urban", seed, 3.0)
    x0, y0, yaw0 = (float(v) for v in sim.world.ego.pose(0.0))
    t_end = 0.0
    if lead_in_still_s > 0:
        t_move = t_end - speed / accel
        t_start = t_move - lead_in_still_s

        def sp(t):
            return np.clip((t - t_move) * accel, 0.0, speed)
    else:
        t_start = -2.0

        def sp(t):
            return np.full_like(t, speed)

    ego = planned_ego(t_start - 0.5, 1.5, sp, lambda t: sp(t) * (yaw_rate / speed), (x0, y0, yaw0), 0.0)
    sim.world.ego = ego
    spec = r.of("lidar")[0]
    cloud = lidar_sweep(sim.world, spec, t_end, np.random.default_rng([seed, 9]), stamp_ns=ns(t_end))
    xyz = cloud.xyz()
    t_pt = t_end + cloud.points["t"].astype(np.float64)
    times = ns(t_end) + np.rint(cloud.points["t"].astype(np.float64) * NS_PER_S).astype(np.int64)
    W = ego.world_from_sensor(t_pt, spec.extrinsic)  # (N, 4, 4) true sensor pose per point
    pw = np.einsum("nij,nj->ni", W[:, :3, :3], xyz.astype(np.float64)) + W[:, :3, 3]
    Tb = invert_transform(ego.world_from_base(t_end)[0])
    truth = pw @ Tb[:3, :3].T + Tb[:3, 3]
    return SweepCase(sim, ego, t_end, xyz, times, truth, np.linalg.norm(xyz, axis=1))


def residuals(case: SweepCase, out: np.ndarray, band: tuple[float, float] = (25.0, 35.0)) -> dict[str, float]:
    err = np.linalg.norm(out - case.truth, axis=1)
    m = (case.rng_m >= band[0]) & (case.rng_m < band[1])
    return {"band_max": float(err[m].max()), "band_p95": float(np.percentile(err[m], 95)),
            "band_median": float(np.median(err[m])), "all_max": float(err.max()), "band_points": int(m.sum()),
            "points": len(err)}


def raw_in_base(case: SweepCase) -> np.ndarray:
    """'Before': the points as a driver publishes them, put in base_link with the extrinsic only."""
    E = rig().of("lidar")[0].extrinsic
    return case.xyz.astype(np.float64) @ E[:3, :3].T + E[:3, 3]


def integrated_history(case: SweepCase, odometry: bool, seed: int = 5) -> PoseHistory:
    t0 = float(case.ego.t[0]) + 0.01
    h = PoseHistory.from_rig(rig())
    feed(h, rig(), case.ego, t0, case.t_end + 0.02, seed, odometry=odometry)
    return h


# ------------------------------------------------------------------- radar


def radar_static_residuals(seed: int = 1, scenario: str = "urban", duration_s: float = 8.0,
                           true_poses: bool = False) -> dict[str, float]:
    """v_r_comp of static detections over a simulated drive (ghosts off, so every
    detection is either on an actor or on static structure; the world says which)."""
    from ros_fusion.core.compensation import compensate_radar
    from ros_fusion.sim.radar import radar_scan

    r = rig()
    sim = DriveSimulator(r, scenario, seed, duration_s)
    w = sim.world
    spec = copy.deepcopy(r.of("radar")[0])
    spec = dataclasses.replace(spec, model={**spec.model, "ghost_probability": 0.0})
    hist: object
    if true_poses:
        hist = TruePoses(w.ego)
    else:
        h = PoseHistory.from_rig(r)
        feed(h, r, w.ego, -0.9, duration_s, seed)
        hist = h
    rng = np.random.default_rng([seed, 77])
    static_v, moving_err = [], []
    sizes = w.actors.size
    for t in np.arange(0.5, duration_s - 0.2, 1.0 / spec.rate_hz):
        cloud = radar_scan(w, spec, float(t), rng, stamp_ns=ns(float(t)))
        if len(cloud) == 0:
            continue
        P = cloud.xyz().astype(np.float64)
        _, vc = compensate_radar(P, cloud.points["v_r"], ns(float(t)), ns(float(t)) + 20_000_000, hist,
                                 spec.extrinsic)
        W = w.ego.world_from_sensor(float(t), spec.extrinsic)[0]
        pw = P @ W[:3, :3].T + W[:3, 3]
        st = w.actor_state(float(t))
        # Which actor box (inflated 2.5 m: range/azimuth noise at long range) holds the detection, if any.
        d = pw[:, None, :2] - st.centre[None, :, :2]
        c, s = np.cos(st.yaw), np.sin(st.yaw)
        lx = np.abs(d[..., 0] * c + d[..., 1] * s) <= sizes[:, 0] / 2 + 2.5
        ly = np.abs(-d[..., 0] * s + d[..., 1] * c) <= sizes[:, 1] / 2 + 2.5
        inside = lx & ly
        dist = np.where(inside, np.hypot(d[..., 0], d[..., 1]), np.inf)
        a = np.argmin(dist, axis=1)  # the nearest actor whose (inflated) box holds the detection
        on_actor = np.isfinite(dist[np.arange(len(a)), a])
        speed = np.linalg.norm(st.vel, axis=1)[a]
        static = ~on_actor | (speed < 0.05)
        static_v.append(vc[static])
        mov = ~static
        if mov.any():
            u = P[mov] / np.linalg.norm(P[mov], axis=1, keepdims=True)
            v_world = np.c_[st.vel[a[mov]], np.zeros(int(mov.sum()))]
            v_true = np.einsum("ij,ij->i", v_world @ W[:3, :3], u)
            moving_err.append(vc[mov] - v_true)
    v = np.concatenate(static_v)
    me = np.concatenate(moving_err) if moving_err else np.zeros(0)
    return {"static_points": len(v), "static_rms": float(np.sqrt(np.mean(v**2))),
            "static_mean": float(np.mean(v)), "static_p99_abs": float(np.percentile(np.abs(v), 99)),
            "static_frac_within_0.3": float(np.mean(np.abs(v) <= 0.3)),
            "moving_points": len(me),
            "moving_median_abs_err": float(np.median(np.abs(me))) if len(me) else float("nan")}


# ------------------------------------------------------------------- drift


def imu_only_drift(seed: int = 1, scenario: str = "urban", duration_s: float = 16.0,
                   starts: tuple[float, ...] = (1.0, 4.0, 7.0, 10.0), horizons: tuple[float, ...] = (1.0, 5.0),
                   true_handover: bool = False) -> dict[float, list[float]]:
    """Position error of IMU-only integration `horizon` s after odometry stops at each start time.

    The history runs with IMU + odometry until `t0`, then IMU only. With
    `true_handover` the last odometry message carries the true speed (isolates the
    IMU's own drift from the wheel-speed scale error handed over).
    """
    r = rig()
    sim = DriveSimulator(r, scenario, seed, duration_s)
    ego = sim.world.ego
    out: dict[float, list[float]] = {hz: [] for hz in horizons}
    for t0 in starts:
        h = PoseHistory.from_rig(r, max_age_s=20.0)
        feed(h, r, ego, -0.9, t0 + max(horizons) + 0.01, seed, odometry=True, odometry_until=t0)
        if true_handover:
            h2 = PoseHistory.from_rig(r, max_age_s=20.0)
            feed(h2, r, ego, -0.9, t0, seed, odometry=True)
            v, _, w = ego.kinematics(t0)
            h2.add_odometry(Odometry(ns(t0) + 1, "odom", "base_link", np.zeros(3), np.array([0, 0, 0, 1.0]),
                                     np.array([float(v), 0, 0]), np.array([0, 0, float(w)])))
            feed_after(h2, r, ego, t0 + 0.0001, t0 + max(horizons) + 0.01, seed)
            h = h2
        truth = TruePoses(ego)
        for hz in horizons:
            est = h.relative_pose(ns(t0), ns(t0 + hz))
            ref = truth.relative_pose(ns(t0), ns(t0 + hz))
            out[hz].append(float(np.linalg.norm(est[:3, 3] - ref[:3, 3])))
    return out


def feed_after(history: PoseHistory, r: Rig, ego: EgoTrajectory, t0: float, t1: float, seed: int) -> None:
    imu = ImuModel(r.of("imu")[0], np.random.default_rng([seed, 200]))
    rate = r.of("imu")[0].rate_hz
    k0 = int(np.ceil(t0 * rate))
    for k in range(k0, int(np.floor(t1 * rate)) + 1):
        history.add_imu(imu.sample(ego, k / rate, stamp_ns=ns(k / rate)))


def main() -> int:
    from ros_fusion.core.compensation import deskew_lidar

    lidar = rig().of("lidar")[0]
    print("Deskew, ego 20 m/s, 0.5 rad/s, sim.lidar sweep (urban seed 3), error at 25-35 m [m]:")
    case = turning_sweep()
    print(f"  before (extrinsic only):  {residuals(case, raw_in_base(case))}")
    T = ns(case.t_end)
    for name, hist in (("true poses", TruePoses(case.ego)), ("IMU+odometry", integrated_history(case, True))):
        out = deskew_lidar(case.xyz, case.times_ns, T, hist, lidar.extrinsic)
        print(f"  after, {name:13s}: {residuals(case, out)}")
    still = turning_sweep(lead_in_still_s=2.0)
    h = integrated_history(still, odometry=False)
    out = deskew_lidar(still.xyz, still.times_ns, ns(still.t_end), h, lidar.extrinsic)
    print(f"  after, IMU only (2 s still, 5 s accelerating to 20 m/s): {residuals(still, out)}")
    print(f"     gyro bias est {h.gyro_bias}, stats {h.stats}")
    print("Radar static clutter v_r_comp [m/s] (urban seed 1, 8 s):")
    print(f"  true ego velocity:  {radar_static_residuals(true_poses=True)}")
    print(f"  IMU+odometry:       {radar_static_residuals()}")
    print("IMU-only drift after odometry stops (urban seed 1; starts 1,4,7,10 s) [m]:")
    for th in (False, True):
        d = imu_only_drift(true_handover=th)
        lab = "true speed handed over" if th else "odometry speed handed over"
        print(f"  {lab}: " + ", ".join(f"{k:.0f} s: median {np.median(v):.3f} max {np.max(v):.3f}"
                                          for k, v in d.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
