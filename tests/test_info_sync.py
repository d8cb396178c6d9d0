"""`ros-fusion info BAG --sync [--json]` on a short simulated sensor_faults bag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ros_fusion.bag.reader import BagReader
from ros_fusion.cli import main
from ros_fusion.commands.simulate import simulate_to_bag
from ros_fusion.core.rig import load_rig
from ros_fusion.paths import default_rig_path
from ros_fusion.sim.faults import parse_fault


@pytest.fixture(scope="module")
def faults_bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("info_sync") / "faults.mcap"
    simulate_to_bag(load_rig(default_rig_path()), "sensor_faults", 11, 4.0, out, show_progress=False)
    return out


def test_info_sync_json_diagnoses_the_injected_faults(faults_bag: Path, capsys) -> None:
    assert main(["info", str(faults_bag), "--sync", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["topics"] and "sync" in d  # the plain summary is still there
    sync = d["sync"]
    sensors = {s["sensor"]: s for s in sync["sensors"]}
    assert set(sensors) == {"lidar_top", "camera_front", "radar_front", "imu", "odometry"}
    faults = {f.kind: f for f in map(parse_fault, BagReader(faults_bag).metadata["faults"].split())}
    lidar, cam, radar = sensors["lidar_top"], sensors["camera_front"], sensors["radar_front"]
    assert lidar["nominal_rate_hz"] == 10.0 and lidar["rate_hz"] == pytest.approx(10.0, rel=0.02)
    # frozen LiDAR: flagged inside the freeze window (bag-relative seconds, ~one period of slack)
    fr = faults["freeze"]
    assert lidar["frozen_messages"] >= 2
    (a, b), *_ = lidar["frozen_windows_s"]
    assert fr.start_s - 0.1 <= a and b <= fr.end_s + 0.15
    # dropped camera: one gap spanning the drop window
    dr = faults["drop"]
    assert cam["gaps"] == 1 and cam["max_gap_s"] == pytest.approx(dr.end_s - dr.start_s, abs=0.15)
    # delayed radar: stamps went back once, log - stamp grows by the delay
    assert radar["stamps_backwards"] >= 1
    assert radar["offset_ms_max"] >= 1000 * faults["delay"].value
    assert 10.0 < lidar["offset_ms_p50"] < 15.0  # the rig's 12 ms LiDAR latency
    # the synchroniser: one bundle per sweep, the LiDAR always in it, the camera missing during its drop
    n_sweeps = lidar["count"]
    assert sync["bundles_reference"] == n_sweeps and lidar["matched_pct"] == pytest.approx(100 * n_sweeps /
                                                                                            sync["bundles"])
    assert 60.0 < cam["matched_pct"] < 95.0
    assert sensors["imu"]["matched_pct"] > 95.0 and sensors["imu"]["age_ms_max"] <= 5.0
    assert 0.0 < sync["wait_ms_p50"] <= sync["wait_ms_max"] < 200.0


def test_info_sync_table(faults_bag: Path, capsys) -> None:
    assert main(["info", str(faults_bag), "--sync"]) == 0
    out = capsys.readouterr().out
    assert "Timing of" in out and "synchroniser (reference lidar_top" in out
    assert "lidar_top" in out and "(ref)" in out  # narrow terminals fold the cell


def test_info_sync_errors_are_one_line(faults_bag: Path, tmp_path: Path, capsys) -> None:
    assert main(["info", str(faults_bag), "--sync", "--reference", "lidar_roof"]) != 0
    err = capsys.readouterr().err
    assert "lidar_roof" in err and "Traceback" not in err
    bad = tmp_path / "rig.yaml"
    bad.write_text("sensors: {x: {modality: lidar}}")
    assert main(["info", str(faults_bag), "--sync", "--rig", str(bad)]) != 0
    assert "sensors.x" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.mcap"), "--sync"]) != 0
