"""View-of-Delft → bag + rig: radar placement and fields, odometry from poses, estimated base_link, bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ros_fusion.bag.convert_vod import convert_vod
from ros_fusion.core.transforms import quat_to_matrix, transform_points, wrap_angle
from tests.dataset_fixtures import inside, write_vod


def by_topic(drive) -> dict[str, list]:
    out: dict[str, list] = {}
    for ev in drive.events():
        out.setdefault(ev.topic, []).append(ev)
    return out


def test_vod_round_trip_radar_odometry_and_estimated_height(tmp_path: Path) -> None:
    written = write_vod(tmp_path / "vod", frames=3, lidar_height=1.6)
    drive = convert_vod(tmp_path / "vod")[0]
    assert drive.report.skipped == []
    assert float(drive.metadata["lidar_height_m"]) == pytest.approx(1.6, abs=1e-3)  # fitted to the road
    assert drive.metadata["lidar_height_source"].startswith("ground fit: 1.600 m (median of 3/3 sweeps")
    rig = drive.rig_object()
    assert set(rig.sensors) == {"lidar_top", "camera_front", "radar_front", "odometry"}
    assert rig.sensors["lidar_top"].intensity_max == 255.0  # View-of-Delft LiDAR intensity is 8-bit
    np.testing.assert_allclose(rig.sensors["radar_front"].extrinsic, written["base_from_radar"], atol=1e-9)
    topics = by_topic(drive)
    # boxes
    worst = 0.0
    for ev in topics["/ground_truth/obstacles"]:
        for b, t in zip(ev.payload.boxes.astype(np.float64), written["truth"], strict=True):
            worst = max(worst, float(np.abs(b[:6] - t.box[:6]).max()))
            assert abs(wrap_angle(b[6] - t.box[6])) <= 1e-4
    print(f"VoD box round trip: max error {worst * 1000:.4f} mm")
    assert worst <= 1e-3
    # radar: fields renamed from x y z rcs v_r v_r_comp time, points land inside their boxes
    radar_ev = topics["/sensors/radar_front/points"]
    assert len(radar_ev) == 3
    cloud = radar_ev[0].payload
    assert cloud.field_names == ("x", "y", "z", "v_r", "rcs", "v_r_comp", "scan")
    raw = written["radar_points"]["00000"]
    np.testing.assert_array_equal(cloud.field("v_r"), raw[:, 4].astype(np.float32))
    np.testing.assert_array_equal(cloud.field("rcs"), raw[:, 3].astype(np.float32))
    base_pts = transform_points(rig.sensors["radar_front"].extrinsic, cloud.xyz())
    boxes = topics["/ground_truth/obstacles"][0].payload.boxes
    for k in range(len(boxes)):
        assert inside(boxes[k], base_pts[5 * k:5 * k + 5], tol=1e-4).all()
    # odometry: 10 m/s forward, 0.2 rad/s yaw, poses relative to the first
    odo = [ev.payload for ev in topics["/vehicle/odometry"]]
    assert len(odo) == 3 and odo[0].child_frame_id == "base_link"
    np.testing.assert_allclose(odo[0].position, 0.0, atol=1e-9)
    rel = np.linalg.inv(written["poses"]["00000"]) @ written["poses"]["00002"]
    np.testing.assert_allclose(odo[2].position, rel[:3, 3], atol=1e-6)
    np.testing.assert_allclose(quat_to_matrix(odo[2].orientation), rel[:3, :3], atol=1e-9)
    v = odo[1].linear_velocity  # central difference over a chord of the arc: 10 m/s * sinc(0.02) in body x
    assert v[0] == pytest.approx(10.0 * math.sin(0.02) / 0.02, rel=1e-6) and abs(v[1]) < 1e-6
    assert odo[1].angular_velocity[2] == pytest.approx(0.2, rel=1e-6)


def test_vod_projection_matches_dataset_calibration(tmp_path: Path) -> None:
    written = write_vod(tmp_path / "vod", frames=1, lidar_height=1.6)
    rig = convert_vod(tmp_path / "vod", lidar_height=1.6)[0].rig_object()
    cam, lidar = rig.sensors["camera_front"], rig.sensors["lidar_top"]
    velo = written["points"]["000000"]
    velo = velo[velo[:, 0] > 2.0]
    pc = transform_points(np.linalg.inv(cam.extrinsic) @ lidar.extrinsic, velo)
    uv = pc @ cam.intrinsics.K.T
    err = float(np.abs(uv[:, :2] / uv[:, 2:] - written["calib"].project(velo)).max())
    print(f"VoD projection error {err:.2e} px")
    assert err <= 0.5


def test_vod_bad_radar_and_pose_files_are_named(tmp_path: Path) -> None:
    root = tmp_path / "vod"
    write_vod(root, frames=3)
    rb = root / "radar" / "training" / "velodyne" / "00001.bin"
    rb.write_bytes(rb.read_bytes()[:-3])
    (root / "radar" / "training" / "calib" / "00002.txt").unlink()
    (root / "lidar" / "training" / "pose" / "00000.json").write_text("{not json")
    drive = convert_vod(root, lidar_height=1.6)[0]
    topics = by_topic(drive)
    lines = drive.report.lines()
    assert any("00001.bin" in s and "truncated" in s for s in lines)
    assert any("radar/training/calib/00002.txt" in s and "missing" in s for s in lines)
    assert any("pose/00000.json" in s and "JSON" in s for s in lines)
    assert len(topics["/sensors/radar_front/points"]) == 1
    assert len(topics["/vehicle/odometry"]) == 2
    assert len(topics["/sensors/lidar_top/points"]) == 3


def test_vod_without_radar_reports_the_absent_sensor(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "vod"
    write_vod(root, frames=2)
    shutil.rmtree(root / "radar")
    drive = convert_vod(root, lidar_height=1.6)[0]
    assert "radar_front" in drive.absent_sensors
    assert "radar_front" in drive.bag_metadata()["absent_sensors"]
    assert any("radar" in s and "missing" in s for s in drive.report.lines())
    assert len(list(drive.events())) > 0
