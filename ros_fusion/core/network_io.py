"""The contract between pre-processing (numpy), the network (torch/ONNX) and decoding (docs/DESIGN.md §7).

Names, shapes and channel meanings of every network input and output live
here, once: the numpy pre-processing fills them, the torch model and its ONNX
export are built against them, and the runtime backends feed them by name. A
change here is a change of model version (the manifest records these values).

Shapes are for one sample; the network adds a leading batch dimension B.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .types import DEFAULT_CLASSES

# --- BEV grid (docs/DESIGN.md §4) ----------------------------------------------------------------
X_RANGE = (-51.2, 51.2)
Y_RANGE = (-51.2, 51.2)
CELL_M = 0.8
GRID = 128  # input rasters: GRID x GRID cells, row = x index, col = y index
FEAT = 64  # feature maps and head outputs: stride 2

# --- inputs -------------------------------------------------------------------------------
#: LiDAR pillar statistics of ONE sweep per 0.8 m cell (all float32, normalised to ~[0, 1]).
LIDAR_SWEEP_CHANNELS: tuple[str, ...] = (
    "occupancy",  # log1p(count) / log1p(64)
    "z_max",  # (z_max - Z_MIN) / (Z_MAX - Z_MIN), 0 where empty
    "z_min",
    "z_mean",
    "intensity_mean",
    "slice_low",  # fraction of the cell's points with z in [0.2, 1.0) m
    "slice_mid",  # [1.0, 2.0) m
    "slice_high",  # [2.0, 4.0) m
)
#: Sweeps in the LiDAR input, newest first: the sweep that triggered T, then the one before it,
#: both deskewed into base_link at T (ego motion removed, so what moved between them is the
#: objects). One sweep cannot tell an object's speed, and a car at 15 m/s moves 1.5 m between
#: sweeps (CenterPoint stacks 10 nuScenes sweeps for the same reason). A missing previous sweep
#: (first sweep, a gap) leaves its channels 0; training drops it sometimes so that case is known.
LIDAR_SWEEPS = 2
#: Longest gap (in sweep periods) between two sweeps for the older one to count as "previous".
PREV_SWEEP_MAX_GAP_PERIODS = 1.5
LIDAR_CHANNELS: tuple[str, ...] = LIDAR_SWEEP_CHANNELS + tuple(f"prev_{c}" for c in LIDAR_SWEEP_CHANNELS)
Z_MIN, Z_MAX = -1.0, 4.0  # base_link z window kept for LiDAR rasters (ground at 0)
#: Radar raster per cell.
RADAR_CHANNELS: tuple[str, ...] = (
    "occupancy",  # log1p(count)
    "rcs_max",  # (rcs_dBsm + 20) / 60
    "rcs_mean",
    "v_comp_mean",  # ego-compensated radial velocity / 30 m/s (signed)
    "v_comp_absmax",  # |v_comp| max / 30
)
#: Camera: RGB resized to CAM_H x CAM_W, normalised (x/255 - mean) / std, channels first.
CAM_H, CAM_W = 240, 320
CAM_MEAN = (0.485, 0.456, 0.406)
CAM_STD = (0.229, 0.224, 0.225)
#: Heights (m above ground, base_link z) at which each BEV feature cell is projected into
#: the camera to sample image features (the camera→BEV lift, docs/DESIGN.md §7).
CAM_Z_LEVELS: tuple[float, ...] = (0.3, 0.9, 1.5, 2.4)
MAX_CAMERAS = 6
#: IMU window: the last IMU_WINDOW samples before T resampled at IMU_HZ, [gyro xyz, acc xyz].
IMU_WINDOW = 20
IMU_HZ = 100.0
IMU_CHANNELS = 6
#: Modalities with BEV features, in the order of every mask/gate axis.
FUSED_MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar")

# --- outputs ------------------------------------------------------------------------------
CLASSES: tuple[str, ...] = DEFAULT_CLASSES
#: Regression channels at each FEAT x FEAT cell (CenterPoint style).
REG_CHANNELS: tuple[str, ...] = (
    "dx", "dy",  # sub-cell offset of the centre, in cells (0..1)
    "z",  # centre height, m
    "log_l", "log_w", "log_h",  # log of size, m
    "sin_yaw", "cos_yaw",
    "vx", "vy",  # m/s, base_link axes
)


@dataclass
class InputSpec:
    """One named network input: its shape without batch, and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


def input_specs(n_cameras: int = 1) -> list[InputSpec]:
    """All inputs of the full fusion network for a rig with `n_cameras` cameras."""
    nz = len(CAM_Z_LEVELS)
    return [
        InputSpec("lidar_bev", (len(LIDAR_CHANNELS), GRID, GRID)),
        InputSpec("radar_bev", (len(RADAR_CHANNELS), GRID, GRID)),
        InputSpec("images", (n_cameras, 3, CAM_H, CAM_W)),
        # grid_sample coordinates in [-1, 1] (x along width, y along height, align_corners=False)
        # of each BEV feature cell at each height, per camera; invalid points hold -2.
        InputSpec("cam_grid", (n_cameras, nz, FEAT, FEAT, 2)),
        InputSpec("cam_valid", (n_cameras, nz, FEAT, FEAT)),  # 1 where the point projects into the image
        InputSpec("coverage", (len(FUSED_MODALITIES), FEAT, FEAT)),  # field of view of each modality in BEV
        InputSpec("present", (len(FUSED_MODALITIES),)),  # 1 = modality available for this sample
        InputSpec("imu", (IMU_WINDOW, IMU_CHANNELS)),
    ]


def output_specs() -> list[InputSpec]:
    return [
        InputSpec("heatmap", (len(CLASSES), FEAT, FEAT)),  # logits
        InputSpec("regression", (len(REG_CHANNELS), FEAT, FEAT)),
        InputSpec("gates", (len(FUSED_MODALITIES), FEAT, FEAT)),  # softmax weights, 0 where excluded
    ]


@dataclass
class NetworkInputs:
    """One sample's inputs, keyed like `input_specs` (numpy arrays, no batch dimension)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def check(self, n_cameras: int) -> None:
        for spec in input_specs(n_cameras):
            a = self.arrays.get(spec.name)
            if a is None:
                raise ValueError(f"network input {spec.name!r} missing")
            if tuple(a.shape) != spec.shape or a.dtype != np.dtype(spec.dtype):
                raise ValueError(f"network input {spec.name!r}: expected {spec.shape} {spec.dtype}, "
                                 f"got {tuple(a.shape)} {a.dtype}")
