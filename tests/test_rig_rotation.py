"""Yaw copies of a recording (eval/rig_rotation.py): a turned base_link is the same scene, turned exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ros_fusion.core.rig import load_rig, rig_from_dict
from ros_fusion.core.types import Obstacles
from ros_fusion.eval.bag_dataset import bag_frames
from ros_fusion.eval.bag_eval import GROUND_TRUTH_TOPIC
from ros_fusion.eval.rig_rotation import copy_angles, rotated_messages, rotated_obstacles, rotated_rig
from ros_fusion.paths import default_rig_path
from ros_fusion.sim.drive import simulate_drive


def _rig_without_odometry():
    rig = load_rig(default_rig_path())
    raw = copy.deepcopy(rig.raw)
    raw["sensors"] = {k: v for k, v in raw["sensors"].items() if v.get("modality") != "odometry"}
    return rig, rig_from_dict(raw, "test")


def test_a_quarter_turn_rotates_every_raster_and_target() -> None:
    """θ = 90°: the grid is square and symmetric, so each raster of the turned copy is np.rot90 of the original's
    (up to points within float rounding of a cell border)."""
    full, rig = _rig_without_odometry()
    odo = {s.topic for s in full.of("odometry")}
    events = [(e.topic, e.publish_ns, e.payload) for e in simulate_drive(full, "urban", 5, 1.2) if e.topic not in odo]
    theta = np.pi / 2
    a = list(bag_frames(iter(events), rig))
    b = list(bag_frames(rotated_messages(iter(events), GROUND_TRUTH_TOPIC, theta), rotated_rig(rig, theta)))
    assert len(a) == len(b) >= 5
    with_camera = 0
    for fa, fb in zip(a, b, strict=True):
        for key in ("lidar_bev", "radar_bev", "coverage"):
            want = np.rot90(fa.inputs.arrays[key], 1, axes=(-2, -1))
            got = fb.inputs.arrays[key]
            close = np.isclose(got, want, atol=1e-4).all(axis=0)
            assert close.mean() > 0.995, (key, close.mean())
        np.testing.assert_allclose(fb.targets.mask, np.rot90(fa.targets.mask), err_msg="centre mask")
        np.testing.assert_allclose(fb.targets.heatmap, np.rot90(fa.targets.heatmap, 1, axes=(-2, -1)), atol=1e-5)
        valid = fa.inputs.arrays["cam_valid"]
        np.testing.assert_array_equal(fb.inputs.arrays["cam_valid"], np.rot90(valid, 1, axes=(-2, -1)))
        if valid.any():  # each BEV cell samples the same pixel as the cell it came from
            with_camera += 1
            grid = np.rot90(fa.inputs.arrays["cam_grid"], 1, axes=(-3, -2))
            v = np.rot90(valid > 0, 1, axes=(-2, -1))
            np.testing.assert_allclose(fb.inputs.arrays["cam_grid"][v], grid[v], atol=1e-4)
    assert with_camera >= 3


def test_boxes_turn_with_the_frame_and_angles_are_reproducible() -> None:
    obs = Obstacles(1, "base_link", np.array([[10.0, 2.0, 0.8, 4.5, 1.9, 1.6, 3.0, 5.0, 1.0]], np.float32),
                    np.ones(1, np.float32), np.zeros(1, np.int32), np.zeros((1, 3), np.float32))
    t = rotated_obstacles(obs, np.pi / 2).boxes[0]
    np.testing.assert_allclose(t[[0, 1, 7, 8]], [-2.0, 10.0, -1.0, 5.0], atol=1e-5)
    assert t[6] == pytest.approx(3.0 + np.pi / 2 - 2 * np.pi, abs=1e-5)  # wrapped into (-π, π]
    np.testing.assert_array_equal(t[2:6], obs.boxes[0, 2:6])
    angles = copy_angles("abc", 4, 20.0)
    assert angles == copy_angles("abc", 4, 20.0) != copy_angles("abd", 4, 20.0)
    assert all(abs(a) <= np.deg2rad(20.0) for a in angles)
    with pytest.raises(ValueError, match="yaw copies"):
        copy_angles("abc", 2, 0.0)


def test_a_rig_with_odometry_is_refused() -> None:
    with pytest.raises(ValueError, match="odometry"):
        rotated_rig(load_rig(default_rig_path()), 0.1)
