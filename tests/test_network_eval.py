"""Network evaluation on held-out shards (docs/results.md §3): mechanics, not accuracy.

A tiny dataset (urban + night_rain, one seed, 2 s, every 5th sweep) is generated
here; the model is whatever ships in models/ (the smoke model at first, the
trained one later), so the tests check what must hold for ANY model: every
pattern evaluated, absent modalities and the camera outside its field of view
get gate 0 exactly, perfect head outputs score AP 1 through the same decode →
metrics path, seen seeds are refused, the JSON and manifest metrics carry what
they promise, and the run is deterministic.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_fusion.commands import eval_model
from ros_fusion.core import network_io as nio
from ros_fusion.core.preprocess import MODALITY_INDEX, drop_modalities
from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import Obstacles
from ros_fusion.eval.network_eval import (
    PATTERNS,
    EvalDataError,
    GateStats,
    HeldOutError,
    NetworkDetector,
    NetworkEvalConfig,
    TargetDetector,
    check_held_out,
    inside_coverage,
    iter_frames,
    model_seen_seeds,
    run_network_eval,
    select_indices,
    split_shards,
    uniform_gates,
)
from ros_fusion.paths import default_rig_path, share_dir
from ros_fusion.runtime.backends import create_backend
from ros_fusion.runtime.model_bundle import load_bundle
from ros_fusion.sim.dataset import generate_dataset

pytest.importorskip("onnxruntime")

MODELS = share_dir() / "models"
SCENARIOS = ("urban", "night_rain")
ORT = {"providers": ["CPUExecutionProvider"], "threads": 1}


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(MODELS)


@pytest.fixture(scope="module")
def test_seed(bundle) -> int:
    """A seed the shipped model has never seen (whatever model is in models/)."""
    seen = {s for v in model_seen_seeds(bundle).values() for s in v}
    return next(s for s in range(900, 2000) if s not in seen)


@pytest.fixture(scope="module")
def data(tmp_path_factory, test_seed) -> Path:
    out = tmp_path_factory.mktemp("eval_data")
    generate_dataset(out, load_rig(default_rig_path()), SCENARIOS, {"test": [test_seed]}, duration_s=2.0, stride=5)
    return out


@pytest.fixture(scope="module")
def network_report(data, bundle):
    return run_network_eval(data, bundle, NetworkEvalConfig(), backend_options=ORT)


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ros-fusion")
    eval_model.register(p.add_subparsers())
    args = p.parse_args(argv)
    return args.func(args)


def test_every_pattern_is_evaluated(network_report, data):
    rep = network_report
    assert list(rep.patterns) == list(PATTERNS)
    n_frames = sum(s["frames"] for s in json.loads((data / "manifest.json").read_text())["shards"])
    assert rep.n_frames == n_frames > 0
    assert rep.frames_by_scenario.keys() == set(SCENARIOS)
    for r in rep.patterns.values():
        assert sum(r.n_gt.values()) > 0  # ground truth reached the scorer for every pattern
        assert 0.0 <= r.nds <= 1.0
    assert set(rep.in_coverage) == set(PATTERNS)
    assert 0.0 <= rep.in_coverage["lidar_missing"][0].mean_ap <= 1.0


def test_absent_modalities_and_camera_outside_its_view_get_zero_gate(network_report):
    g = network_report.gates()
    assert set(g["absent_modality_max_per_pattern"]) == set(PATTERNS)
    assert all(v == 0.0 for v in g["absent_modality_max_per_pattern"].values())
    # the camera check is not vacuous: patterns with the camera saw cells outside its coverage
    with_camera = {p for p, keep in PATTERNS.items() if "camera" in keep}
    assert set(g["camera_outside_coverage_max_per_pattern"]) == with_camera
    assert all(g["camera_outside_coverage_cells"][p] > 0 for p in with_camera)
    assert g["camera_outside_coverage_max"] == 0.0
    for group in ("day", "night_rain"):
        means = g["mean_inside_coverage"][group]
        assert all(0.0 < means[m] <= 1.0 for m in nio.FUSED_MODALITIES), (group, means)
    by = g["mean_inside_coverage_by_pattern"]
    assert set(by) == {p for p, keep in PATTERNS.items() if len(keep) >= 2 and p != "all"}
    assert by["lidar_missing"]["day"]["lidar"] is None and 0.0 < by["lidar_missing"]["day"]["camera"] < 1.0
    checks = network_report.checks()
    assert checks["camera_gate_zero_outside_coverage"] and checks["absent_modality_gates_zero"]
    assert checks["held_out"]


def test_gate_statistics_can_fail():
    """Hand-made gates with a known answer: a camera gate leaking outside its FOV is reported, not hidden."""
    F = nio.FEAT
    cov = np.zeros((3, F, F), np.float32)
    cov[0, :, : F // 2] = 1.0  # camera sees the left half
    cov[1] = 1.0
    present = np.array([1.0, 1.0, 0.0], np.float32)
    gates = uniform_gates(cov, present)
    gates[0, 3, F - 1] = 0.25  # leak outside the camera's coverage
    s = GateStats()
    s.add("radar_missing", "urban", gates, cov, present)
    s.add("all", "urban", gates, cov, present)
    assert s.camera_outside_max["radar_missing"] == pytest.approx(0.25)
    assert s.camera_outside_cells["all"] == F * (F - F // 2)
    means = s.mean_inside(["urban"])
    assert means["camera"] == pytest.approx(0.5)  # camera shares every covered cell with LiDAR
    assert means["lidar"] == pytest.approx((F * F // 2 * 0.5 + F * F // 2 * 1.0) / (F * F))
    assert means["radar"] is None  # absent: no cells
    gates[2, 0, 0] = 0.1
    s.add("lidar_only", "urban", gates, cov, np.array([0.0, 1.0, 0.0], np.float32))
    assert s.absent_max["lidar_only"] == pytest.approx(0.5)  # camera gate where it is absent
    # Patterns of two or more modalities keep their own gate means; one modality alone is not a choice.
    assert set(s.pattern_sum) == {"radar_missing"}
    night = uniform_gates(cov, present)
    night[0][cov[0] > 0], night[1][cov[0] > 0] = 0.2, 0.8  # the camera trusted less at night
    s.add("radar_missing", "night_rain", night, cov, present)
    assert s.mean_inside(["urban"], "radar_missing")["camera"] == pytest.approx(0.5)
    assert s.mean_inside(["night_rain"], "radar_missing")["camera"] == pytest.approx(0.2)
    assert s.mean_inside(["night_rain"])["camera"] is None  # the all-sensor sums did not take it


def test_perfect_head_outputs_score_ap_one(data, bundle):
    """The frames' own CenterPoint targets as head outputs → decode → metrics: AP 1 for every pattern."""
    rep = run_network_eval(data, bundle, NetworkEvalConfig(), detector=TargetDetector())
    assert list(rep.patterns) == list(PATTERNS)
    for p, r in rep.patterns.items():
        assert r.mean_ap == pytest.approx(1.0, abs=1e-9), p
        for c, n in r.n_gt.items():
            if n:
                assert r.class_ap(c) == pytest.approx(1.0, abs=1e-9), (p, c)
        assert r.mean_tp_errors["trans_err"] < 0.05  # float16 targets: centimetre-level
    assert rep.ratio("camera_missing") == pytest.approx(1.0)
    assert rep.ratio("lidar_missing") == pytest.approx(1.0)
    # scored inside each pattern's own coverage: still perfect, and the camera alone sees less than all sensors
    assert set(rep.in_coverage) == set(PATTERNS)
    for p, (r, _) in rep.in_coverage.items():
        assert r.mean_ap == pytest.approx(1.0, abs=1e-9) and rep.ratio_in_coverage(p) == pytest.approx(1.0), p
    n_gt = {p: sum(r.n_gt.values()) for p, (r, _) in rep.in_coverage.items()}
    assert 0 < n_gt["camera_only"] < n_gt["all"] <= sum(rep.patterns["all"].n_gt.values())
    # per scenario: perfect in each, and the scenarios' ground truth adds up to the whole region's
    assert set(rep.in_coverage_by_scenario) == set(rep.frames_by_scenario)
    for p in PATTERNS:
        parts = [by[p] for by in rep.in_coverage_by_scenario.values() if p in by]
        assert all(r.mean_ap == pytest.approx(1.0, abs=1e-9) for r, _ in parts), p
        assert sum(sum(r.n_gt.values()) for r, _ in parts) == n_gt[p], p


def test_inside_coverage_keeps_boxes_where_a_present_modality_sees():
    f = nio.FEAT
    cov = np.zeros((len(nio.FUSED_MODALITIES), f, f), np.float32)
    cov[MODALITY_INDEX["camera"], f // 2:, f // 2:] = 1.0  # x ≥ 0, y ≥ 0
    cov[MODALITY_INDEX["radar"], f // 2:, :] = 1.0  # x ≥ 0
    xy = [(10.0, 5.0), (10.0, -5.0), (-10.0, 5.0), (nio.X_RANGE[1] + 1.0, 0.0), (1.0, 1.0)]
    boxes = np.zeros((len(xy), 9), np.float32)
    boxes[:, :2] = xy
    boxes[:, 3:6] = (4.0, 1.8, 1.5)
    obs = Obstacles(0, "base_link", boxes, np.ones(len(xy), np.float32), np.zeros(len(xy), np.int64),
                    np.zeros((len(xy), 3), np.float32))

    def kept(present):
        return [tuple(map(float, b[:2])) for b in inside_coverage(obs, cov, np.asarray(present, np.float32)).boxes]

    assert kept([1, 0, 0]) == [(10.0, 5.0), (1.0, 1.0)]
    assert kept([1, 0, 1]) == [(10.0, 5.0), (10.0, -5.0), (1.0, 1.0)]
    assert kept([0, 1, 0]) == []  # LiDAR present but (here) covering nothing
    assert kept([1, 1, 1]) == kept([1, 0, 1])  # off the grid is never inside


def test_zero_features_equal_running_the_encoder_on_masked_input(data, bundle):
    """Skipping an absent modality's encoder (zeros) gives what running it on the masked input gives."""
    _, refs = split_shards(data, "test")
    frame = next(iter_frames(refs[:1], 1))
    det = NetworkDetector(create_backend("onnxruntime", bundle, **ORT), bundle)
    feats = det.encode(frame.inputs)
    for pattern in ("lidar_missing", "camera_only"):
        masked = drop_modalities(frame.inputs, PATTERNS[pattern])
        fast = det.fuse(feats, masked)
        full = det.fuse(det.encode(nio.NetworkInputs({**masked.arrays, "present": np.ones(3, np.float32)})), masked)
        np.testing.assert_allclose(fast.heatmap, full.heatmap, atol=1e-5)
        np.testing.assert_allclose(fast.gates, full.gates, atol=1e-6)
        absent = [MODALITY_INDEX[m] for m in nio.FUSED_MODALITIES if m not in PATTERNS[pattern]]
        assert np.all(fast.gates[absent] == 0.0)


def test_cli_writes_json_and_manifest_metrics(data, bundle, test_seed, tmp_path, capsys):
    out, met = tmp_path / "r.json", tmp_path / "m.yaml"
    assert _cli(["eval-model", "--data", str(data), "--models", str(MODELS), "-o", str(out), "--metrics-out",
                 str(met), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "camera_missing" in text and "mean gate weight" in text
    doc = json.loads(out.read_text())
    assert set(doc["patterns"]) == set(PATTERNS)
    for p in doc["patterns"].values():
        assert {"keep", "mAP", "NDS", "per_class_AP", "AP_by_threshold", "per_band_mAP"} <= set(p)
    assert set(doc["per_class_AP_all"]) == set(nio.CLASSES)
    assert set(doc["ratios"]) == {"camera_missing_over_all", "lidar_missing_over_all"}
    assert set(doc["in_coverage"]) == set(PATTERNS)
    assert {"ground_truth", "mAP", "per_class_AP", "all_sensors_mAP", "ratio"} <= set(doc["in_coverage"]["camera_only"])
    assert "mAP in its coverage" in text and "per scenario" in " ".join(text.split())  # titles may wrap
    assert set(doc["in_coverage_by_scenario"]) == set(SCENARIOS)
    assert {"ground_truth", "mAP", "all_sensors_mAP", "ratio"} <= set(doc["in_coverage_by_scenario"]["urban"]["all"])
    assert doc["data"]["seeds"] == [test_seed] and doc["data"]["split"] == "test"
    assert {s["scenario"] for s in doc["data"]["shards"]} == set(SCENARIOS)
    assert doc["model"]["stages"] == {k: {"file": s.path.name, "sha256": s.sha256} for k, s in bundle.stages.items()}
    assert doc["config"]["metrics"]["dist_thresholds"] == [0.5, 1.0, 2.0, 4.0]
    assert doc["config"]["metrics"]["max_range"] == 50.0
    assert {"day", "night_rain"} <= set(doc["gates"]["mean_inside_coverage"])
    assert doc["gates"]["camera_outside_coverage_max"] == 0.0
    # the metrics file is what `ros-fusion export --metrics` reads: a YAML mapping, same as the JSON's block
    metrics = yaml.safe_load(met.read_text())
    assert metrics == doc["metrics"]
    test_block = metrics["test"]
    assert set(test_block["patterns"]) == set(PATTERNS)
    assert test_block["seeds"] == [test_seed]
    assert test_block["model_sha256"] == {k: s.sha256 for k, s in bundle.stages.items()}
    for key, value in (bundle.raw.get("metrics") or {}).items():
        if key != "test":
            assert metrics[key] == value  # the checkpoint's validation losses are kept


def test_same_inputs_same_report(data, bundle):
    cfg = NetworkEvalConfig(max_frames=3)
    a = run_network_eval(data, bundle, cfg, backend_options=ORT).to_dict()
    b = run_network_eval(data, bundle, cfg, backend_options=ORT).to_dict()
    assert a["frames"] == 3
    assert json.dumps(a) == json.dumps(b)


def test_split_seen_in_training_is_refused(data, test_seed, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(MODELS, model)
    raw = yaml.safe_load((model / "manifest.yaml").read_text())
    raw.setdefault("training", {}).setdefault("train", {})["seeds"] = [1, test_seed]
    (model / "manifest.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    b = load_bundle(model)
    with pytest.raises(HeldOutError, match=f"{test_seed}"):
        run_network_eval(data, b, NetworkEvalConfig(max_frames=1), backend_options=ORT)
    assert _cli(["eval-model", "--data", str(data), "--models", str(model), "-q"]) == 2
    assert "not be held-out" in capsys.readouterr().err
    rep = run_network_eval(data, b, NetworkEvalConfig(max_frames=1, allow_seen_seeds=True), backend_options=ORT)
    assert rep.checks()["held_out"] is False and rep.data["seen_seeds_overlap"] == [test_seed]


def test_seeds_seen_by_the_weights_a_model_was_fine_tuned_from_count_as_seen(bundle, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(MODELS, model)
    raw = yaml.safe_load((model / "manifest.yaml").read_text())
    raw["training"] = {"train": {"seeds": [1, 2]}, "val": {"seeds": [40]},
                       "init_from": {"train_seeds": [2, 7], "val_seeds": [41], "sha256": "x"}}
    (model / "manifest.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    assert model_seen_seeds(load_bundle(model)) == {"train": [1, 2, 7], "val": [40, 41]}
    with pytest.raises(HeldOutError, match="7"):
        check_held_out("test", [7, 900], model_seen_seeds(load_bundle(model)))
    raw["training"] = {"train": {"seeds": 5}, "init_from": {"train_seeds": "7"}}  # malformed: ignored, no crash
    (model / "manifest.yaml").write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    assert model_seen_seeds(load_bundle(model)) == {}


def test_bad_data_is_refused_with_a_clear_message(data, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    shard = next((copy / "test").glob("*.npz"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(EvalDataError, match=shard.name):
        split_shards(copy, "test")
    with pytest.raises(EvalDataError, match="no 'val' shards"):
        split_shards(data, "val")
    assert _cli(["eval-model", "--data", str(copy), "-q"]) == 1
    assert "sha256" in capsys.readouterr().err
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(EvalDataError, match="manifest"):
        split_shards(copy, "test")


def test_frame_selection_spreads_over_shards():
    assert select_indices([4, 4], None) == [[0, 1, 2, 3], [0, 1, 2, 3]]
    sel = select_indices([10, 10, 10], 6)
    assert [len(s) for s in sel] == [2, 2, 2] and sel[0] == [0, 9]
    sel = select_indices([3, 10], 5)
    assert sum(len(s) for s in sel) == 5 and all(len(set(s)) == len(s) for s in sel)
    assert select_indices([5], 50) == [[0, 1, 2, 3, 4]]
    assert [len(s) for s in select_indices([3, 3, 3, 3], 6)] == [2, 2, 1, 1]  # dealt round-robin
    assert [len(s) for s in select_indices([1, 8, 8], 9)] == [1, 4, 4]  # a short shard gives its share away
