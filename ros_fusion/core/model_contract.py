"""The model bundle's manifest contract: what `models/export` writes and `runtime/model_bundle` reads.

Both sides take it from here so that training and deployment agree on the manifest's name, its
format tag, the stage names and the grid block without either layer importing the other
(docs/DESIGN.md §3): the writer needs torch, the reader must run without it.
"""

from __future__ import annotations

from typing import Any

from . import network_io as nio

MANIFEST_NAME = "manifest.yaml"
MANIFEST_FORMAT = "ros_fusion-model/1"
STAGE_NAMES = ("lidar", "radar", "camera", "imu", "fusion_head")


def contract_grid() -> dict[str, Any]:
    """The `grid` block a manifest must carry for this package's pre-processing to fit it."""
    return {
        "x_range": list(nio.X_RANGE),
        "y_range": list(nio.Y_RANGE),
        "cell_m": nio.CELL_M,
        "grid": nio.GRID,
        "feat": nio.FEAT,
        "lidar_channels": list(nio.LIDAR_CHANNELS),
        "radar_channels": list(nio.RADAR_CHANNELS),
        "cam_size": [nio.CAM_H, nio.CAM_W],
        "cam_z_levels": list(nio.CAM_Z_LEVELS),
        "imu_window": nio.IMU_WINDOW,
        "imu_hz": nio.IMU_HZ,
        "reg_channels": list(nio.REG_CHANNELS),
        "fused_modalities": list(nio.FUSED_MODALITIES),
    }
