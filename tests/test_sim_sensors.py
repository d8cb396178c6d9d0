"""Sensor models against the world they were simulated from (no ROS)."""

from __future__ import annotations

import dataclasses

import numpy as np
import open3d as o3d
import pytest

from ros_fusion.core.rig import load_rig
from ros_fusion.core.transforms import invert_transform, transform_points
from ros_fusion.core.types import PointCloud
from ros_fusion.paths import default_rig_path
from ros_fusion.sim.camera import render_camera
from ros_fusion.sim.drive import DriveSimulator
from ros_fusion.sim.ego import EgoTrajectory
from ros_fusion.sim.ground_truth import ground_truth
from ros_fusion.sim.inertial import GRAVITY, ImuModel, WheelOdometry
from ros_fusion.sim.lidar import lidar_sweep
from ros_fusion.sim.radar import radar_scan


@pytest.fixture(scope="module")
def rig():
    return load_rig(default_rig_path())


@pytest.fixture(scope="module")
def sim(rig):
    return DriveSimulator(rig, "urban", 11, 3.0)


def points_in_box(p: np.ndarray, box: np.ndarray, margin: float = 0.15) -> np.ndarray:
    c, s = np.cos(box[6]), np.sin(box[6])
    d = p - box[:3]
    lx = c * d[:, 0] + s * d[:, 1]
    ly = -s * d[:, 0] + c * d[:, 1]
    return (np.abs(lx) <= box[3] / 2 + margin) & (np.abs(ly) <= box[4] / 2 + margin) & (
        np.abs(d[:, 2]) <= box[5] / 2 + margin)


def deskew(sim: DriveSimulator, cloud: PointCloud, spec, t_end: float) -> np.ndarray:
    """Points in base_link at the sweep end, using each point's own time."""
    p = cloud.xyz().astype(np.float64)
    t = t_end + cloud.field("t").astype(np.float64)
    T = sim.world.ego.world_from_sensor(t, spec.extrinsic)  # (N,4,4)
    pw = np.einsum("nij,nj->ni", T[:, :3, :3], p) + T[:, :3, 3]
    Tb = invert_transform(sim.world.ego.world_from_base(t_end)[0])
    return transform_points(Tb, pw)


def test_lidar_times_fields_and_ranges(sim, rig):
    spec = rig.sensors["lidar_top"]
    cloud = lidar_sweep(sim.world, spec, 1.0, np.random.default_rng(0))
    assert cloud.field_names == ("x", "y", "z", "intensity", "t", "ring")
    t = cloud.field("t")
    assert t.min() >= -spec.period_s - 1e-6 and t.max() <= 0.0
    assert t.max() > -1e-3 and t.min() < -0.09  # spans the whole sweep
    r = np.linalg.norm(cloud.xyz(), axis=1)
    assert r.min() >= spec.model["min_range_m"] - 0.1 and r.max() <= spec.model["max_range_m"]
    assert set(np.unique(cloud.field("ring"))) <= set(range(32))
    assert len(cloud) > 0.6 * 32 * 900
    inten = cloud.field("intensity")
    assert np.all((inten >= 0) & (inten <= 255)) and inten.std() > 5


def test_ground_truth_boxes_contain_lidar_points(sim, rig):
    spec = rig.sensors["lidar_top"]
    n_checked = n_ok = 0
    inside_frac = []
    for t_end in (0.5, 1.5, 2.5):
        cloud = lidar_sweep(sim.world, spec, t_end, np.random.default_rng(1))
        gt = ground_truth(sim.world, t_end, 0)
        p = deskew(sim, cloud, spec, t_end)
        non_ground = p[p[:, 2] > 0.3]
        inside_any = np.zeros(len(non_ground), bool)
        for box in gt.boxes:
            inside_any |= points_in_box(non_ground, box)
        inside_frac.append(inside_any.mean())
        # Visibility from an independent ray to the box centre through the world.
        origin = sim.world.ego.world_from_sensor(t_end, spec.extrinsic)[0][:3, 3]
        st = sim.world.actor_state(t_end)
        for box in gt.boxes:
            if np.hypot(box[0], box[1]) > 30:
                continue
            a = int(np.argmin(np.linalg.norm(st.centre[:, :2] - transform_points(
                sim.world.ego.world_from_base(t_end)[0], box[None, :3])[0, :2], axis=1)))
            d = st.centre[a] - origin
            h = sim.world.cast(origin[None], (d / np.linalg.norm(d))[None], t_end)
            if not (h.dynamic[0] and h.obj[0] == a):
                continue  # centre occluded: skip
            n_checked += 1
            n_ok += int(points_in_box(p, box).sum() >= 5)
    assert n_checked >= 5
    assert n_ok / n_checked >= 0.8
    # Actors are a real part of the scene, but clutter (buildings, trees, poles) dominates.
    assert 0.02 < np.mean(inside_frac) < 0.8


def test_motion_distortion_present_and_removed_by_deskew(sim, rig):
    spec = rig.sensors["lidar_top"]
    t_end = 1.2
    v, _, _ = sim.world.ego.kinematics(t_end)
    assert v > 3.0
    cloud = lidar_sweep(sim.world, spec, t_end, np.random.default_rng(2))
    p = cloud.xyz().astype(np.float64)
    tt = cloud.field("t").astype(np.float64)
    T_end = sim.world.ego.world_from_sensor(t_end, spec.extrinsic)[0]
    naive = transform_points(T_end, p)  # pretends every point was measured at the stamp
    T = sim.world.ego.world_from_sensor(t_end + tt, spec.extrinsic)
    proper = np.einsum("nij,nj->ni", T[:, :3, :3], p) + T[:, :3, 3]
    sel = (tt < -0.06) & (proper[:, 2] > 0.5)  # early, non-ground points
    assert sel.sum() > 200
    scene = sim.world.static_scene()
    d_proper = scene.compute_distance(o3d.core.Tensor(proper[sel].astype(np.float32))).numpy()
    d_naive = scene.compute_distance(o3d.core.Tensor(naive[sel].astype(np.float32))).numpy()
    shift = np.linalg.norm(naive - proper, axis=1)[sel]
    # The naive cloud is displaced by the ego motion during the sweep (≈ v·|t|) ...
    assert np.median(shift) > 0.7 * v * np.median(np.abs(tt[sel]))
    # ... and deskewed points sit on the static geometry (those that hit it), naive ones do not.
    static_hits = d_proper < 0.1
    assert static_hits.mean() > 0.5
    # Walls parallel to the road hide a shift along them; poles, trees, facades across do not.
    assert (d_naive[static_hits] > 0.15).mean() > 0.2, (d_naive[static_hits] > 0.15).mean()
    assert np.median(d_proper[static_hits]) < 0.05


def test_camera_shows_objects_where_ground_truth_projects(sim, rig):
    spec = rig.sensors["camera_front"]
    t = 1.0
    img = render_camera(sim.world, spec, t, np.random.default_rng(5)).data.astype(np.float64)
    empty = DriveSimulator(rig, "urban", 11, 3.0)
    a = empty.world.actors
    empty.world.actors = dataclasses.replace(a, **{f.name: getattr(a, f.name)[:0] for f in dataclasses.fields(a)})
    bg = render_camera(empty.world, spec, t, np.random.default_rng(5)).data.astype(np.float64)
    assert img.shape == (480, 640, 3) and img.dtype == np.float64
    gt = ground_truth(sim.world, t, 0)
    T_cb = invert_transform(spec.extrinsic)
    K = spec.intrinsics.K
    checked = differs = 0
    for box in gt.boxes:
        pc = transform_points(T_cb, box[None, :3])[0]
        if pc[2] < 3 or pc[2] > 40:
            continue
        u, v = (K @ (pc / pc[2]))[:2]
        if not (5 <= u < 635 and 5 <= v < 475):
            continue
        ui, vi = int(u), int(v)
        checked += 1
        diff = np.abs(img[vi - 2: vi + 3, ui - 2: ui + 3] - bg[vi - 2: vi + 3, ui - 2: ui + 3]).mean()
        differs += int(diff > 10)
    assert checked >= 3
    assert differs / checked >= 0.7
    # Where no actor projects the two renders agree up to noise: the difference is the actors.
    assert np.median(np.abs(img - bg)) < 3


def test_night_rain_camera_darker_and_lidar_sparser(rig):
    day = DriveSimulator(rig, "urban", 4, 2.0)
    night = DriveSimulator(rig, "night_rain", 4, 2.0)
    cam, lid = rig.sensors["camera_front"], rig.sensors["lidar_top"]
    img_d = render_camera(day.world, cam, 1.0, np.random.default_rng(0)).data
    img_n = render_camera(night.world, cam, 1.0, np.random.default_rng(0)).data
    assert img_n.mean() < 0.6 * img_d.mean()
    lid_d = lidar_sweep(day.world, lid, 1.0, np.random.default_rng(0))
    lid_n = lidar_sweep(night.world, lid, 1.0, np.random.default_rng(0))
    assert len(lid_n) < 0.97 * len(lid_d)

    def near_air(c):  # returns within 4 m that are not ground (sensor 1.84 m up): raindrop backscatter
        p = c.xyz()
        weak = c.field("intensity") < 10.0
        return int(((np.linalg.norm(p, axis=1) < 4.0) & (p[:, 2] > -1.2) & weak).sum())

    assert near_air(lid_n) > near_air(lid_d) + 5


def test_radar_fov_and_static_doppler(sim, rig):
    spec = rig.sensors["radar_front"]
    w = sim.world
    half = np.deg2rad(spec.model["fov_deg"] / 2)
    matched = []
    n_pts = 0
    poles = np.flatnonzero(w.static.prism & (w.static.size[:, 2] > 5.0))
    for k in range(30):
        t = 0.1 + 0.09 * k
        scan = radar_scan(w, spec, t, np.random.default_rng(k))
        assert scan.field_names == ("x", "y", "z", "v_r", "rcs")
        p = scan.xyz()
        n_pts += len(p)
        r = np.hypot(p[:, 0], p[:, 1])
        az = np.arctan2(p[:, 1], p[:, 0])
        assert np.all(np.abs(az) <= half + 1e-6) and np.all(r <= spec.model["max_range_m"])
        T = w.ego.world_from_sensor(t, spec.extrinsic)[0]
        pw = transform_points(T, p.astype(np.float64))
        v, _, _ = w.ego.kinematics(t)
        for i in range(len(p)):
            dist = np.hypot(*(w.static.centre[poles, :2] - pw[i, :2]).T)
            if dist.min() < 0.6:
                matched.append((float(scan.field("v_r")[i]), -float(v) * np.cos(az[i])))
    assert n_pts > 100
    assert len(matched) >= 3
    got, want = np.array(matched).T
    assert np.median(np.abs(got - want)) < 0.4


def _stationary_ego(n: int = 2000) -> EgoTrajectory:
    t = np.arange(n) * 0.01 - 1.0
    z = np.zeros(n)
    return EgoTrajectory(t, z, z, z, z, z, z, z, -1.75)


def test_imu_stationary_reads_gravity_and_noise_matches_spec(rig):
    spec = rig.sensors["imu"]
    ego = _stationary_ego()
    imu = ImuModel(spec, np.random.default_rng(0))
    s = [imu.sample(ego, k * 0.01) for k in range(1000)]
    acc = np.array([x.linear_acceleration for x in s])
    gyr = np.array([x.angular_velocity for x in s])
    assert abs(acc[:, 2].mean() - GRAVITY) < 0.1
    assert np.all(np.abs(acc[:, :2].mean(0)) < 0.1)
    assert np.all(np.abs(gyr.mean(0)) < 0.005)
    want_sa = spec.model["accel_noise_density"] * np.sqrt(spec.rate_hz)
    assert np.allclose(acc.std(0), want_sa, rtol=0.15)


def test_imu_and_odometry_follow_the_drive(sim, rig):
    ego = sim.world.ego
    imu = ImuModel(rig.sensors["imu"], np.random.default_rng(0))
    odo = WheelOdometry(rig.sensors["odometry"], np.random.default_rng(0))
    ts = np.arange(0, 3.0, 0.02)
    yaw_rate = np.array([imu.sample(ego, t).angular_velocity[2] for t in ts])
    _, _, w = ego.kinematics(ts)
    assert np.corrcoef(yaw_rate, w)[0, 1] > 0.9 or np.ptp(w) < 0.02
    last = None
    for t in ts:
        last = odo.sample(ego, t)
    x0, y0, yaw0 = (float(a[0]) for a in ego.pose(np.array([0.0])))
    x1, y1, yaw1 = (float(a[0]) for a in ego.pose(np.array([ts[-1]])))
    c, s = np.cos(yaw0), np.sin(yaw0)
    true_rel = np.array([c * (x1 - x0) + s * (y1 - y0), -s * (x1 - x0) + c * (y1 - y0)])
    err = np.linalg.norm(last.position[:2] - true_rel)
    travelled = np.linalg.norm(true_rel)
    assert travelled > 10
    assert 0 < err < 0.05 * travelled  # drifts, but like wheel odometry does (a few %)
    assert last.frame_id == "odom" and last.child_frame_id == "base_link"


def test_ground_truth_num_points_counts_the_returns_on_each_object(sim, rig):
    """nuScenes' num_lidar_pts: the sweep's returns on the actor; 0 = nothing to detect (left out of eval)."""
    spec = rig.sensors["lidar_top"]
    hidden = seen = 0
    for t_end in (0.5, 1.5, 2.5):
        counts = np.zeros(len(sim.world.actors), np.int64)
        cloud = lidar_sweep(sim.world, spec, t_end, np.random.default_rng(2), actor_returns=counts)
        gt = ground_truth(sim.world, t_end, 0, actor_returns=counts)
        assert gt.num_points is not None and len(gt.num_points) == len(gt)
        assert counts.sum() <= len(cloud)
        p = deskew(sim, cloud, spec, t_end)
        for box, n in zip(gt.boxes, gt.num_points, strict=True):
            if n == 0:
                hidden += 1
                assert points_in_box(p, box, margin=0.6).sum() <= 3  # (a neighbour's points may touch the margin)
            elif n >= 20 and np.hypot(box[0], box[1]) < 40:
                seen += 1
                # a truck at 14 m/s is smeared ~1.4 m by the 0.1 s sweep: look 3 m around the box
                assert points_in_box(p, box, margin=3.0).sum() >= 0.5 * n
    assert hidden >= 1 and seen >= 3
    assert ground_truth(sim.world, 1.0, 0).num_points is None  # not counted: unknown, not zero


def test_simulated_ground_truth_carries_lidar_and_radar_returns(rig):
    sim = DriveSimulator(rig, "urban", 11, 1.5)
    gts = [e.payload for e in sim.events() if e.sensor == "ground_truth"]
    assert len(gts) >= 10
    n = np.concatenate([g.num_points for g in gts])
    assert (n > 0).mean() > 0.5 and (n == 0).any()
