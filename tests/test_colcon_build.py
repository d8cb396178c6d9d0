"""ROS mode: `colcon build` of the package installs what `ros2 launch` needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLCON = Path(sys.executable).parent / "colcon"
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__", "*.mcap", ".pytest_cache",
                                ".hypothesis", ".benchmarks", "cache", "out", "*.egg-info", ".ruff_cache")


@pytest.mark.skipif(not COLCON.exists(), reason="colcon not installed (pip install -r requirements-dev.txt)")
def test_colcon_build_installs_share_and_executables(tmp_path):
    src = tmp_path / "src" / "ros_fusion"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    env = dict(os.environ)
    r = subprocess.run(
        [str(COLCON), "build", "--base-paths", "src"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = tmp_path / "install" / "ros_fusion"
    share = prefix / "share" / "ros_fusion"
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "fusion.launch.py").is_file()
    for name in ("fusion.yaml", "fusion.param.yaml", "fusion.param.schema.json", "rig_default.yaml", "fastdds.xml"):
        assert (share / "config" / name).is_file(), name
    assert (share / "models").is_dir()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "ros_fusion").is_file()
    assert os.access(prefix / "lib" / "ros_fusion" / "fusion_node", os.X_OK)
    site = next((prefix / "lib").glob("python3*/site-packages"))
    # The installed package finds its share dir through ament_index, not the source tree.
    probe = subprocess.run(
        [sys.executable, "-c", "from ros_fusion.paths import share_dir; print(share_dir())"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**env, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": f"{prefix}:{env.get('AMENT_PREFIX_PATH', '')}",
             "PYTHONSAFEPATH": "1"},
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == share
