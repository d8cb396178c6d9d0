"""`ros-fusion bench` and `eval/bench.py`: report shape, scaling relations, rigs, inputs, CLI errors.

Kept fast (tiny K, one short drive shared by the module): the timing tests check *relations*
between configurations (more points → more LiDAR pre-processing, more cameras → more camera
encoding), never wall-clock thresholds, so they hold on a loaded CI machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import cache

import numpy as np
import pytest

from ros_fusion.cli import main
from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import Modality, PointCloud
from ros_fusion.eval import bench as B
from ros_fusion.paths import default_rig_path

pytest.importorskip("onnxruntime")

STAT_KEYS = {"p50", "p95", "p99", "max", "mean", "min"}
CONFIG_KEYS = {
    "cameras", "points", "strategy", "bundles", "warmup", "stages_ms", "stage_groups_ms", "end_to_end_ms",
    "throughput_hz", "cpu_ms_per_bundle", "cpu_percent", "wall_s", "rss_mib", "rss_peak_mib", "lidar_period_ms",
    "realtime", "modes", "detections_mean", "counters",
}


@cache
def _rig():
    return load_rig(default_rig_path())


@cache
def _model():
    from ros_fusion.commands.eval import load_model_and_backend

    return load_model_and_backend(None, "onnxruntime", 2)


@cache
def _drive() -> B.SimulatedDrive:
    return B.simulate_inputs(_rig(), 4, seed=0)


def _bench(cameras: int, points: int, strategy: str, bundles: int = 3) -> B.ConfigResult:
    model, backend = _model()
    return B.bench_configuration(_drive(), model, backend, cameras, points, strategy, bundles, warmup=1, seed=0)


def _check_stats(s: dict, where: str) -> None:
    assert set(s) == STAT_KEYS, where
    for k, v in s.items():
        assert isinstance(v, float) and math.isfinite(v) and v > 0, f"{where}.{k} = {v!r}"
    assert s["min"] <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"], where


# ----------------------------------------------------------------------------- the report through the CLI
def test_cli_bench_json_has_every_key_with_sane_numbers(tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "bench.json"
    rc = main(["bench", "--cameras", "1", "--points", "20k", "--strategies", "intermediate,late", "--bundles", "2",
               "--warmup", "1", "-q", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = out.read_text()
    d = json.loads(text)
    assert text == json.dumps(d, sort_keys=True, indent=2) + "\n"  # deterministic (sorted) key order
    assert d["schema"] == B.SCHEMA
    m = d["machine"]
    assert m["cpu_count"] >= 1 and m["threads"] == 2 and "onnxruntime" in m["backend"]
    assert m["onnxruntime"]["version"] and "CPUExecutionProvider" in m["onnxruntime"]["providers"]
    assert d["settings"]["points"] == [20000] and d["settings"]["bundles"] == 2 and d["realtime"] is None
    confs = d["configurations"]
    assert [(c["cameras"], c["points"], c["strategy"]) for c in confs] == [(1, 20000, "intermediate"),
                                                                          (1, 20000, "late")]
    for c in confs:
        where = f"{c['strategy']}"
        assert set(c) == CONFIG_KEYS, where
        assert c["modes"] == {c["strategy"]: 2}  # the forced strategy really ran, on every bundle
        _check_stats(c["end_to_end_ms"], where + ".end_to_end")
        for name, s in c["stages_ms"].items():
            _check_stats(s, f"{where}.{name}")
        for name, s in c["stage_groups_ms"].items():
            _check_stats(s, f"{where}.group.{name}")
        assert {"encode.camera", "encode.lidar", "encode.radar"} <= set(c["stages_ms"])
        for k in ("throughput_hz", "cpu_ms_per_bundle", "cpu_percent", "wall_s", "rss_mib", "rss_peak_mib"):
            assert math.isfinite(c[k]) and c[k] > 0, f"{where}.{k}"
        assert c["throughput_hz"] == pytest.approx(1e3 / c["end_to_end_ms"]["mean"])
        # every stage ran inside the bundle's total
        assert c["end_to_end_ms"]["max"] >= max(s["min"] for s in c["stages_ms"].values())
        assert c["realtime"] == (c["end_to_end_ms"]["p99"] < c["lidar_period_ms"])
    late = confs[1]["stages_ms"]
    assert {"late.preprocess.lidar", "late.merge"} <= set(late)


# ----------------------------------------------------------------------------- scaling relations
def _median_p50(a: tuple[int, int, str], b: tuple[int, int, str], stage: str, rounds: int = 3
                ) -> tuple[float, float, list[B.ConfigResult]]:
    """Median over `rounds` of each configuration's p50 of `stage`, the two run alternately.

    Alternating matters on a shared CI machine: a burst of load from another process then
    slows both configurations, instead of deciding which one looks faster.
    """
    pa, pb, results = [], [], []
    for _ in range(rounds):
        ra, rb = _bench(*a), _bench(*b)
        pa.append(ra.stages[stage]["p50"])
        pb.append(rb.stages[stage]["p50"])
        results += [ra, rb]
    return float(np.median(pa)), float(np.median(pb)), results


def test_more_points_cost_more_lidar_preprocessing() -> None:
    key = "late.preprocess.lidar"  # the LiDAR raster alone (late fusion pre-processes each modality apart)
    small, large, results = _median_p50((1, 30_000, "late"), (1, 250_000, "late"), key)
    assert large > small
    for r in results:
        assert not any(k.startswith("ego_unavailable") for k in r.counters), r.counters  # IMU feeding worked


def test_more_cameras_cost_more_camera_encoding() -> None:
    one, three, results = _median_p50((1, 30_000, "intermediate"), (3, 30_000, "intermediate"), "encode.camera")
    assert three >= one
    assert all(r.modes == {"intermediate": 3} for r in results)


# ----------------------------------------------------------------------------- rigs and inputs
def test_scaled_rig_clones_the_front_camera_around_the_car() -> None:
    base = _rig()
    front = base.of(Modality.CAMERA)[0]
    rig = B.scaled_rig(base, 3)
    cams = rig.of(Modality.CAMERA)
    assert [c.name for c in cams] == ["camera_0", "camera_1", "camera_2"]
    assert len({c.topic for c in cams}) == 3
    for k, c in enumerate(cams):
        assert np.allclose(c.intrinsics.K, front.intrinsics.K)
        axis = c.extrinsic[:3, 2]  # optical z axis in base_link
        yaw = math.atan2(axis[1], axis[0])
        assert math.isclose(math.remainder(yaw - 2 * math.pi * k / 3, 2 * math.pi), 0.0, abs_tol=1e-6)
        assert math.isclose(c.extrinsic[2, 3], front.extrinsic[2, 3])  # same mounting height
    assert np.allclose(cams[0].extrinsic, front.extrinsic)
    others = {n for n, s in base.sensors.items() if s.modality != Modality.CAMERA}
    assert others <= set(rig.sensors)
    for bad in (0, 7, True, 2.0):
        with pytest.raises(ValueError, match="n_cameras"):
            B.scaled_rig(base, bad)


def test_resample_cloud_keeps_fields_order_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    pts = np.zeros(500, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4"), ("t", "f4")])
    pts["x"] = np.arange(500)
    pts["t"] = np.linspace(-0.1, 0.0, 500)
    cloud = PointCloud(123, "lidar_top", pts)
    a = B.resample_cloud(cloud, 2000, np.random.default_rng(1))
    b = B.resample_cloud(cloud, 2000, np.random.default_rng(1))
    c = B.resample_cloud(cloud, 2000, rng)
    assert len(a) == 2000 and a.points.dtype == pts.dtype and a.stamp_ns == 123
    assert np.array_equal(a.points, b.points) and not np.array_equal(a.points, c.points)
    assert np.all(np.diff(a.points["x"]) >= 0)  # scan order kept
    assert np.array_equal(a.points["t"], pts["t"][a.points["x"].astype(int)])  # whole original rows
    with pytest.raises(ValueError, match="empty"):
        B.resample_cloud(PointCloud(1, "l", pts[:0]), 10, rng)
    with pytest.raises(ValueError, match="n_points"):
        B.resample_cloud(cloud, 0, rng)


def test_bundle_source_has_every_sensor_and_time_moves_forward_across_cycles() -> None:
    drive = _drive()
    rig = B.scaled_rig(_rig(), 2)
    src = B.BundleSource(drive, rig, 1000, seed=0)
    fed: list[int] = []
    ts = []
    for _ in range(2 * len(drive.sweeps) + 1):  # past the end of the simulated sweeps twice
        b = src.next(lambda s: fed.append(int(s.stamp_ns)))
        ts.append(b.t_ns)
        assert {"lidar_top", "camera_0", "camera_1", "radar_front", "imu"} <= set(b.members)
        assert b.missing == frozenset(set(rig.sensors) - set(b.members))
        assert len(b.members["lidar_top"].payload) == 1000
        assert fed and fed[-1] >= b.t_ns  # ego-motion covers the bundle time
    assert np.all(np.diff(ts) > 0) and np.all(np.diff(fed) > 0)


def test_stats_and_option_parsing() -> None:
    s = B.stats_ms([4.0, 1.0, 3.0, 2.0])
    assert s["p50"] == 2.5 and s["max"] == 4.0 and s["min"] == 1.0 and s["mean"] == 2.5
    with pytest.raises(ValueError, match="no samples"):
        B.stats_ms([])
    assert B.parse_int_list("30k, 100_000,250000", "points", 1, B.MAX_POINTS) == (30000, 100000, 250000)
    for bad, match in (("1,,3", "empty"), ("x", "not an integer"), ("0", "outside"), ("7", "outside"),
                       ("1,1", "duplicate")):
        with pytest.raises(ValueError, match=match):
            B.parse_int_list(bad, "cameras", 1, 6)
    with pytest.raises(ValueError, match="strategies"):
        B.parse_strategies("intermediate,auto")
    for bad in ({"bundles": 0}, {"warmup": -1}, {"threads": 0}, {"seed": -1}, {"realtime_s": float("nan")},
                {"cameras": (0,)}, {"points": ()}, {"scenario": "moon"}, {"strategies": ("late", "late")}):
        with pytest.raises(ValueError, match=next(iter(bad)).removesuffix("_s")):
            B.BenchConfig(**bad).check()


def test_write_report_refuses_a_directory(tmp_path) -> None:
    rep = B.BenchReport(B.BenchConfig(), {"cpu_count": 1})
    with pytest.raises(ValueError, match="directory"):
        B.write_report(rep, tmp_path)
    p = B.write_report(rep, tmp_path / "r.json")
    assert json.loads(p.read_text())["configurations"] == []


# ----------------------------------------------------------------------------- real-time replay
def test_realtime_replay_accounts_for_every_bundle() -> None:
    model, backend = _model()
    r = B.realtime_replay(_rig(), model, backend, 1.5, seed=0)
    assert r.bundles_emitted >= 10  # 10 Hz LiDAR over 1.5 s (plus watchdog bundles before the first sweep)
    assert r.bundles_processed + r.bundles_dropped + r.bundles_failed == r.bundles_emitted
    assert r.bundles_failed == 0 and r.latency is not None and r.sync_wait is not None
    assert 0 < r.latency["min"] <= r.latency["p50"] <= r.latency["p99"] <= r.latency["max"]
    assert r.latency["p50"] >= r.sync_wait["p50"]  # the synchroniser's wait is part of the latency
    with pytest.raises(ValueError, match="seconds"):
        B.realtime_replay(_rig(), model, backend, 0.0)


# ----------------------------------------------------------------------------- CLI
def test_cli_help_works() -> None:
    r = subprocess.run([sys.executable, "-m", "ros_fusion.cli", "bench", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    for opt in ("--cameras", "--points", "--strategies", "--bundles", "--threads", "--backend", "--seed",
                "--realtime", "--quick", "--output", "examples:"):
        assert opt in r.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--cameras", "0"], "--cameras: 0 is outside [1, 6]"),
    (["--cameras", "7"], "--cameras: 7 is outside [1, 6]"),
    (["--points", "-5"], "--points: -5 is outside"),
    (["--bundles", "0"], "--bundles: must be an integer"),
    (["--strategies", "fastest"], "--strategies: 'fastest' is not one of intermediate, late"),
    (["--realtime", "-1"], "--realtime: must be a number of seconds"),
])
def test_cli_bad_values_exit_nonzero_with_a_clear_message(argv, message, capsys) -> None:
    rc = main(["bench", *argv, "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"ros-fusion bench: error: {message}" in err
