"""`ros-fusion --help` and every subcommand's help explain their options."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ros_fusion.cli import build_parser, main

SUBCOMMANDS = (
    "demo", "simulate", "launch", "replay", "record", "info", "convert", "dataset", "train", "export", "eval-model",
    "build-engines",
)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_subcommand_is_registered_with_help():
    subs = _subparsers(build_parser())
    assert set(SUBCOMMANDS) <= set(subs)
    for name, sub in subs.items():
        assert sub.description and len(sub.description) > 40, f"{name}: no description"
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 8, f"{name}: option {action.dest} has no help text"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_runs(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: ros-fusion {name}" in out
    assert "example" in out.lower()


def test_top_level_help_in_a_fresh_process_is_fast_to_import():
    r = subprocess.run([sys.executable, "-m", "ros_fusion.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for name in SUBCOMMANDS:
        assert name in r.stdout
    # --help must not drag in rclpy/open3d (instant help, works without a ROS environment)
    r = subprocess.run(
        [sys.executable, "-c", "import sys, ros_fusion.cli as c; c.build_parser();"
         "print(sorted(m for m in ('rclpy', 'open3d', 'rosbags', 'torch', 'onnxruntime') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_bad_arguments_give_one_clear_line(capsys, tmp_path):
    assert main(["launch", "--rig-file", str(tmp_path / "nope.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "rig_file" in err and "no such file" in err and "Traceback" not in err
    assert main(["launch", "bogus:=1", "--dry-run"]) == 2
    assert "unknown launch argument" in capsys.readouterr().err


def test_launch_dry_run_prints_the_plan(capsys):
    assert main(["launch", "--dry-run", "use_sim_time:=true"]) == 0
    out = capsys.readouterr().out
    assert "fusion_node:" in out and "-m ros_fusion.ros.fusion_node" in out
    assert "use_sim_time:=true" in out
