"""`ros-fusion simulate` end to end: reproducible bytes, readable by mcap-ros2, right counts and rates."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages

from ros_fusion.bag.info import bag_summary
from ros_fusion.commands import simulate as simulate_cmd
from ros_fusion.core.events import GROUND_TRUTH_TOPIC, RIG_TOPIC
from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import ImuSample, Obstacles, PointCloud
from ros_fusion.paths import default_rig_path
from ros_fusion.ros.bag_io import read_payloads, read_rig

DURATION = 1.0


def _simulate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ros-fusion")
    simulate_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = []
    for sub in ("a", "b"):
        d = tmp_path_factory.mktemp(sub)
        path = d / "drive.mcap"
        assert _simulate("--scenario", "urban", "--seed", "11", "--duration", str(DURATION), "-o", str(path), "-q") == 0
        out.append(path)
    return out


def test_same_seed_identical_bytes(bags: list[Path]) -> None:
    a, b = (hashlib.sha256(p.read_bytes()).hexdigest() for p in bags)
    assert a == b
    assert bags[0].stat().st_size > 100_000


def test_mcap_ros2_decodes_lidar_cloud(bags: list[Path]) -> None:
    rig = load_rig(default_rig_path())
    lidar = rig.sensors["lidar_top"]
    msgs = [m for m in read_ros2_messages(str(bags[0]), topics=[lidar.topic])]
    assert len(msgs) >= 9
    cloud = msgs[-1].ros_msg
    names = [f.name for f in cloud.fields]
    assert names[:3] == ["x", "y", "z"]
    assert cloud.header.frame_id == lidar.frame_id
    assert cloud.width * cloud.height * cloud.point_step == len(cloud.data) > 0
    # x as float32 at its declared offset: a real sweep spans metres, all finite
    off = next(f.offset for f in cloud.fields if f.name == "x")
    x = np.ndarray((cloud.width * cloud.height,), "<f4", bytes(cloud.data), off, (cloud.point_step,))
    assert np.isfinite(x).all() and np.ptp(x) > 5.0
    # log time = publish time >= header stamp (latency is positive)
    stamp = cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec
    assert msgs[-1].log_time_ns >= stamp


def test_info_counts_and_rates_match_rig(bags: list[Path]) -> None:
    rig = load_rig(default_rig_path())
    s = bag_summary(bags[0])
    assert s.metadata["scenario"] == "urban" and s.metadata["seed"] == "11"
    assert s.topic(RIG_TOPIC).count == 1
    for spec in rig.sensors.values():
        t = s.topic(spec.topic)
        expected = spec.rate_hz * DURATION
        assert abs(t.count - expected) <= 1.5, (spec.name, t.count, expected)
        assert t.stamp_rate_hz == pytest.approx(spec.rate_hz, rel=0.02), spec.name
        assert t.rate_hz == pytest.approx(spec.rate_hz, rel=0.15), spec.name  # log times carry jitter
    assert s.topic(GROUND_TRUTH_TOPIC).count >= 1


def test_payloads_and_rig_read_back(bags: list[Path]) -> None:
    rig = read_rig(bags[0])
    assert rig is not None and set(rig.sensors) == set(load_rig(default_rig_path()).sensors)
    kinds: dict[type, int] = {}
    last_t = 0
    for _topic, t, payload in read_payloads(bags[0]):
        assert t >= last_t
        last_t = t
        kinds[type(payload)] = kinds.get(type(payload), 0) + 1
    assert kinds[ImuSample] == pytest.approx(100, abs=1)
    assert kinds[PointCloud] >= 10  # lidar + radar
    assert kinds[Obstacles] >= 1


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.mcap")
    cases = [
        (["--scenario", "nowhere", "-o", out], "unknown scenario"),
        (["--scenario", "urban", "-o", out, "--fault", "explode:lidar_top@1-2"], "bad --fault"),
        (["--scenario", "urban", "-o", out, "--duration", "-1"], "--duration"),
        (["--scenario", "urban"], "--output"),
        (["--scenario", "urban", "-o", out, "--rig", str(tmp_path / "none.yaml")], "no such file"),
        (["--scenario", "urban", "-o", str(tmp_path / "missing" / "x.mcap")], "does not exist"),
    ]
    for argv, expect in cases:
        assert _simulate(*argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "x.mcap").exists()
