"""Training data from the simulator: ego-motion helpers, sample content, shards, manifest, splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ros_fusion.core import network_io as nio
from ros_fusion.core.bev import BevGrid
from ros_fusion.core.compensation import compensate_radar, deskew_lidar
from ros_fusion.core.events import SIM_EPOCH_NS
from ros_fusion.core.rig import load_rig
from ros_fusion.core.transforms import invert_transform, xyz_rpy_to_transform
from ros_fusion.core.types import NS_PER_S, PointCloud
from ros_fusion.paths import default_rig_path
from ros_fusion.sim.dataset import (
    DriveSamples,
    _point_times_ns,
    check_splits,
    frame_gt,
    frame_inputs,
    frame_targets,
    generate_dataset,
    load_shard,
    read_manifest,
)
from ros_fusion.sim.drive import DriveSimulator
from ros_fusion.sim.ego import EgoTrajectory, TrueMotion
from ros_fusion.sim.lidar import LIDAR_DTYPE

G = BevGrid()


@pytest.fixture(scope="module")
def rig():
    return load_rig(default_rig_path())


@pytest.fixture(scope="module")
def frames(rig):
    return list(DriveSamples(rig, "urban", 5, 1.2))


def curving_ego() -> EgoTrajectory:
    t = np.arange(-1.0, 2.0, 0.002)
    v, w = 20.0, 0.5
    yaw = 0.3 + w * t
    x = 100 + v / w * (np.sin(yaw) - np.sin(0.3))
    y = -50 - v / w * (np.cos(yaw) - np.cos(0.3))
    n = len(t)
    return EgoTrajectory(t, v * t, x, y, yaw, np.full(n, v), np.zeros(n), np.full(n, w), 0.0)


def test_deskew_puts_static_points_where_they_are_at_t() -> None:
    ego = curving_ego()
    E = xyz_rpy_to_transform([0.95, 0.0, 1.84], [0.0, 0.0, 0.1])
    rng = np.random.default_rng(0)
    pw = np.c_[rng.uniform(50, 200, 500), rng.uniform(-120, 20, 500), rng.uniform(0, 3, 500)]
    T_s = 0.5
    dt = -rng.uniform(0, 0.1, 500)
    pts = np.empty(500, LIDAR_DTYPE)
    ps = np.empty((500, 3))
    for k in range(500):  # each point seen from the sensor pose at its own firing time
        M = invert_transform(ego.world_from_base(T_s + dt[k])[0] @ E)
        ps[k] = M[:3, :3] @ pw[k] + M[:3, 3]
    pts["x"], pts["y"], pts["z"] = ps.T
    pts["t"] = dt
    cloud = PointCloud(SIM_EPOCH_NS + int(T_s * NS_PER_S), "lidar_top", pts)
    expect = pw @ invert_transform(ego.world_from_base(T_s)[0])[:3, :3].T + invert_transform(
        ego.world_from_base(T_s)[0])[:3, 3]
    # what dataset generation does: core.compensation fed with the simulator's true motion
    out = deskew_lidar(cloud.xyz(), _point_times_ns(cloud), cloud.stamp_ns, TrueMotion(ego), E)
    # float32 storage of x, y, z and t (t to ~4 ns) limits agreement to millimetres
    assert np.abs(out - expect).max() < 5e-3
    # without deskew the error is the motion within the sweep (up to 2 m at 20 m/s)
    naive = ps @ E[:3, :3].T + E[:3, 3]
    assert np.abs(naive - expect).max() > 1.0


def test_radar_doppler_compensation(rig) -> None:
    sim = DriveSimulator(rig, "urban", 3, 1.5)
    spec = rig.sensors["radar_front"]
    gts: dict[int, object] = {}
    raw, static_v, lead = [], [], []
    for ev in sim.events():
        if ev.sensor == "ground_truth":
            gts[ev.stamp_ns] = ev.payload
        elif ev.sensor == "radar_front" and gts:
            scan = ev.payload
            xyz, v = compensate_radar(scan.xyz(), np.asarray(scan.points["v_r"]), scan.stamp_ns, scan.stamp_ns,
                                      TrueMotion(sim.world.ego), spec.extrinsic)
            gt = min(gts.values(), key=lambda g: abs(g.stamp_ns - scan.stamp_ns))
            d = np.hypot(xyz[:, None, 0] - gt.boxes[None, :, 0], xyz[:, None, 1] - gt.boxes[None, :, 1])
            near = d.argmin(axis=1)
            # far from every actor (GT reaches 60 m, so look within 45 m only): static structures
            static = (d.min(axis=1) > 8.0) & (np.hypot(xyz[:, 0], xyz[:, 1]) < 45.0)
            raw.append(np.asarray(scan.points["v_r"])[static])
            static_v.append(v[static])
            # returns within 1.5 m of a vehicle centre: radial velocity over ground ≈ its velocity along the ray
            on = d.min(axis=1) < 1.5
            u = xyz[on, :2] / np.linalg.norm(xyz[on, :2], axis=1, keepdims=True)
            lead.append(np.c_[v[on], np.einsum("ij,ij->i", u, gt.boxes[near[on], 7:9])])
    raw_a, comp_a = np.abs(np.concatenate(raw)), np.abs(np.concatenate(static_v))
    assert len(raw_a) >= 8
    assert np.median(raw_a) > 3.0  # the ego drives at 6-14 m/s: static things approach
    assert np.median(comp_a) < 0.3  # compensated: static returns have ~0 radial velocity over ground
    pairs = np.concatenate(lead)
    assert len(pairs) > 10 and np.median(np.abs(pairs[:, 0] - pairs[:, 1])) < 0.5


def test_samples_have_aligned_inputs_and_targets(frames) -> None:
    assert 10 <= len(frames) <= 13  # 10 Hz LiDAR over 1.2 s
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    hits = total = 0
    for f in frames:
        f.inputs.check(1)
        assert f.inputs.arrays["present"].tolist() == [1.0, 1.0, 1.0] or f is frames[0]
        assert f.gt.num_points is not None and len(f.gt.num_points) == len(f.gt)
        seen = f.gt.observed()  # targets only for objects a LiDAR or radar return hit
        assert f.targets.n_objects == int(G.in_grid(seen.boxes[:, 0], seen.boxes[:, 1]).sum())
        occ = f.inputs.arrays["lidar_bev"][0]
        # the sweep before is the second half of the input: absent only for the drive's first sweep
        prev = f.inputs.arrays["lidar_bev"][len(nio.LIDAR_SWEEP_CHANNELS)]
        assert prev.any() == (f is not frames[0])
        if f is not frames[0]:  # deskewed to the same T: the static world lands in the same cells
            assert ((occ > 0) & (prev > 0)).sum() > 0.4 * min((occ > 0).sum(), (prev > 0).sum())
        for b in f.gt.boxes:
            if np.hypot(b[0], b[1]) < 25 and b[3] > 3:  # vehicles near the car are hit by the LiDAR
                i, j = G.cell_index(b[0], b[1])
                total += 1
                hits += bool(occ[max(i - 2, 0): i + 3, max(j - 2, 0): j + 3].sum() > 0)
    assert total > 0 and hits / total > 0.9  # deskewed LiDAR lands on the ground-truth boxes


def test_targets_decode_back_to_ground_truth(frames) -> None:
    """Simulated GT → targets → decode → metrics: the chain is lossless up to shared cells."""
    from ros_fusion.core.centerhead import decode
    from ros_fusion.eval.detection_metrics import evaluate

    pairs = []
    for f in frames:
        det = decode(f.targets.heatmap, f.targets.regression, logits=False, score_threshold=0.999, top_k=500)
        pairs.append((f.gt, det))
    r = evaluate(pairs)
    assert r.n_gt["car"] > 20
    assert r.class_ap("car") > 0.97 and r.tp_errors["car"]["trans_err"] < 1e-3
    assert r.mean_ap > 0.9


def test_generate_dataset_shards_manifest_determinism(rig, tmp_path) -> None:
    splits = {"train": [1], "val": [], "test": [2]}
    seen = []
    m = generate_dataset(tmp_path / "a", rig, ["urban"], splits, 0.5, progress=lambda n, d: seen.append(n))
    assert m["frames"]["train"] >= 4 and m["frames"]["test"] >= 4 and seen[-1] == sum(m["frames"].values())
    assert [s["file"] for s in m["shards"]] == ["train/urban_seed0001.npz", "test/urban_seed0002.npz"]
    assert read_manifest(tmp_path / "a")["config_hash"] == m["config_hash"]
    shard = load_shard(tmp_path / "a" / "train" / "urban_seed0001.npz")
    assert shard["lidar_bev"].dtype == np.float16 and shard["images"].dtype == np.uint8
    assert json.loads(str(shard["meta"]))["seed"] == 1
    n = shard["lidar_bev"].shape[0]
    x = frame_inputs(shard, n - 1)
    x.check(1)
    t = frame_targets(shard, n - 1)
    gt = frame_gt(shard, n - 1)
    assert t.heatmap.shape == (len(nio.CLASSES), 64, 64) and t.n_objects == int(t.mask.sum())
    assert len(gt) == shard["gt_offsets"][n] - shard["gt_offsets"][n - 1]
    # same arguments → byte-identical shards (hashes in the manifest)
    m2 = generate_dataset(tmp_path / "b", rig, ["urban"], splits, 0.5)
    assert [s["sha256"] for s in m2["shards"]] == [s["sha256"] for s in m["shards"]]
    # a second run over the same folder keeps what is there
    seen.clear()
    generate_dataset(tmp_path / "a", rig, ["urban"], splits, 0.5, progress=lambda n, d: seen.append(d))
    assert all("kept" in d for d in seen)


def test_shards_load_in_the_training_loop(rig, tmp_path) -> None:
    train = pytest.importorskip("ros_fusion.models.train")
    generate_dataset(tmp_path, rig, ["highway"], {"train": [4]}, 0.4)
    ds = train.ShardDataset.from_dir(tmp_path, "train")
    batch = next(ds.batches(2, None))
    assert batch["images"].dtype == np.float32 and batch["heatmap_target"].shape[1:] == (len(nio.CLASSES), 64, 64)
    assert ds.provenance()["seeds"] == [4]


def test_splits_must_be_disjoint() -> None:
    check_splits({"train": [0, 1], "val": [2], "test": [3]})
    with pytest.raises(ValueError, match="disjoint"):
        check_splits({"train": [0, 1], "test": [1]})
    with pytest.raises(ValueError, match="split"):
        check_splits({"holdout": [5]})
    with pytest.raises(ValueError, match="non-negative"):
        check_splits({"train": [-1]})


def test_dataset_command(tmp_path, capsys) -> None:
    import argparse

    from ros_fusion.commands import HelpFormatter
    from ros_fusion.commands import dataset as cmd

    assert cmd.parse_seeds("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11] and cmd.parse_seeds("") == []
    for bad in ("3-1", "a", "1,1", "-2"):
        with pytest.raises(ValueError):
            cmd.parse_seeds(bad)
    parser = argparse.ArgumentParser(prog="ros-fusion", formatter_class=HelpFormatter)
    cmd.register(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(["dataset", *argv])
        return args.func(args)

    out = tmp_path / "ds"
    assert run("--out", str(out), "--scenarios", "urban", "--seeds-train", "6", "--seeds-val", "",
               "--seeds-test", "101", "--duration", "0.3") == 0
    m = read_manifest(out)
    assert m["splits"] == {"train": [6], "val": [], "test": [101]} and m["frames"]["train"] >= 2
    assert "wrote" in capsys.readouterr().out
    assert run("--out", str(out), "--seeds-train", "0-3", "--seeds-test", "3") == 2
    assert "disjoint" in capsys.readouterr().err
    assert run("--out", str(out), "--scenarios", "mars") == 2
    assert run("--out", str(out), "--duration", "-1") == 2
