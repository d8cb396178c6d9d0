"""Tables stay readable when stdout is not a terminal (CI logs, `| less`, `> file`): one row per line, no colour."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ros_fusion.commands.simulate import simulate_to_bag
from ros_fusion.console import PIPE_WIDTH, make_console
from ros_fusion.core.rig import load_rig
from ros_fusion.paths import default_rig_path

ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def short_bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("console") / "urban.mcap"
    simulate_to_bag(load_rig(default_rig_path()), "urban", 3, 1.0, out, show_progress=False)
    return out


def _run_piped(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    proc = subprocess.run([sys.executable, "-m", "ros_fusion.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_console_is_wide_and_plain_when_not_a_terminal(monkeypatch, capsys) -> None:
    from rich.table import Table

    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()  # pytest captures stdout: not a terminal
    assert console.width == PIPE_WIDTH and console.color_system is None
    t = Table(title="topics")
    for col in ("topic", "type", "count", "rate Hz", "stamp Hz", "max gap s", "size", "state"):
        t.add_column(col)
    topic = "/sensors/camera_front/image_raw/compressed"
    t.add_row(topic, "sensor_msgs/msg/CompressedImage", "255", "12.74", "12.74", "3.067", "15.2 MiB", "OK")
    console.print(t)
    out = capsys.readouterr().out
    assert not ANSI.search(out)
    row = next(line for line in out.splitlines() if topic in line)
    assert "sensor_msgs/msg/CompressedImage" in row and "15.2 MiB" in row  # the whole row on one line


def test_info_piped_keeps_every_topic_on_one_line(short_bag: Path) -> None:
    out = _run_piped("info", str(short_bag))
    assert not ANSI.search(out)
    lines = out.splitlines()
    from ros_fusion.bag.reader import BagReader

    for topic, info in BagReader(short_bag).topics.items():
        row = [line for line in lines if f" {topic} " in line]
        assert len(row) == 1, f"{topic} is not on exactly one line:\n{out}"
        assert f" {info.count} " in row[0]


def test_eval_piped_keeps_table_rows_whole(short_bag: Path, tmp_path: Path) -> None:
    out = _run_piped("eval", str(short_bag), "-o", str(tmp_path / "eval"))
    assert not ANSI.search(out)
    # Each robustness-matrix row carries its pattern, the sensors kept and a number per strategy.
    row = next(line for line in out.splitlines() if "lidar_missing" in line and "camera + radar" in line)
    assert len(re.findall(r"\d\.\d{3}", row)) >= 3, row
    stage = next(line for line in out.splitlines() if "prefetched.lidar" in line)
    assert len(re.findall(r"\d+\.\d+", stage)) >= 5, stage


def test_eval_writes_nuscenes_format_detections_and_ground_truth(short_bag: Path, tmp_path: Path) -> None:
    """`--detections FILE`: every scored frame under one token in both files, nuScenes field layout and order."""
    import json

    out = tmp_path / "det" / "urban.json"
    _run_piped("eval", str(short_bag), "--no-robustness", "--detections", str(out))
    det = json.loads(out.read_text())
    gt = json.loads((tmp_path / "det" / "urban.ground_truth.json").read_text())
    assert det["meta"]["use_lidar"] is True and det["meta"]["use_map"] is False and gt["meta"]["ground_truth"]
    assert set(det["results"]) == set(gt["results"]) and len(det["results"]) >= 8  # 1 s at 10 Hz: every frame
    token, boxes = next((t, b) for t, b in det["results"].items() if b)
    assert token.startswith(f"{short_bag.name}:")
    box = boxes[0]
    assert set(box) == {"sample_token", "translation", "size", "rotation", "velocity", "detection_name",
                        "detection_score", "attribute_name"}
    assert box["sample_token"] == token and 0.0 < box["detection_score"] <= 1.0
    w, l_, h = box["size"]
    assert 0 < w <= l_ or box["detection_name"] in ("pedestrian", "barrier")  # nuScenes: width, length, height
    assert abs(sum(q * q for q in box["rotation"]) - 1.0) < 1e-6
    cars = [b for bs in gt["results"].values() for b in bs if b["detection_name"] == "car"]
    assert cars and all(b["detection_score"] == -1.0 for b in cars)
