"""The simulated Astyx rig: a 4D imaging radar and a VLP-16 against the world they were simulated from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ros_fusion.core.doppler_ego import fold
from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import DEFAULT_CLASSES
from ros_fusion.sim.drive import DriveSimulator
from ros_fusion.sim.imaging_radar import imaging_radar_scan, is_imaging_radar

RIG = Path(__file__).resolve().parent.parent / "config" / "rig_astyx_hires2019.yaml"


@pytest.fixture(scope="module")
def rig():
    return load_rig(RIG)


@pytest.fixture(scope="module")
def sim(rig):
    return DriveSimulator(rig, "urban", 11, 3.0)


def test_the_astyx_radar_is_simulated_as_an_imaging_radar(rig, sim) -> None:
    spec = rig.sensors["radar_front"]
    assert is_imaging_radar(spec)
    scan = sim.generate(spec, 1.0, 0)[0][1]
    assert scan.field_names == ("x", "y", "z", "v_r", "rcs")
    p = scan.xyz().astype(np.float64)
    r = np.linalg.norm(p, axis=1)
    az = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    el = np.degrees(np.arcsin(p[:, 2] / r))
    assert len(p) > 300  # hundreds per scan, not the few of a conventional radar
    assert np.all(np.abs(az) <= 61.5) and np.all(r <= 101.0) and np.all(np.abs(el) <= 15.5)
    assert np.std(p[:, 2]) > 0.3  # elevation is measured
    assert np.all(scan.field("rcs") == 0.0)  # report_rcs: false, as `convert astyx` writes it
    half = spec.velocity_interval_mps / 2
    assert np.all(np.abs(scan.field("v_r")) <= half + 1e-4)


def test_static_detections_carry_the_ego_doppler_folded(rig, sim) -> None:
    spec = rig.sensors["radar_front"]
    w = sim.world
    t = 1.5
    scan = imaging_radar_scan(w, spec, t, np.random.default_rng(3))
    p = scan.xyz().astype(np.float64)
    T = w.ego.world_from_sensor(t, spec.extrinsic)[0]
    v, _, _ = w.ego.kinematics(t)
    _, _, yaw = w.ego.pose(t)
    v_sensor = (np.array([np.cos(yaw), np.sin(yaw), 0.0]) * float(v)) @ T[:3, :3]  # radar frame
    expected = fold(-(p / np.linalg.norm(p, axis=1, keepdims=True)) @ v_sensor, spec.velocity_interval_mps)
    d = scan.field("v_r") - expected
    d = fold(d, spec.velocity_interval_mps)  # a difference across the fold is no difference
    assert float(v) > 3.0  # the ego moves, so the check means something
    assert np.median(np.abs(d)) < 0.3  # most detections are static structure


def test_detections_per_car_fall_with_range(rig, sim) -> None:
    spec = rig.sensors["radar_front"]
    w = sim.world
    near, far = [], []
    car = DEFAULT_CLASSES.index("car")
    for k in range(8):
        t = 0.2 + 0.35 * k
        counts = np.zeros(len(w.actors), np.int64)
        imaging_radar_scan(w, spec, t, np.random.default_rng(k), actor_returns=counts)
        T = w.ego.world_from_sensor(t, spec.extrinsic)[0]
        rel = (w.actor_state(t).centre - T[:3, 3]) @ T[:3, :3]
        rng_c = np.hypot(rel[:, 0], rel[:, 1])
        seen = (w.actors.cls == car) & (counts > 0)
        near += counts[seen & (rng_c < 25)].tolist()
        far += counts[seen & (rng_c > 35) & (rng_c < 80)].tolist()
    assert len(near) >= 3 and len(far) >= 2
    assert np.median(near) > 3 * np.median(far)


def test_vlp16_model_reports_reflectivity_on_its_own_scale(rig, sim) -> None:
    spec = rig.sensors["lidar_top"]
    cloud = sim.generate(spec, 1.0, 0)[0][1]
    ring = cloud.field("ring")
    assert set(np.unique(ring).tolist()) <= set(range(16)) and len(np.unique(ring)) >= 12
    inten = cloud.field("intensity")
    # Diffuse targets on the 0-100 % scale (materials reflect <= 70 %, plus 2 % noise), asphalt near 10.
    assert inten.max() <= 75.0 and 2.0 <= float(np.median(inten)) <= 30.0


def test_training_samples_on_a_rig_without_ego_motion_get_what_its_runtime_gets(rig) -> None:
    # Astyx rig: no IMU, no odometry, still frames. The runtime fuses each sweep alone and compensates
    # the radar's Doppler from the scan's own stationary detections; the sim's training samples must too.
    from ros_fusion.core import network_io as nio
    from ros_fusion.sim.dataset import DriveSamples

    samples = DriveSamples(rig, "urban", 11, 1.2)
    assert not samples.has_ego_motion
    frames = list(samples)
    assert len(frames) >= 8
    prev = [nio.LIDAR_CHANNELS.index(c) for c in nio.LIDAR_CHANNELS if c.startswith("prev_")]
    occ, v_abs = nio.RADAR_CHANNELS.index("occupancy"), nio.RADAR_CHANNELS.index("v_comp_absmax")
    moving_share = []
    for f in frames:
        lidar, radar = f.inputs.arrays["lidar_bev"], f.inputs.arrays["radar_bev"]
        assert not lidar[prev].any()  # no previous sweep: still frames
        cells = radar[occ] > 0
        moving_share.append(float(np.mean(radar[v_abs][cells] * 30.0 > 1.0)))
    # The ego drives at ~10 m/s, so uncompensated (or wrongly folded) static clutter would read ~|v| > 1 in
    # most cells; compensated, only the cells of moving actors do.
    assert float(np.median(moving_share)) < 0.2
