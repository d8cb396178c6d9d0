"""nuScenes (v1.0-mini-shaped fixture read by the real devkit) → bags + rig: GT, points, projection, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nuscenes.nuscenes", reason="nuscenes-devkit not installed")

from ros_fusion.bag.convert_common import ConversionError
from ros_fusion.bag.convert_nuscenes import convert_nuscenes
from ros_fusion.core.transforms import transform_points, wrap_angle
from tests.dataset_fixtures import NUSC_T0_US, NUSC_TRUTH, inside, write_nuscenes


@pytest.fixture(scope="module")
def nusc_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nusc") / "nuscenes"
    return root, write_nuscenes(root)


def by_topic(drive) -> dict[str, list]:
    out: dict[str, list] = {}
    for ev in drive.events():
        out.setdefault(ev.topic, []).append(ev)
    return out


def test_fixture_is_valid_for_the_devkit(nusc_root) -> None:
    from nuscenes.nuscenes import NuScenes

    root, _ = nusc_root
    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    assert [s["name"] for s in nusc.scene] == ["scene-0001"]
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    assert set(sample["data"]) == {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_LEFT", "RADAR_FRONT"}
    assert len(sample["anns"]) == 3


def test_ground_truth_round_trip_and_velocity(nusc_root) -> None:
    root, written = nusc_root
    drive = convert_nuscenes(root)[0]
    topics = by_topic(drive)
    gt = [ev.payload for ev in topics["/ground_truth/obstacles"]]
    assert [ev.stamp_ns for ev in topics["/ground_truth/obstacles"]] == [NUSC_T0_US * 1000,
                                                                        (NUSC_T0_US + 500_000) * 1000]
    first = gt[0]
    assert list(first.labels) == [0, 3]  # car, pedestrian; the traffic cone is not one of our classes
    assert first.num_points.tolist() == [11, 11]  # num_lidar_pts 10 + num_radar_pts 1, for filter_eval_boxes
    worst_pos = worst_yaw = 0.0
    for b, t in zip(first.boxes.astype(np.float64), NUSC_TRUTH[:2], strict=True):
        worst_pos = max(worst_pos, float(np.abs(b[:6] - t.box[:6]).max()))
        worst_yaw = max(worst_yaw, float(abs(wrap_angle(b[6] - t.box[6]))))
    print(f"nuScenes box round trip: max position/size error {worst_pos * 1000:.4f} mm, yaw {worst_yaw:.2e} rad")
    assert worst_pos <= 1e-3 and worst_yaw <= 1e-4
    # the car moved +1.5 m along global x in 0.5 s: 3 m/s over ground, expressed in base_link axes
    ego_R = written["ego"][0][:3, :3]
    np.testing.assert_allclose(first.boxes[0, 7:9], (ego_R.T @ [3.0, 0.0, 0.0])[:2], atol=1e-5)
    np.testing.assert_allclose(first.boxes[1, 7:9], 0.0)  # one annotation only: unknown -> 0, counted
    assert drive.metadata["gt_velocity_unknown"] == "1"
    # sample 1: the ego moved 2 m forward, the car 1.5 m along global x
    exp = np.linalg.inv(written["ego"][1]) @ np.append(written["ego"][0][:3, :3] @ NUSC_TRUTH[0].box[:3]
                                                       + written["ego"][0][:3, 3] + [1.5, 0, 0], 1.0)
    np.testing.assert_allclose(gt[1].boxes[0, :3], exp[:3], atol=1e-3)


def test_lidar_points_stay_in_box_and_timestamps_are_real(nusc_root) -> None:
    root, written = nusc_root
    drive = convert_nuscenes(root)[0]
    rig = drive.rig_object()
    assert set(rig.sensors) == {"lidar_top", "camera_front", "camera_front_left", "radar_front", "imu", "odometry"}
    topics = by_topic(drive)
    sweeps = topics["/sensors/lidar_top/points"]
    assert [ev.stamp_ns for ev in sweeps] == [NUSC_T0_US * 1000, (NUSC_T0_US + 250_000) * 1000,
                                              (NUSC_T0_US + 500_000) * 1000]
    cloud = sweeps[0].payload
    assert cloud.field_names == ("x", "y", "z", "intensity", "ring")
    assert rig.sensors["lidar_top"].intensity_max == 255.0  # nuScenes intensity is 8-bit
    base = transform_points(rig.sensors["lidar_top"].extrinsic, cloud.xyz())
    box = topics["/ground_truth/obstacles"][0].payload.boxes[0]
    assert inside(box, base[:200], tol=1e-4).all()
    clutter = base[200:]
    assert np.abs(clutter[inside(box, clutter)][:, 2]).max(initial=0.0) < 1e-4  # only ground under the box touches it
    pubs = [ev.publish_ns for ev in drive.events()]
    assert pubs == sorted(pubs)


def test_projection_matches_devkit(nusc_root) -> None:
    from nuscenes.nuscenes import NuScenes

    root, _ = nusc_root
    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    drive = convert_nuscenes(root)[0]
    rig = drive.rig_object()
    worst = 0.0
    for channel, name in (("CAM_FRONT", "camera_front"), ("CAM_FRONT_LEFT", "camera_front_left")):
        pts_dev, _, _ = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sample["data"][channel])
        cloud = next(ev.payload for ev in drive.events() if ev.topic == "/sensors/lidar_top/points")
        cam = rig.sensors[name]
        pc = transform_points(np.linalg.inv(cam.extrinsic) @ rig.sensors["lidar_top"].extrinsic, cloud.xyz())
        uvw = pc @ cam.intrinsics.K.T
        uv = uvw[:, :2] / uvw[:, 2:]
        keep = (pc[:, 2] > 1.0) & (uv[:, 0] > 1) & (uv[:, 0] < 1599) & (uv[:, 1] > 1) & (uv[:, 1] < 899)
        assert keep.sum() == pts_dev.shape[1] > 10
        worst = max(worst, float(np.abs(uv[keep] - pts_dev[:2].T).max()))
    print(f"nuScenes projection with converted rig vs devkit map_pointcloud_to_image: max {worst:.2e} px")
    assert worst <= 0.5


def test_radar_fields_camera_bytes_imu_and_odometry(nusc_root) -> None:
    root, written = nusc_root
    drive = convert_nuscenes(root)[0]
    topics = by_topic(drive)
    radar = topics["/sensors/radar_front/points"][0].payload
    pts, v = written["radar"][written["files"]["RADAR_FRONT"][0]]
    exp_vr = np.sum(pts[:, :2] * v, axis=1) / np.linalg.norm(pts[:, :2], axis=1)
    np.testing.assert_allclose(radar.field("v_r"), exp_vr, atol=1e-5)
    np.testing.assert_allclose(radar.field("v_r_comp"), exp_vr * 0.5, atol=1e-5)
    assert set(radar.field_names) >= {"x", "y", "z", "v_r", "rcs", "v_r_comp"}
    img = topics["/sensors/camera_front/image_raw/compressed"][0].payload
    assert img.data == (root / written["files"]["CAM_FRONT"][0]).read_bytes()  # JPEG bytes as they are
    info = topics["/sensors/camera_front/camera_info"][0].payload
    assert (info.intrinsics.width, info.intrinsics.height) == (1600, 900)
    imu = [ev.payload for ev in topics["/sensors/imu"]]
    assert len(imu) == 80 and imu[5].angular_velocity[2] == pytest.approx(0.05)
    odo = [ev.payload for ev in topics["/vehicle/odometry"]]
    assert odo[-1].position[0] == pytest.approx(2.0, abs=1e-9)  # 2 m forward in the scene's odom frame
    assert odo[1].linear_velocity[0] == pytest.approx(4.0, rel=1e-6)  # 2 m in 0.5 s


def test_malformed_files_unknown_category_and_absent_sensor(tmp_path: Path) -> None:
    root = tmp_path / "nuscenes"
    written = write_nuscenes(root, extra_category="vehicle.spaceship")
    (root / written["files"]["CAM_FRONT"][1]).unlink()  # a missing image
    lidar = root / written["files"]["LIDAR_TOP"][1]
    lidar.write_bytes(lidar.read_bytes()[:-7])  # a truncated sweep
    for rel in written["files"]["CAM_FRONT_LEFT"]:  # a whole camera absent from the recording
        (root / rel).unlink()
    drive = convert_nuscenes(root)[0]
    topics = by_topic(drive)
    lines = drive.report.lines()
    assert any(written["files"]["CAM_FRONT"][1] in s and "missing" in s for s in lines)
    assert any(lidar.name in s and "truncated" in s for s in lines)
    assert any("vehicle.spaceship" in s and "sample_annotation" in s for s in lines)
    assert drive.absent_sensors == ["camera_front_left"]
    assert "camera_front_left" in drive.rig_object().sensors  # still described by the rig
    assert len(topics["/sensors/lidar_top/points"]) == 2
    assert len(topics["/sensors/camera_front/image_raw/compressed"]) == 1
    assert "/sensors/camera_front_left/image_raw/compressed" not in topics
    assert len(topics["/ground_truth/obstacles"][0].payload) == 2  # the unknown box is dropped, the rest kept


def test_errors_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "nuscenes"
    write_nuscenes(root, can_bus=False)
    with pytest.raises(ConversionError, match="unknown scene"):
        convert_nuscenes(root, scenes=["scene-9999"])
    with pytest.raises(ConversionError, match="no such table folder"):
        convert_nuscenes(root, version="v1.0-trainval")
    drive = convert_nuscenes(root)[0]
    assert "imu" not in drive.rig and any("CAN bus" in s for s in drive.report.lines())
    tables = root / "v1.0-mini" / "sample.json"
    tables.write_text(json.dumps([{"token": "x"}]))
    with pytest.raises(ConversionError, match="cannot load the tables"):
        convert_nuscenes(root)
    import sys

    monkeypatch.setitem(sys.modules, "nuscenes.nuscenes", None)  # the package is not installed
    with pytest.raises(ConversionError, match="nuscenes-devkit"):
        convert_nuscenes(root)


def test_cli_bag_opens_with_info_and_replays_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ros-fusion convert nuscenes` → bag + rig; `info` reads it; a live replay publishes every message."""
    import argparse

    from ros_fusion.bag.info import bag_summary
    from ros_fusion.commands import convert
    from ros_fusion.ros.bag_io import read_payloads
    from ros_fusion.ros.replay import replay_bag

    root = tmp_path / "nuscenes"
    write_nuscenes(root)
    parser = argparse.ArgumentParser()
    convert.register(parser.add_subparsers())
    args = parser.parse_args(["convert", "nuscenes", "--dataroot", str(root), "-o", str(tmp_path / "out")])
    assert args.func(args) == 0
    bag = tmp_path / "out" / "scene-0001.mcap"
    assert (tmp_path / "out" / "scene-0001.rig.yaml").is_file()
    summary = bag_summary(bag)
    assert summary.metadata["scene"] == "scene-0001"
    assert summary.topic("/sensors/camera_front/image_raw/compressed").msgtype == "sensor_msgs/msg/CompressedImage"
    assert summary.topic("/sensors/lidar_top/points").first_stamp_ns == NUSC_T0_US * 1000
    decoded = [p for _, _, p in read_payloads(bag, ["/sensors/camera_front/image_raw/compressed"])]
    assert decoded[0].data.shape == (900, 1600, 3)
    for k, v in {"ROS_DOMAIN_ID": "80", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                 "FASTDDS_DEFAULT_PROFILES_FILE": str(Path(__file__).resolve().parent.parent / "config" /
                                                      "fastdds.xml")}.items():
        monkeypatch.setenv(k, v)
    stats = replay_bag(bag, rate=10.0)
    assert stats.per_topic == {t.topic: t.count for t in summary.topics}
