"""eval/report.py and eval/plots.py: robustness matrix, latency statistics, deterministic JSON, report files, BEV."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from ros_fusion.core.types import Obstacles
from ros_fusion.eval.detection_metrics import EvalConfig
from ros_fusion.eval.network_eval import PATTERNS
from ros_fusion.eval.plots import BevScene, box_corners_bev, render_bev
from ros_fusion.eval.report import (
    coverage_matrix,
    describe_startup,
    latency_stats,
    metrics_to_json,
    render_console,
    robustness_matrix,
    startup_latency,
    write_outputs,
)

CLASSES = ("car", "truck", "bus", "pedestrian", "cyclist", "barrier")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make(rows, labels, scores=None) -> Obstacles:
    b = np.asarray(rows, np.float32).reshape(-1, 9)
    n = len(b)
    s = np.linspace(0.9, 0.5, n).astype(np.float32) if scores is None else np.asarray(scores, np.float32)
    return Obstacles(0, "base_link", b, s, np.asarray(labels, np.int32), np.zeros((n, 3), np.float32))


def gt_frame(k: int) -> Obstacles:
    rows = [[10 + k, 5, 0.8, 4.5, 1.9, 1.6, 0.1, 3, 0], [-20, -8 + k, 0.8, 4.5, 1.9, 1.6, 1.0, 0, 0],
            [15, -12, 0.9, 0.7, 0.7, 1.75, 0, 1, 1]]
    return make(rows, [0, 0, 3])


def shifted(gt: Obstacles, dx: float, keep: int | None = None) -> Obstacles:
    b = gt.boxes.copy()
    b[:, 0] += dx
    n = len(b) if keep is None else keep
    return make(b[:n], gt.labels[:n])


def hand_runs() -> dict[tuple[str, str], list[tuple[Obstacles, Obstacles]]]:
    """all: intermediate perfect, late 0.7 m off, auto = intermediate; lidar_only: late perfect, intermediate misses."""
    gts = [gt_frame(k) for k in range(4)]
    return {
        ("lidar_only", "late"): [(g, shifted(g, 0.0)) for g in gts],
        ("lidar_only", "intermediate"): [(g, shifted(g, 0.0, keep=1)) for g in gts],
        ("lidar_only", "auto"): [(g, shifted(g, 0.0, keep=1)) for g in gts],  # auto picked badly here
        ("all", "auto"): [(g, shifted(g, 0.0)) for g in gts],
        ("all", "late"): [(g, shifted(g, 0.7)) for g in gts],
        ("all", "intermediate"): [(g, shifted(g, 0.0)) for g in gts],
    }


# ----------------------------------------------------------------------------- robustness matrix
def test_robustness_matrix_orders_and_picks_the_best_strategy():
    rob = robustness_matrix(hand_runs(), EvalConfig(classes=CLASSES))
    assert rob["patterns"] == ["all", "lidar_only"]  # PATTERNS order, not insertion order
    assert rob["strategies"] == ["intermediate", "late", "auto"]
    assert rob["mAP"]["all"]["intermediate"] == pytest.approx(1.0)
    assert rob["mAP"]["all"]["late"] < 0.9  # 0.7 m off fails the 0.5 m threshold
    assert rob["mAP"]["lidar_only"]["late"] == pytest.approx(1.0)
    assert rob["mAP"]["lidar_only"]["intermediate"] < 0.7
    assert rob["best"] == {"all": "intermediate", "lidar_only": "late"}
    assert rob["auto_ok"] == {"all": True, "lidar_only": False}
    assert rob["n_frames"]["all"]["late"] == 4
    assert 0 < rob["NDS"]["all"]["late"] < rob["NDS"]["all"]["intermediate"]


def test_robustness_matrix_without_auto_and_with_unknown_names():
    runs = {k: v for k, v in hand_runs().items() if k[1] != "auto"}
    runs[("zz_custom", "late")] = runs[("all", "late")]
    runs[("all", "another")] = runs[("all", "late")]
    rob = robustness_matrix(runs, EvalConfig(classes=CLASSES))
    assert "auto_ok" not in rob
    assert rob["patterns"] == ["all", "lidar_only", "zz_custom"]
    assert rob["strategies"] == ["intermediate", "late", "another"]
    assert "another" not in rob["mAP"]["lidar_only"]  # a cell that was not run is absent, not 0
    assert rob["best"]["zz_custom"] == "late"


def test_robustness_matrix_cells_without_ground_truth_never_win():
    empty = Obstacles.empty(0)
    runs = {("all", "intermediate"): [(empty, empty)], ("all", "auto"): [(empty, empty)]}
    rob = robustness_matrix(runs)
    assert math.isnan(rob["mAP"]["all"]["intermediate"])
    assert rob["best"]["all"] is None and rob["auto_ok"]["all"] is None


@pytest.mark.parametrize("runs", [{("all",): []}, {("all", ""): []}, {("all", "late"): [("x", "y")]}, [1, 2]])
def test_robustness_matrix_rejects_malformed_input(runs):
    with pytest.raises(ValueError, match="robustness_matrix"):
        robustness_matrix(runs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- in-coverage matrix
def test_coverage_matrix_scores_each_cell_against_all_sensors_on_its_region(tmp_path):
    gts = [gt_frame(k) for k in range(4)]
    runs = {
        # the pattern finds 1 of 3 boxes where all sensors find all 3: ratio well below 1
        ("lidar_missing", "auto"): [(g, shifted(g, 0.0, keep=1), shifted(g, 0.0)) for g in gts],
        ("lidar_missing", "late"): [(g, shifted(g, 0.0), shifted(g, 0.0)) for g in gts],
        # the all-sensor detections miss everything: no ratio can be formed
        ("all", "auto"): [(g, shifted(g, 0.0), Obstacles.empty(0)) for g in gts],
    }
    cov = coverage_matrix(runs, EvalConfig(classes=CLASSES))
    assert cov["patterns"] == ["all", "lidar_missing"] and cov["strategies"] == ["late", "auto"]
    auto = cov["cells"]["lidar_missing"]["auto"]
    assert auto["n_gt"] == 12 and auto["all_sensors_mAP"] == pytest.approx(1.0)
    assert 0 < auto["ratio"] < 0.7 and auto["ratio"] == pytest.approx(auto["mAP"])
    assert cov["cells"]["lidar_missing"]["late"]["ratio"] == pytest.approx(1.0)
    assert cov["cells"]["all"]["auto"]["ratio"] is None
    md = write_outputs(tmp_path, {"robustness_in_coverage": cov})[1].read_text()
    assert "Robustness inside the kept sensors' coverage" in md
    assert f"| lidar_missing | 12 | 1.000 | {auto['mAP']:.3f} | 1.000 | {auto['ratio']:.2f} |" in md


@pytest.mark.parametrize("runs", [{("all",): []}, {("all", "late"): [("x", "y", "z")]},
                                  {("all", "late"): [(Obstacles.empty(0), Obstacles.empty(0))]}, [1]])
def test_coverage_matrix_rejects_malformed_input(runs):
    with pytest.raises(ValueError, match="coverage_matrix"):
        coverage_matrix(runs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- latency
def test_latency_stats_percentiles_on_known_data():
    samples = [{"encode": float(v), "total": 2.0 * v} for v in range(1, 101)]  # 1..100 ms
    samples.append({"total": 500.0})  # a sample without `encode` does not count for it
    st = latency_stats(samples)
    enc = st["encode"]
    assert enc["n"] == 100
    assert enc["p50"] == pytest.approx(50.5)  # linear interpolation between 50 and 51
    assert enc["p95"] == pytest.approx(95.05)
    assert enc["p99"] == pytest.approx(99.01)
    assert enc["max"] == 100.0 and enc["mean"] == pytest.approx(50.5)
    assert st["total"]["n"] == 101 and st["total"]["max"] == 500.0
    assert st["total"]["p50"] == pytest.approx(102.0)  # 2*(1..100) ∪ {500}: the 51st of 101 values
    assert latency_stats([]) == {}
    assert latency_stats([{"a": 3}])["a"] == {"p50": 3.0, "p95": 3.0, "p99": 3.0, "max": 3.0, "mean": 3.0, "n": 1}


@pytest.mark.parametrize("bad", [[{"a": float("nan")}], [{"a": "3"}], [{"a": math.inf}], [[1.0]], [{"": 1.0}]])
def test_latency_stats_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="latency_stats"):
        latency_stats(bad)


# ----------------------------------------------------------------------------- JSON
def test_metrics_to_json_is_deterministic_and_plain():
    a = {"b": np.float32(0.1234567891), "a": [np.int64(3), np.nan, np.inf, -np.inf],
         "c": {"z": np.array([1.0, 2.0 / 3.0]), 0.5: True, ("all", "late"): np.bool_(False)},
         "d": (Path("x/y"), None, -0.0), "e": 123456789.123}
    b = dict(reversed(list(a.items())))  # same content, other insertion order
    ja, jb = metrics_to_json(a), metrics_to_json(b)
    assert ja == jb
    doc = json.loads(ja)
    assert doc["a"] == [3, None, None, None]
    assert doc["b"] == 0.123457
    assert doc["c"] == {"0.5": True, "all/late": False, "z": [1.0, 0.666667]}
    assert doc["d"] == ["x/y", None, 0.0]
    assert doc["e"] == 123457000.0
    assert list(doc) == sorted(doc)
    assert "NaN" not in ja and "Infinity" not in ja
    rob = robustness_matrix(hand_runs(), EvalConfig(classes=CLASSES))
    assert metrics_to_json({"robustness": rob}) == metrics_to_json({"robustness": robustness_matrix(
        hand_runs(), EvalConfig(classes=CLASSES))})


def test_metrics_to_json_rejects_what_has_no_json_form():
    with pytest.raises(ValueError, match="object at x.y"):
        metrics_to_json({"x": {"y": object()}})
    with pytest.raises(ValueError, match="both become"):
        metrics_to_json({1: 1, "1": 2})
    with pytest.raises(ValueError, match="mapping"):
        metrics_to_json([1, 2])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- write_outputs
def full_metrics() -> dict:
    rob = robustness_matrix(hand_runs(), EvalConfig(classes=CLASSES))
    return {
        "run": {"bags": ["data/drive_a.mcap", "data/drive_b.mcap"], "strategy": "auto", "model": "models/",
                "backend": "onnxruntime (CPU)", "seed": 0, "config": {"max_range": 50.0}},
        "summary": {"mAP": 0.61234, "NDS": 0.55, "trans_err": 0.3, "scale_err": 0.12, "orient_err": 0.2,
                    "vel_err": 0.8, "per_class_AP": {"car": 0.72, "pedestrian": 0.5, "bus": float("nan")},
                    "per_band_mAP": {"0-20": 0.8, "20-35": 0.6, "35-50": 0.31}, "n_gt": {"car": 40, "bus": 0},
                    "n_frames": 120},
        "per_mode": {"intermediate": {"n_bundles": 100, "n_frames": 98, "mAP": 0.65},
                     "late": {"n_bundles": 22, "n_frames": 22, "mAP": 0.41}},
        "robustness": rob,
        "latency_ms": latency_stats([{"encode": 10.0 + k, "fusion": 3.0, "total": 15.0 + k} for k in range(20)])
        | {"node_p50.total": {"p50": 17.0}},
        "mode_switches": [{"t_s": 5.02, "from": "intermediate", "to": "late", "reason": "camera stale [timeout]"},
                          {"t_s": 8.4, "from": "late", "to": "intermediate", "reason": "healthy | 3 bundles"}],
        "faults": [{"sensor": "camera_front", "kind": "drop", "t0_s": 5.0, "t1_s": 8.0}],
        "drops": {"bundles_dropped": 2},
        "devkit": {"mAP": 0.61234, "per_class_AP": {"car": 0.72, "pedestrian": 0.5, "bus": None}},
    }


def is_png(p: Path) -> tuple[int, int]:
    data = p.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, p
    w, h = struct.unpack(">II", data[16:24])  # IHDR width/height
    return w, h


def test_write_outputs_writes_every_file_and_the_tables(tmp_path):
    gt = gt_frame(0)
    bev = BevScene(gt=gt, pred=shifted(gt, 0.3), classes=CLASSES, lidar_xyz=np.random.default_rng(0).normal(
        0, 20, (1000, 3)), title="drive_a t=3.0s", mode="intermediate")
    out = tmp_path / "eval" / "run1"
    paths = write_outputs(out, full_metrics(), bev=bev)
    names = {p.name for p in paths}
    assert names == {"metrics.json", "report.md", "robustness.png", "per_class_ap.png", "range_bands.png",
                     "latency.png", "bev.png"}
    assert all(p.parent == out and p.exists() for p in paths)
    for p in paths:
        if p.suffix == ".png":
            w, h = is_png(p)
            assert w > 200 and h > 200
    assert is_png(out / "bev.png") == (900, 900)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["robustness"]["best"] == {"all": "intermediate", "lidar_only": "late"}
    assert doc["summary"]["per_class_AP"]["bus"] is None
    md = (out / "report.md").read_text()
    assert md.startswith("# ")
    assert "`data/drive_a.mcap`" in md and "onnxruntime (CPU)" in md
    assert "| mAP | 0.612 |" in md
    assert "| car | 0.720 | 40 | 0.720 |" in md
    assert "| 35-50 | 0.310 |" in md
    assert "| all | camera + lidar + radar | **1.000** |" in md  # best of its row in bold
    lidar_row = next(line for line in md.splitlines() if line.startswith("| lidar_only |"))
    assert "**1.000**" in lidar_row and "✗" in lidar_row  # late best; auto not within 0.01 of it
    assert "✓" in next(line for line in md.splitlines() if line.startswith("| all |"))
    assert "| encode | 20 | 19.500 | 19.500 |" in md
    assert "| node_p50.total | — | — | 17.000 |" in md
    assert "| intermediate | 100 | 98 | 0.650 |" in md
    assert "2 mode switches." in md and "healthy \\| 3 bundles" in md  # a pipe in data cannot break the table
    assert "| camera_front | drop |" in md and "| bundles_dropped | 2 |" in md
    for png in ("robustness.png", "per_class_ap.png", "range_bands.png", "latency.png", "bev.png"):
        assert f"({png})" in md


def test_write_outputs_is_deterministic(tmp_path):
    m = full_metrics()
    write_outputs(tmp_path / "a", m)
    write_outputs(tmp_path / "b", m)
    for name in ("metrics.json", "report.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_partial_metrics_write_only_what_they_have(tmp_path):
    paths = write_outputs(tmp_path, {"summary": {"n_frames": 0}})
    assert sorted(p.name for p in paths) == ["metrics.json", "report.md"]
    md = (tmp_path / "report.md").read_text()
    assert "| frames scored | 0 |" in md and "Robustness" not in md and ".png" not in md
    paths = write_outputs(tmp_path / "lat", {"latency_ms": {"end_to_end": {"p50": 12.0}}})
    assert sorted(p.name for p in paths) == ["latency.png", "metrics.json", "report.md"]
    assert write_outputs(tmp_path / "empty", {})[1].read_text().startswith("# ")
    only_rob = {"robustness": robustness_matrix({k: v for k, v in hand_runs().items() if k[0] == "all"})}
    assert [p.name for p in write_outputs(tmp_path / "rob", only_rob)][2:] == ["robustness.png"]


def test_write_outputs_rejects_malformed_sections(tmp_path):
    with pytest.raises(ValueError, match="summary"):
        write_outputs(tmp_path / "x", {"summary": [1, 2]})
    with pytest.raises(ValueError, match="mapping"):
        write_outputs(tmp_path / "y", [])  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        write_outputs(tmp_path / "file", {})


def test_render_console_tables():
    from rich.console import Console
    from rich.table import Table

    tables = render_console(full_metrics())
    assert tables and all(isinstance(t, Table) for t in tables)
    console = Console(width=200, record=True, color_system=None)
    for t in tables:
        console.print(t)
    text = console.export_text()
    assert "lidar_only" in text and "0.612" in text and "camera stale [timeout]" in text  # markup stays literal
    assert "node_p50.total" in text
    assert render_console({}) == []
    assert len(render_console({"latency_ms": latency_stats([{"a": 1.0}])})) == 1


# ----------------------------------------------------------------------------- BEV
def test_box_corners_bev_by_hand():
    c = box_corners_bev(np.array([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]]))
    assert c.shape == (1, 4, 2)
    assert c[0] == pytest.approx(np.array([[3, 3], [3, 1], [-1, 1], [-1, 3]]))
    # yaw 90°: the length lies along y, the front edge at +y
    c = box_corners_bev(np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2]]))[0]
    assert np.ptp(c[:, 1]) == pytest.approx(4.0) and np.ptp(c[:, 0]) == pytest.approx(2.0)
    assert c[:2, 1] == pytest.approx([2.0, 2.0])  # front-left, front-right at y = +l/2
    assert c[0] == pytest.approx([-1.0, 2.0])  # front-left is at -x when heading +y
    assert box_corners_bev(np.zeros((0, 9))).shape == (0, 4, 2)
    with pytest.raises(ValueError, match="box_corners_bev"):
        box_corners_bev(np.zeros((3, 5)))


def test_render_bev_draws_a_900_px_picture(tmp_path):
    gt = gt_frame(1)
    pred = make(np.vstack([shifted(gt, 0.4).boxes, [[np.nan, 0, 0, 1, 1, 1, 0, 0, 0]]]), [0, 0, 3, 4])
    pts = np.random.default_rng(1).uniform(-60, 60, (120_000, 3))  # over the 50k budget: subsampled
    p = render_bev(tmp_path / "sub" / "bev.png", BevScene(gt, pred, CLASSES, pts, "t", 50.0, "late"))
    assert p.exists() and is_png(p) == (900, 900)
    p2 = render_bev(tmp_path / "bare.png", BevScene(Obstacles.empty(0), Obstacles.empty(0), CLASSES))
    assert is_png(p2) == (900, 900)


def test_bev_scene_rejects_bad_input(tmp_path):
    gt = gt_frame(0)
    with pytest.raises(ValueError, match="range_m"):
        BevScene(gt, gt, CLASSES, range_m=-5.0)
    with pytest.raises(ValueError, match="classes"):
        BevScene(gt, gt, ())
    with pytest.raises(ValueError, match="lidar_xyz"):
        BevScene(gt, gt, CLASSES, lidar_xyz=np.zeros(5))
    with pytest.raises(ValueError, match="label 3"):
        render_bev(tmp_path / "x.png", BevScene(gt, gt, ("car", "truck")))


def test_patterns_are_the_network_eval_ones():
    runs = {(p, "late"): [(gt_frame(0), gt_frame(0))] for p in reversed(list(PATTERNS))}
    assert robustness_matrix(runs)["patterns"] == list(PATTERNS)


def test_startup_latency_splits_at_the_window() -> None:
    # 10 Hz for 20 s: the first 5 s slow (200 ms, one 400 ms outlier), the rest 100 ms.
    t = np.arange(200) * 0.1
    lat = np.where(t < 5.0, 200.0, 100.0)
    lat[3] = 400.0
    st = startup_latency(t.tolist(), lat.tolist())
    assert (st["n_first"], st["n_rest"]) == (50, 150)
    assert st["p99_first_ms"] == pytest.approx(np.percentile(lat[:50], 99))
    assert st["p99_rest_ms"] == pytest.approx(100.0)
    assert st["max_first_ms"] == 400.0
    assert st["p99_ratio"] == pytest.approx(st["p99_first_ms"] / 100.0)
    line = describe_startup(st | {"frames_without_output_first": 2})
    assert f"(ratio {st['p99_ratio']:.2f})" in line and "frames without output 2" in line
    assert "not a comparison" not in line
    # the window's slowest outputs, in drive order: the outlier at 0.3 s and two of the 200 ms ones
    assert len(st["slowest_first"]) == 3 and [0.3, 400.0] in st["slowest_first"]
    assert all(v == 200.0 for t_s, v in st["slowest_first"] if t_s != 0.3)
    assert "slowest at" in line and "0.3 s (400 ms)" in line


def test_startup_latency_without_one_side_has_no_ratio() -> None:
    only_first = startup_latency([0.0, 1.0, 2.0], [50.0, 60.0, 70.0])
    assert only_first["n_rest"] == 0 and only_first["p99_rest_ms"] is None and only_first["p99_ratio"] is None
    assert "ratio -" in describe_startup(only_first)
    only_rest = startup_latency([6.0, 7.0], [50.0, 60.0])
    assert only_rest["p99_first_ms"] is None and only_rest["max_first_ms"] is None and only_rest["p99_ratio"] is None
    assert only_rest["slowest_first"] == [] and "slowest at" not in describe_startup(only_rest)
    with pytest.raises(ValueError, match="2 times for 3 latencies"):
        startup_latency([0.0, 1.0], [1.0, 2.0, 3.0])


def test_describe_startup_flags_a_rest_shorter_than_the_window() -> None:
    """A 6 s smoke drive: 50 outputs in the window, 10 after: the 'rest' p99 is just its max."""
    t = np.arange(60) * 0.1
    st = startup_latency(t.tolist(), [100.0] * 60)
    assert "only 10 outputs after the window: not a comparison" in describe_startup(st)
