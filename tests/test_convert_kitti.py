"""KITTI object → bag + rig: label conventions, box/points round trip, projection, bad files, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ros_fusion.bag.convert_common import ConversionError
from ros_fusion.bag.convert_kitti import KittiLabel, convert_kitti, label_to_box
from ros_fusion.core.transforms import transform_points, wrap_angle
from ros_fusion.core.types import Obstacles, PointCloud
from tests.dataset_fixtures import inside, write_kitti


def events_by_topic(drive) -> dict[str, list]:
    out: dict[str, list] = {}
    for ev in drive.events():
        out.setdefault(ev.topic, []).append(ev)
    return out


def test_label_conventions_by_hand() -> None:
    """Camera axes (x right, y down, z fwd), bottom-centred location, rotation_y = 0 along camera +x."""
    perm = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])  # velo → cam
    base_from_rect = np.eye(4)
    base_from_rect[:3, :3] = perm.T
    base_from_rect[2, 3] = 1.73  # LiDAR 1.73 m above the ground
    lab = KittiLabel("Car", h=1.5, w=1.6, l=4.0, x=1.0, y=1.73, z=10.0, ry=0.0)
    box = label_to_box(lab, base_from_rect)
    # 10 m ahead, 1 m to the right, bottom on the ground -> centre at h/2
    np.testing.assert_allclose(box[:6], [10.0, -1.0, 0.75, 4.0, 1.6, 1.5], atol=1e-12)
    assert box[6] == pytest.approx(-math.pi / 2)  # heading along camera +x = to the right
    fwd = label_to_box(KittiLabel("Car", 1.5, 1.6, 4.0, 1.0, 1.73, 10.0, -math.pi / 2), base_from_rect)
    assert fwd[6] == pytest.approx(0.0, abs=1e-12)  # rotation_y = -pi/2 faces forward (camera +z)
    back = label_to_box(KittiLabel("Car", 1.5, 1.6, 4.0, 1.0, 1.73, 10.0, math.pi / 2), base_from_rect)
    assert abs(wrap_angle(back[6] - math.pi)) < 1e-12


def test_boxes_points_and_rig_round_trip(tmp_path: Path) -> None:
    written = write_kitti(tmp_path / "kitti", frames=2)
    drives = convert_kitti(tmp_path / "kitti")
    assert len(drives) == 1
    drive = drives[0]
    assert drive.report.skipped == []
    rig = drive.rig_object()  # the generated rig validates
    assert set(rig.sensors) == {"lidar_top", "camera_front"}
    assert rig.sensors["lidar_top"].intensity_max == 1.0  # KITTI reflectance is 0–1, not 8-bit
    topics = events_by_topic(drive)
    gt: list = topics["/ground_truth/obstacles"]
    assert len(gt) == 2
    truth = written["truth"]
    worst_pos = worst_yaw = 0.0
    for ev in gt:
        obs: Obstacles = ev.payload
        assert obs.frame_id == "base_link"
        assert list(obs.labels) == [0, 3, 4]  # car, pedestrian, cyclist; DontCare dropped
        for b, t in zip(obs.boxes.astype(np.float64), truth, strict=True):
            worst_pos = max(worst_pos, float(np.abs(b[:6] - t.box[:6]).max()))
            worst_yaw = max(worst_yaw, float(abs(wrap_angle(b[6] - t.box[6]))))
    print(f"KITTI box round trip: max position/size error {worst_pos * 1000:.4f} mm, yaw {worst_yaw:.2e} rad")
    assert worst_pos <= 1e-3 and worst_yaw <= 1e-4

    # LiDAR points inside each box stay inside it after conversion (sensor frame + rig extrinsic)
    lidar = rig.sensors["lidar_top"]
    for ev, name in zip(topics["/sensors/lidar_top/points"], ["000000", "000001"], strict=True):
        cloud: PointCloud = ev.payload
        assert cloud.frame_id == "lidar_top" and cloud.field_names == ("x", "y", "z", "intensity")
        base_pts = transform_points(lidar.extrinsic, cloud.xyz())
        gt_boxes = gt[int(name)].payload.boxes
        for k, idx in enumerate(written["inside"][name]):
            assert inside(gt_boxes[k], base_pts[idx], tol=1e-4).all()
        # and the ground points sit on z = 0 (base_link is on the ground)
        assert np.abs(base_pts[-500:, 2]).max() < 1e-5


def test_projection_matches_dataset_calibration(tmp_path: Path) -> None:
    written = write_kitti(tmp_path / "kitti", frames=1)
    drive = convert_kitti(tmp_path / "kitti")[0]
    rig = drive.rig_object()
    cam, lidar = rig.sensors["camera_front"], rig.sensors["lidar_top"]
    velo = written["points"]["000000"]
    velo = velo[velo[:, 0] > 2.0]  # in front of the camera
    expected = written["calib"].project(velo)
    cam_from_lidar = np.linalg.inv(cam.extrinsic) @ lidar.extrinsic
    pc = transform_points(cam_from_lidar, velo)
    uv = (pc @ cam.intrinsics.K.T)
    uv = uv[:, :2] / uv[:, 2:]
    err = float(np.abs(uv - expected).max())
    print(f"KITTI projection with converted rig vs P2*R0*Tr: max {err:.2e} px over {len(velo)} points")
    assert err <= 0.5 and err < 1e-6  # exact up to float rounding
    # CameraInfo in the bag carries the same K and the image's size
    info = next(ev.payload for ev in drive.events() if ev.topic.endswith("camera_info"))
    np.testing.assert_allclose(info.intrinsics.K, written["calib"].P2[:, :3])
    assert (info.intrinsics.width, info.intrinsics.height) == (1242, 375)


def test_malformed_files_are_named_and_the_rest_converts(tmp_path: Path) -> None:
    root = tmp_path / "kitti"
    write_kitti(root, frames=4)
    base = root / "training"
    (base / "calib" / "000001.txt").unlink()  # missing calib
    bin2 = base / "velodyne" / "000002.bin"
    bin2.write_bytes(bin2.read_bytes()[:-6])  # truncated
    lab3 = base / "label_2" / "000003.txt"
    lab3.write_text(lab3.read_text().replace("Cyclist", "Spaceship", 1))  # unknown class
    drive = convert_kitti(root)[0]
    topics = events_by_topic(drive)
    lines = drive.report.lines()
    assert any("000001.txt" in s and "calibration file missing" in s for s in lines)
    assert any("000002.bin" in s and "truncated" in s for s in lines)
    assert any("000003.txt:3" in s and "Spaceship" in s for s in lines)
    # frame 1 is gone entirely; frame 2 lost only its sweep; frame 3 lost only the unknown box
    stamps = {t: [ev.stamp_ns for ev in evs] for t, evs in topics.items()}
    assert len(stamps["/sensors/lidar_top/points"]) == 2  # frames 0 and 3
    assert len(stamps["/sensors/camera_front/image_raw/compressed"]) == 3  # frames 0, 2, 3
    gt = {ev.stamp_ns: ev.payload for ev in topics["/ground_truth/obstacles"]}
    assert [len(o) for _, o in sorted(gt.items())] == [3, 3, 2]


def test_unusable_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no such directory"):
        convert_kitti(tmp_path / "nope")
    (tmp_path / "empty" / "training").mkdir(parents=True)
    with pytest.raises(ConversionError, match="no frames"):
        convert_kitti(tmp_path / "empty")


def test_cli_writes_bag_and_rig_that_info_and_readers_open(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from ros_fusion.bag.info import bag_summary
    from ros_fusion.commands import convert
    from ros_fusion.core.rig import load_rig
    from ros_fusion.ros.bag_io import read_payloads, read_rig

    write_kitti(tmp_path / "kitti", frames=2)
    parser = argparse.ArgumentParser()
    convert.register(parser.add_subparsers())
    args = parser.parse_args(["convert", "kitti", "--root", str(tmp_path / "kitti"), "-o", str(tmp_path / "out")])
    assert args.func(args) == 0
    bag = tmp_path / "out" / "kitti.mcap"
    summary = bag_summary(bag)
    assert summary.topic("/sensors/lidar_top/points").count == 2
    assert summary.topic("/sensors/camera_front/image_raw/compressed").msgtype == "sensor_msgs/msg/CompressedImage"
    assert summary.topic("/ground_truth/obstacles").count == 2
    assert summary.metadata["dataset"] == "kitti" and summary.metadata["gt_velocity"] == "unavailable"
    rig_file = load_rig(tmp_path / "out" / "kitti.rig.yaml")
    np.testing.assert_allclose(rig_file.sensors["camera_front"].extrinsic, read_rig(bag).sensors["camera_front"]
                               .extrinsic)
    imgs = [p for t, _, p in read_payloads(bag, ["/sensors/camera_front/image_raw/compressed"])]
    assert imgs[0].data.shape == (375, 1242, 3)  # PNG bytes decode back to the image
    # a second run refuses to overwrite
    assert args.func(args) == 1
    assert "already exists" in capsys.readouterr().err


def test_compressed_payload_goes_to_the_bag_byte_exact(tmp_path: Path) -> None:
    """core CompressedImage -> sensor_msgs/CompressedImage keeps the bytes; from_message decodes them."""
    import cv2

    from ros_fusion.core.types import CompressedImage, RejectedInput
    from ros_fusion.ros.messages import from_message, to_message

    img = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    png = cv2.imencode(".png", img)[1].tobytes()
    msg = to_message(CompressedImage(1_700_000_000_000_000_000, "cam", png, "png"), "/cam/image_raw/compressed")
    assert bytes(msg.data) == png and msg.format == "png" and msg.header.frame_id == "cam"
    back = from_message(msg)
    np.testing.assert_array_equal(back.data, img)  # PNG is lossless: decoded pixels equal the original (BGR)
    with pytest.raises(RejectedInput, match="no data"):
        to_message(CompressedImage(1, "cam", b"", "png"))


def test_kitti_bag_replays_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ros_fusion.bag.info import bag_summary
    from ros_fusion.commands.convert import write_drives
    from ros_fusion.ros.replay import replay_bag

    write_kitti(tmp_path / "kitti", frames=3)
    (bag, n), = write_drives(convert_kitti(tmp_path / "kitti"), tmp_path)
    for k, v in {"ROS_DOMAIN_ID": "81", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                 "FASTDDS_DEFAULT_PROFILES_FILE": str(Path(__file__).resolve().parent.parent / "config" /
                                                      "fastdds.xml")}.items():
        monkeypatch.setenv(k, v)
    stats = replay_bag(bag, rate=10.0)
    assert stats.published == n == bag_summary(bag).message_count


def test_still_frames_are_stamped_one_period_apart_whatever_their_ids(tmp_path: Path) -> None:
    """KITTI object ids are not consecutive in time: frame 000009 after 000002 is the next instant, not 0.7 s
    later (which made every sensor stale), and the rig marks the frames as still (no previous sweep)."""
    root = tmp_path / "kitti"
    write_kitti(root, frames=4)
    base = root / "training"
    for d, ext in (("velodyne", "bin"), ("image_2", "png"), ("calib", "txt"), ("label_2", "txt")):
        (base / d / f"000003.{ext}").rename(base / d / f"000009.{ext}")
    drive = convert_kitti(root)[0]
    assert drive.rig_object().still_frames is True
    stamps = sorted(ev.stamp_ns for ev in events_by_topic(drive)["/sensors/lidar_top/points"])
    assert np.diff(stamps).tolist() == [100_000_000] * 3
    assert drive.metadata["timestamps"].startswith("synthetic: still frames")
