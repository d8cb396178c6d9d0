"""Where the package's shared files (config/, launch/, models/) live.

ROS mode installs them into `share/ros_fusion` (found via ament_index); pip
mode installs them under `sys.prefix/share/ros_fusion`; a source checkout
uses the repository itself. One function decides, so nothing hard-codes paths.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "ros_fusion"


@lru_cache(maxsize=1)
def share_dir() -> Path:
    candidates: list[Path] = []
    env = os.environ.get("ROS_FUSION_SHARE")
    if env:
        candidates.append(Path(env))
    # Source checkout / editable install: the repo root holds config/.
    candidates.append(Path(__file__).resolve().parent.parent)
    try:  # ROS mode
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # noqa: BLE001 - not installed through ament, or AMENT_PREFIX_PATH unset
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    for c in candidates:
        if (c / "config" / "rig_default.yaml").is_file():
            return c
    raise FileNotFoundError(
        "cannot find ros_fusion's share directory (config/rig_default.yaml); "
        "set ROS_FUSION_SHARE or reinstall the package"
    )


def config_path(name: str) -> Path:
    return share_dir() / "config" / name


def default_rig_path() -> Path:
    return config_path("rig_default.yaml")


def default_config_path() -> Path:
    return config_path("fusion.yaml")


def fastdds_profile_path() -> Path:
    return config_path("fastdds.xml")
