"""Rig files are untrusted: every mistake names its key (docs/DESIGN.md §10)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ros_fusion.core.rig import ConfigError, load_rig, rig_from_dict, rig_from_yaml
from ros_fusion.core.transforms import (
    invert_transform,
    matrix_to_quat,
    matrix_to_rpy,
    quat_to_matrix,
    rpy_to_matrix,
    transform_points,
    xyz_rpy_to_transform,
)
from ros_fusion.core.types import Modality

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((ROOT / "config" / "rig_default.yaml").read_text())


def test_default_rig_loads_with_every_modality():
    rig = load_rig(ROOT / "config" / "rig_default.yaml")
    kinds = {s.modality for s in rig.sensors.values()}
    assert kinds == set(Modality)
    cam = rig.of("camera")[0]
    assert cam.intrinsics is not None and cam.intrinsics.width == 640
    # optical frame: camera z looks along base_link x, camera x along -y, camera y along -z
    R = cam.extrinsic[:3, :3]
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-6)
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-6)
    assert rig_from_yaml(rig.to_yaml()).sensors.keys() == rig.sensors.keys()


def _mutated(path: list, value, delete: bool = False) -> dict:
    d = copy.deepcopy(DEFAULT)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "delete", "key"),
    [
        (["sensors", "lidar_top", "modality"], "sonar", False, "sensors.lidar_top.modality"),
        (["sensors", "lidar_top", "extrinsics"], None, True, "sensors.lidar_top.extrinsics"),
        (["sensors", "radar_front", "rate_hz"], -13, False, "sensors.radar_front.rate_hz"),
        (["sensors", "radar_front", "rate_hz"], "fast", False, "sensors.radar_front.rate_hz"),
        (["sensors", "radar_front", "rate_hz"], float("nan"), False, "sensors.radar_front.rate_hz"),
        (["sensors", "imu", "topic"], "imu", False, "sensors.imu.topic"),
        (["sensors", "camera_front", "intrinsics", "fx"], 0, False, "sensors.camera_front.intrinsics.fx"),
        (["sensors", "camera_front", "intrinsics", "distortion_model"], "fisheye9", False,
         "sensors.camera_front.intrinsics.distortion_model"),
        (["sensors", "camera_front", "extrinsics", "xyz"], [1, 2], False, "sensors.camera_front.extrinsics.xyz"),
        (["sensors", "lidar_top", "extrinsics"], {"matrix": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
         False, "sensors.lidar_top.extrinsics.matrix"),
        (["sensors", "lidar_top", "rate"], 10, False, "sensors.lidar_top"),
        (["sensors", "lidar_top", "intensity_max"], 0, False, "sensors.lidar_top.intensity_max"),
        (["sensors", "lidar_top", "intensity_max"], "0-1", False, "sensors.lidar_top.intensity_max"),
        (["sensors", "lidar_top", "intensity_max"], 1e9, False, "sensors.lidar_top.intensity_max"),
        (["sensors", "radar_front", "intensity_max"], 1.0, False, "sensors.radar_front.intensity_max"),
        (["sensors", "lidar_top", "rcs_offset_db"], 0.0, False, "sensors.lidar_top.rcs_offset_db"),
        (["sensors", "radar_front", "rcs_offset_db"], "dB", False, "sensors.radar_front.rcs_offset_db"),
        (["sensors", "radar_front", "rcs_offset_db"], 500.0, False, "sensors.radar_front.rcs_offset_db"),
        (["sensors"], {}, False, "sensors"),
    ],
)
def test_bad_rig_names_the_key(path, value, delete, key):
    with pytest.raises(ConfigError) as e:
        rig_from_dict(_mutated(path, value, delete), "rig.yaml")
    assert e.value.key == key
    assert str(e.value).startswith("rig.yaml: " + key)


def test_duplicate_topic_and_missing_file(tmp_path):
    d = _mutated(["sensors", "radar_front", "topic"], DEFAULT["sensors"]["lidar_top"]["topic"])
    with pytest.raises(ConfigError, match="already used by lidar_top"):
        rig_from_dict(d)
    with pytest.raises(ConfigError, match="no such file"):
        load_rig(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sensors: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rig(bad)


def test_matrix_extrinsics_equal_xyz_rpy():
    T = xyz_rpy_to_transform([1, 2, 3], [0.1, -0.2, 0.3])
    d = _mutated(["sensors", "lidar_top", "extrinsics"], {"matrix": T.tolist()})
    np.testing.assert_allclose(rig_from_dict(d).sensors["lidar_top"].extrinsic, T)


angles = st.floats(-3.1, 3.1)


@given(angles, st.floats(-1.5, 1.5), angles)
def test_rpy_matrix_quaternion_round_trips(r, p, y):
    R = rpy_to_matrix(r, p, y)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rpy_to_matrix(*matrix_to_rpy(R)), R, atol=1e-9)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-9)


@given(st.lists(st.floats(-50, 50), min_size=3, max_size=3), angles)
def test_inverse_transform(t, yaw):
    T = xyz_rpy_to_transform(t, [0.0, 0.0, yaw])
    pts = np.array([[1.0, 2.0, 3.0], [-4.0, 0.5, 0.0]])
    np.testing.assert_allclose(transform_points(invert_transform(T), transform_points(T, pts)), pts, atol=1e-9)


def test_surround_rig_is_the_default_rig_plus_radars_that_see_all_around():
    """config/rig_surround.yaml: same LiDAR, camera, IMU and odometry, five radars covering 360°."""
    from ros_fusion.core.bev import BevGrid

    default = load_rig(ROOT / "config" / "rig_default.yaml")
    surround = load_rig(ROOT / "config" / "rig_surround.yaml")
    radars = surround.of(Modality.RADAR)
    assert len(radars) == 5 and len({r.topic for r in radars}) == 5 and len({r.frame_id for r in radars}) == 5
    for name, spec in default.sensors.items():  # nothing of the default rig changed
        other = surround.sensors[name]
        assert (other.modality, other.topic, other.frame_id) == (spec.modality, spec.topic, spec.frame_id)
        np.testing.assert_array_equal(other.extrinsic, spec.extrinsic)
    grid = BevGrid()
    x, y = grid.cell_centres(stride=2)  # coverage masks are at feature resolution
    near = (np.hypot(x, y) >= 6.0) & (np.hypot(x, y) <= 50.0)  # the scored range, the car's own blind ring out
    assert grid.modality_coverage(radars)[near].all()
    assert grid.modality_coverage(default.of(Modality.RADAR))[near].mean() < 0.4
    yaws = sorted(round(np.degrees(np.arctan2(r.extrinsic[1, 0], r.extrinsic[0, 0]))) for r in radars)
    assert yaws == [-160, -80, 0, 80, 160]


def test_rcs_offset_defaults_to_dbsm_and_is_read_per_radar():
    assert rig_from_dict(copy.deepcopy(DEFAULT)).sensors["radar_front"].rcs_offset_db == 0.0
    other = rig_from_dict(_mutated(["sensors", "radar_front", "rcs_offset_db"], -40))
    assert other.sensors["radar_front"].rcs_offset_db == -40.0
    assert rig_from_yaml(other.to_yaml()).sensors["radar_front"].rcs_offset_db == -40.0


def test_intensity_max_defaults_to_8_bit_and_is_read_per_lidar():
    assert rig_from_dict(copy.deepcopy(DEFAULT)).sensors["lidar_top"].intensity_max == 255.0
    kitti_like = rig_from_dict(_mutated(["sensors", "lidar_top", "intensity_max"], 1.0))
    assert kitti_like.sensors["lidar_top"].intensity_max == 1.0
    assert rig_from_yaml(kitti_like.to_yaml()).sensors["lidar_top"].intensity_max == 1.0  # survives the bag's /rig
