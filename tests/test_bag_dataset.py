"""Datasets from recorded bags: converted KITTI / nuScenes fixtures → eval, dataset shards, train.

The fixtures are the tiny KITTI- and nuScenes-mini-shaped folders of
`tests/dataset_fixtures.py` (known boxes, LiDAR points inside them), turned
into bags by the real converters. Everything goes through `ros_fusion.cli.main`
where a user would type a command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")  # read_payloads deserialises bag messages with rclpy

from ros_fusion.bag.convert_kitti import convert_kitti
from ros_fusion.cli import main
from ros_fusion.commands.convert import write_drives
from ros_fusion.core import network_io as nio
from ros_fusion.core.bev import BevGrid
from ros_fusion.core.camera_lift import prepare_image, resize_image
from ros_fusion.core.rig import rig_from_dict
from ros_fusion.core.transforms import wrap_angle
from ros_fusion.core.types import Obstacles
from ros_fusion.eval.bag_dataset import (
    BagFrameStats,
    bag_frames,
    bag_sha256,
    bags_to_dataset,
    check_compatible_rigs,
    images_to_u8,
)
from ros_fusion.eval.bag_eval import GROUND_TRUTH_TOPIC
from ros_fusion.eval.network_eval import split_shards
from ros_fusion.ros.bag_io import read_payloads, read_rig
from ros_fusion.sim.dataset import frame_gt, load_shard, read_manifest
from tests.dataset_fixtures import KITTI_TRUTH, NUSC_T0_US, NUSC_TRUTH, write_kitti, write_nuscenes

GRID = BevGrid()


@pytest.fixture(scope="module")
def kitti_bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two bags from one KITTI-shaped folder: frames 0-2 (kitti_a) and frame 3 (kitti_b)."""
    root = tmp_path_factory.mktemp("kitti")
    write_kitti(root / "kitti", frames=4)
    out = {}
    for name, frames in (("kitti_a", ["000000", "000001", "000002"]), ("kitti_b", ["000003"])):
        (bag, _), = write_drives(convert_kitti(root / "kitti", frames=frames, name=name), root)
        out[name] = bag
    return out


@pytest.fixture(scope="module")
def nusc_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nuscenes.nuscenes", reason="nuscenes-devkit not installed")
    from ros_fusion.bag.convert_nuscenes import convert_nuscenes

    root = tmp_path_factory.mktemp("nusc")
    write_nuscenes(root / "nuscenes")
    (bag, _), = write_drives(convert_nuscenes(root / "nuscenes"), root)
    return bag


@pytest.fixture(scope="module")
def kitti_dataset(kitti_bags: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "kitti"
    assert main(["dataset", "--train-bags", str(kitti_bags["kitti_a"]), "--val-bags", str(kitti_bags["kitti_b"]),
                 "-o", str(out), "-q"]) == 0
    return out


def box_cells_occupied(lidar_bev: np.ndarray, box: np.ndarray) -> bool:
    """LiDAR occupancy (channel 0) > 0 in the raster cell of the box centre."""
    i, j = GRID.cell_index(np.array([box[0]]), np.array([box[1]]))
    return bool(lidar_bev[0, int(i[0]), int(j[0])] > 0)


def assert_boxes_match(gt: Obstacles, truth: list, labels: list[int]) -> None:
    assert list(gt.labels) == labels
    for b, t in zip(gt.boxes.astype(np.float64), truth, strict=True):
        np.testing.assert_allclose(b[:6], t.box[:6], atol=1e-3)
        assert abs(wrap_angle(b[6] - t.box[6])) < 1e-4


# ----------------------------------------------------------------------------- (a) eval on converted bags
@pytest.mark.parametrize("which", ["kitti", "nuscenes"])
def test_eval_runs_on_converted_bags(which: str, kitti_bags, request, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    bag = kitti_bags["kitti_a"] if which == "kitti" else request.getfixturevalue("nusc_bag")
    out = tmp_path / "eval"
    assert main(["eval", str(bag), "--no-robustness", "-o", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bundles"]["failed"] == 0
    assert metrics["bundles"]["with_ground_truth"] == (3 if which == "kitti" else 2)  # every annotated frame
    assert metrics["run"]["bags"] == [str(bag)]


# ----------------------------------------------------------------------------- (b) dataset shards from bags
def test_dataset_from_kitti_bags_holds_the_fixture_boxes_and_points(kitti_bags, kitti_dataset: Path) -> None:
    m = read_manifest(kitti_dataset)
    assert m["source"] == "bags" and m["rig"] == "kitti_a,kitti_b"
    assert [(s["file"], s["frames"], s["bag"], s["seed"]) for s in m["shards"]] == [
        ("train/kitti_a_seed0000.npz", 3, "kitti_a.mcap", 0), ("val/kitti_b_seed0001.npz", 1, "kitti_b.mcap", 1)]
    assert m["splits"] == {"train": [0], "val": [1], "test": []}
    for entry in m["bags"]:  # the manifest pins each source bag by content
        assert entry["sha256"] == hashlib.sha256(kitti_bags[Path(entry["bag"]).stem].read_bytes()).hexdigest()
    _, refs = split_shards(kitti_dataset, "train")  # what eval-model reads: sha256 of every shard verified
    shard = load_shard(refs[0].path)
    meta = json.loads(str(shard["meta"]))
    assert meta["bag"] == "kitti_a.mcap" and meta["scenario"] == "kitti_a" and meta["split"] == "train"
    assert shard["images"].shape == (3, 1, 3, nio.CAM_H, nio.CAM_W) and shard["images"].dtype == np.uint8
    assert list(shard["stamps"]) == [1_700_000_000_000_000_000 + k * 100_000_000 for k in range(3)]
    for i in range(3):
        gt = frame_gt(shard, i)
        assert_boxes_match(gt, KITTI_TRUTH, [0, 3, 4])  # car, pedestrian, cyclist
        np.testing.assert_array_equal(shard["present"][i], [1, 1, 0])  # camera, LiDAR; no radar on KITTI
        lidar = shard["lidar_bev"][i].astype(np.float32)
        for t in KITTI_TRUTH:
            assert box_cells_occupied(lidar, t.box), f"no LiDAR occupancy at the {t.cls} in frame {i}"
        assert (lidar[0] > 0).sum() > 50  # ground clutter too
        for t, label in zip(KITTI_TRUTH, (0, 3, 4), strict=True):  # heatmap peak at each box's feature cell
            ci, cj = GRID.cell_index(np.array([t.box[0]]), np.array([t.box[1]]), GRID.stride)
            assert shard["heatmap_target"][i, label, int(ci[0]), int(cj[0])] == 1.0
        assert shard["images"][i, 0].any()  # the camera's picture is there


def test_dataset_from_nuscenes_bag(nusc_bag: Path, tmp_path: Path) -> None:
    out = tmp_path / "nusc"
    assert main(["dataset", "--train-bags", str(nusc_bag), "-o", str(out), "-q"]) == 0
    m = read_manifest(out)
    (entry,) = m["shards"]
    shard = load_shard(out / entry["file"])
    stats = entry["stats"]
    # 2 annotated key frames; at the second the 4 Hz fixture LiDAR has not recovered health (it is
    # configured at 20 Hz) and nothing else is usable: no input, so no sample — counted, not hidden
    assert entry["frames"] + stats["no_modality"] == 2 and entry["frames"] >= 1
    assert int(shard["stamps"][0]) == NUSC_T0_US * 1000
    gt = frame_gt(shard, 0)
    assert_boxes_match(gt, NUSC_TRUTH[:2], [0, 3])  # the traffic cone is not one of our classes
    np.testing.assert_array_equal(shard["present"][0], [1, 1, 1])
    assert shard["images"].shape[1] == 2  # CAM_FRONT and CAM_FRONT_LEFT
    assert box_cells_occupied(shard["lidar_bev"][0].astype(np.float32), NUSC_TRUTH[0].box)  # points in the car
    assert shard["radar_bev"][0, 0].astype(np.float32).sum() > 0


# ----------------------------------------------------------------------------- (c) train on it unchanged
def test_train_reads_a_bag_dataset(kitti_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from ros_fusion.models.checkpoint import load_checkpoint

    ckpt = tmp_path / "run"
    assert main(["train", "--data", str(kitti_dataset), "--out", str(ckpt), "--max-steps", "2", "--batch-size", "2",
                 "--epochs", "1", "--feat", "8", "--device", "cpu", "--threads", "1", "-q"]) == 0
    c = load_checkpoint(ckpt / "last.pt")
    assert c.step == 2
    assert c.provenance["train"]["scenarios"] == ["kitti_a"] and c.provenance["train"]["seeds"] == [0]
    assert c.provenance["val"]["scenarios"] == ["kitti_b"] and c.provenance["train"]["samples"] == 3
    assert np.isfinite(c.metrics["val_loss"]["total"])


# ----------------------------------------------------------------------------- (d) incompatible rigs
def test_dataset_refuses_bags_of_incompatible_rigs(kitti_bags, nusc_bag: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mixed"
    assert main(["dataset", "--train-bags", str(kitti_bags["kitti_a"]), "--val-bags", str(nusc_bag),
                 "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(nusc_bag) in err
    assert "2 camera(s)" in err and "1 camera(s)" in err and "compatible rig" in err
    assert not (out / "manifest.json").exists()  # checked before anything was converted


def test_eval_refuses_a_model_for_another_rig(kitti_bags, nusc_bag: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    import yaml

    from ros_fusion.paths import share_dir

    pytest.importorskip("onnxruntime")
    models = tmp_path / "models"
    shutil.copytree(share_dir() / "models", models)
    raw = yaml.safe_load((models / "manifest.yaml").read_text())
    for spec in raw["stages"]["camera"]["inputs"]:  # as exported for a fixed 2-camera rig
        spec["shape"][1] = 2
    (models / "manifest.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["eval", str(kitti_bags["kitti_a"]), "--no-robustness", "--models", str(models), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "exported for 2 camera(s) but the rig has 1" in err and "stages.camera" in err
    # the same pinned model fits the 2-camera nuScenes rig
    assert main(["eval", str(nusc_bag), "--no-robustness", "--models", str(models), "-q"]) == 0

    # a rig with nothing the model fuses (IMU and odometry only)
    rig = yaml.safe_load((nusc_bag.parent / f"{nusc_bag.stem}.rig.yaml").read_text())
    rig["sensors"] = {k: v for k, v in rig["sensors"].items() if v["modality"] in ("imu", "odometry")}
    rig_file = tmp_path / "imu_only.yaml"
    rig_file.write_text(yaml.safe_dump(rig))
    capsys.readouterr()
    assert main(["eval", str(nusc_bag), "--no-robustness", "--rig-file", str(rig_file), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no camera, LiDAR or radar" in err and str(rig_file) in err


def test_check_compatible_rigs_names_the_odd_bag(kitti_bags) -> None:
    kitti = read_rig(kitti_bags["kitti_a"])
    raw = yaml_rig(kitti)
    raw["sensors"]["camera_rear"] = dict(raw["sensors"]["camera_front"], topic="/sensors/camera_rear/image_raw",
                                         info_topic="/sensors/camera_rear/camera_info", frame_id="camera_rear_optical")
    two_cams = rig_from_dict(raw, "two_cams")
    check_compatible_rigs({Path("a.mcap"): kitti, Path("b.mcap"): kitti})
    with pytest.raises(ValueError, match=r"^c\.mcap: rig 'kitti_a' has 2 camera\(s\)"):
        check_compatible_rigs({Path("a.mcap"): kitti, Path("b.mcap"): kitti, Path("c.mcap"): two_cams})
    del raw["sensors"]["camera_rear"]
    raw["sensors"]["radar_front"] = {"modality": "radar", "topic": "/sensors/radar_front/points",
                                     "frame_id": "radar_front", "rate_hz": 13.0,
                                     "extrinsics": raw["sensors"]["lidar_top"]["extrinsics"]}
    with pytest.raises(ValueError, match="camera\\+lidar\\+radar"):
        check_compatible_rigs({Path("a.mcap"): kitti, Path("r.mcap"): rig_from_dict(raw, "radar")})


def yaml_rig(rig) -> dict:
    import yaml

    return yaml.safe_load(rig.to_yaml())


# ----------------------------------------------------------------------------- bag_frames, ROS-free part
@pytest.fixture(scope="module")
def kitti_messages(kitti_bags) -> tuple[list, object]:
    bag = kitti_bags["kitti_a"]
    return list(read_payloads(bag)), read_rig(bag)


def _with_gt(messages: list, change) -> list:
    return [(t, log, change(p) if t == GROUND_TRUTH_TOPIC else p) for t, log, p in messages]


def test_ground_truth_nearest_within_half_a_period_and_moved(kitti_messages) -> None:
    messages, rig = kitti_messages
    shift = 30_000_000  # 30 ms < half the 100 ms LiDAR period
    st = BagFrameStats()
    frames = list(bag_frames(_with_gt(messages, lambda o: dataclasses.replace(o, stamp_ns=o.stamp_ns + shift)),
                             rig, stats=st))
    assert len(frames) == 3 and st.gt_moved == 3
    for f in frames:
        assert f.gt.stamp_ns == f.stamp_ns  # moved to the bundle time (static ego, zero velocity: same boxes)
        assert_boxes_match(f.gt, KITTI_TRUTH, [0, 3, 4])
    st = BagFrameStats()
    far = _with_gt(messages, lambda o: dataclasses.replace(o, stamp_ns=o.stamp_ns + 1_000_000_000))
    assert list(bag_frames(far, rig, stats=st)) == [] and st.without_gt == 3 and st.bundles == 3


def test_bad_labels_and_non_finite_boxes_are_dropped_and_counted(kitti_messages) -> None:
    messages, rig = kitti_messages

    def spoil(o: Obstacles) -> Obstacles:
        labels, boxes = o.labels.copy(), o.boxes.copy()
        labels[1] = len(nio.CLASSES) + 3  # not one of our classes
        boxes[2, 0] = np.nan
        return dataclasses.replace(o, labels=labels, boxes=boxes)

    st = BagFrameStats()
    frames = list(bag_frames(_with_gt(messages, spoil), rig, stats=st))
    assert len(frames) == 3 and st.boxes_bad_label == 3 and st.boxes_non_finite == 3 and st.boxes == 3
    for f in frames:
        assert_boxes_match(f.gt, KITTI_TRUTH[:1], [0])
        assert f.targets.n_objects == 1


def test_stride_inputs_and_images(kitti_messages) -> None:
    messages, rig = kitti_messages
    st = BagFrameStats()
    frames = list(bag_frames(messages, rig, stats=st, stride=2))
    assert [f.stamp_ns for f in frames] == [1_700_000_000_000_000_000, 1_700_000_000_200_000_000]
    assert st.skipped_by_stride == 1 and st.frames == 2
    f = frames[0]
    f.inputs.check(1)
    # the stored uint8 image is exactly what the network input holds, normalised
    np.testing.assert_allclose(prepare_image(f.images_u8[0]), f.inputs.arrays["images"][0], atol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        bag_frames(messages, rig, stride=0)
    raw = yaml_rig(rig)
    raw["sensors"] = {}
    raw["sensors"]["imu"] = {"modality": "imu", "topic": "/imu", "frame_id": "imu_link", "rate_hz": 100.0}
    with pytest.raises(ValueError, match="no camera, LiDAR or radar"):
        bag_frames(messages, rig_from_dict(raw, "imu_only"))


def test_images_to_u8_inverts_the_normalisation() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    small = resize_image(img)
    net = np.stack([prepare_image(img), np.zeros((3, nio.CAM_H, nio.CAM_W), np.float32)])  # 2nd camera absent
    back = images_to_u8(net)
    np.testing.assert_array_equal(back[0], small)
    assert not back[1].any()


def test_bags_to_dataset_is_resumable_deterministic_and_refuses_unannotated_bags(kitti_bags, tmp_path) -> None:
    bags = {"train": [kitti_bags["kitti_a"]], "test": [kitti_bags["kitti_b"]]}
    seen: list[str] = []
    m1 = bags_to_dataset(tmp_path / "d", bags, read_payloads, read_rig, progress=lambda n, what: seen.append(what))
    assert m1["splits"] == {"train": [0], "val": [], "test": [1]}
    seen.clear()
    m2 = bags_to_dataset(tmp_path / "d", bags, read_payloads, read_rig, progress=lambda n, what: seen.append(what))
    assert all(w.endswith("(kept)") for w in seen) and len(seen) == 2 and m2["shards"] == m1["shards"]
    m3 = bags_to_dataset(tmp_path / "d", bags, read_payloads, read_rig, overwrite=True)
    assert [s["sha256"] for s in m3["shards"]] == [s["sha256"] for s in m1["shards"]]  # same bytes again
    assert bag_sha256(kitti_bags["kitti_a"]) == m1["bags"][0]["sha256"]

    def no_gt(p: Path):
        return (m for m in read_payloads(p) if m[0] != GROUND_TRUTH_TOPIC)

    with pytest.raises(ValueError, match="kitti_b.mcap: no bundle with ground truth"):
        bags_to_dataset(tmp_path / "e", {"train": [kitti_bags["kitti_b"]]}, no_gt, read_rig)
    with pytest.raises(ValueError, match="given twice"):
        bags_to_dataset(tmp_path / "e", {"train": [kitti_bags["kitti_a"]], "val": [kitti_bags["kitti_a"]]},
                        read_payloads, read_rig)
    with pytest.raises(ValueError, match="unknown split"):
        bags_to_dataset(tmp_path / "e", {"training": [kitti_bags["kitti_a"]]}, read_payloads, read_rig)


def test_dataset_command_bag_options(kitti_bags, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = str(kitti_bags["kitti_a"])
    assert main(["dataset", "--train-bags", bag, "--scenarios", "urban", "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "--scenarios only apply to simulated data" in capsys.readouterr().err
    assert main(["dataset", "--train-bags", str(tmp_path / "nope.mcap"), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "no such bag" in capsys.readouterr().err
    assert main(["dataset", "--train-bags", bag, "--stride", "0", "-o", str(tmp_path / "x"), "-q"]) == 2
    out = tmp_path / "y"
    assert main(["dataset", "--train-bags", bag, "--stride", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train/kitti_a_seed0000.npz: 2 frames, 6 boxes from kitti_a.mcap" in text
    assert read_manifest(out)["stride"] == 2
