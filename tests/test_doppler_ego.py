"""Ego velocity from one radar scan's Doppler (core/doppler_ego.py), on synthetic scans with known motion."""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core.doppler_ego import compensate_with_doppler, estimate_sensor_velocity, fold
from ros_fusion.core.rig import ConfigError, rig_from_dict

W = 10.3936  # Astyx 6455 unambiguous interval


def _scan(v_ego: tuple[float, float], n_static: int = 400, movers: int = 60, seed: int = 0,
          interval: float | None = W) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radar-frame points (identity mount) ±50° ahead; static ones read −û·v_ego, movers something else."""
    rng = np.random.default_rng(seed)
    n = n_static + movers
    az = rng.uniform(-0.87, 0.87, n)
    r = rng.uniform(3.0, 80.0, n)
    pts = np.column_stack((r * np.cos(az), r * np.sin(az), rng.uniform(-1.0, 2.0, n)))
    u = pts / np.linalg.norm(pts, axis=1)[:, None]
    v = -(u[:, :2] @ np.asarray(v_ego)) + rng.normal(0.0, 0.05, n)
    moving = np.zeros(n, bool)
    moving[n_static:] = True
    v[moving] += rng.choice([-1.0, 1.0], movers) * rng.uniform(2.0, 4.0, movers)
    return pts, fold(v, interval), moving


@pytest.mark.parametrize("v_ego", [(0.0, 0.0), (8.0, 0.0), (19.5, -0.4), (31.0, 0.6)])
def test_fitted_velocity_makes_the_static_world_still_and_keeps_movers(v_ego):
    pts, v, moving = _scan(v_ego)
    comp, est = compensate_with_doppler(pts, v, np.eye(4), interval=W)
    assert est is not None and est.inliers >= 380
    assert np.abs(comp[~moving]).max() < 0.3
    assert np.mean(np.abs(comp[moving]) > 1.0) > 0.95
    if abs(v_ego[0]) < W / 2:  # no folding: the speed itself is recovered, not only modulo the interval
        np.testing.assert_allclose(est.velocity[:2], v_ego, atol=0.15)


def test_a_rotated_mount_reports_base_link_velocity():
    pts, v, _ = _scan((4.0, 0.0), interval=None)
    yaw = np.pi / 2  # radar looking left: its x is base_link y
    R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    E = np.eye(4)
    E[:3, :3] = R
    # the same scan seen by a radar mounted sideways while the car drives forward at 4 m/s
    u_base = (pts / np.linalg.norm(pts, axis=1)[:, None]) @ R.T
    v_side = -(u_base[:, :2] @ np.array([4.0, 0.0]))
    est = estimate_sensor_velocity(u_base, v_side)
    assert est is not None
    np.testing.assert_allclose(est.velocity[:2], [4.0, 0.0], atol=0.1)
    comp, est2 = compensate_with_doppler(pts, v_side, E)
    assert est2 is not None and np.abs(comp).max() < 0.1


def test_no_estimate_when_nothing_agrees():
    rng = np.random.default_rng(3)
    pts = rng.uniform(5, 50, (200, 3))
    v = rng.uniform(-5.0, 5.0, 200)
    comp, est = compensate_with_doppler(pts, v, np.eye(4), interval=W)
    assert est is None and np.array_equal(comp, v)  # raw v_r back, as without an ego-motion source
    assert estimate_sensor_velocity(np.zeros((3, 3)), np.zeros(3)) is None
    with pytest.raises(ValueError, match="radial velocities"):
        estimate_sensor_velocity(np.ones((4, 3)), np.zeros(3))


def test_non_finite_detections_are_ignored():
    pts, v, moving = _scan((12.0, 0.0))
    pts[:5] = np.nan
    v[5:10] = np.inf
    comp, est = compensate_with_doppler(pts, v, np.eye(4), interval=W)
    assert est is not None and np.abs(comp[10:][~moving[10:]]).max() < 0.3


def _rig(radar_extra: dict, lidar_extra: dict | None = None) -> dict:
    mount = {"xyz": [1, 0, 0.5], "rpy": [0, 0, 0]}
    return {"rig": {"name": "t"}, "sensors": {
        "lidar": {"modality": "lidar", "topic": "/l", "rate_hz": 10, "extrinsics": mount, **(lidar_extra or {})},
        "radar": {"modality": "radar", "topic": "/r", "rate_hz": 13, "extrinsics": mount, **radar_extra}}}


def test_rig_velocity_interval_is_radar_only_and_positive():
    assert rig_from_dict(_rig({"velocity_interval_mps": 10.39})).sensors["radar"].velocity_interval_mps == 10.39
    assert rig_from_dict(_rig({})).sensors["radar"].velocity_interval_mps is None
    with pytest.raises(ConfigError, match="velocity_interval_mps"):
        rig_from_dict(_rig({"velocity_interval_mps": -1}))
    with pytest.raises(ConfigError, match="only a radar"):
        rig_from_dict(_rig({}, {"velocity_interval_mps": 10.0}))
