"""One bundle of sensor data at fusion time T → the network's inputs (docs/DESIGN.md §7).

`Preprocessor.build` is THE pre-processing: training-data generation
(`sim/dataset.py`) and the live pipeline call the same function, so the
network never sees inputs prepared two different ways. The caller brings every
sensor's data to T first (ego-motion: LiDAR deskewed into base_link at T, radar
moved and Doppler-compensated, camera pose at capture relative to base_link at T);
this module only rasterises, projects and packs.

Missing modalities: inputs zero, camera grid INVALID, `present` 0 and that
modality's coverage row 0 — so "absent" looks the same whether the sensor
failed live or was dropped in training (`drop_modalities`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import network_io as nio
from .bev import BevGrid, camera_coverage
from .camera_lift import INVALID, camera_grid, prepare_image
from .imu_window import imu_window
from .rig import Rig
from .types import CameraIntrinsics, ImuSample, Modality, RejectedInput

MODALITY_INDEX = {m: i for i, m in enumerate(nio.FUSED_MODALITIES)}


@dataclass
class CameraFrame:
    """One camera's image with its calibration and where the car was when it captured."""

    image: np.ndarray  # (H, W, 3) uint8 (or (H, W) mono8), as decoded
    intrinsics: CameraIntrinsics
    extrinsic: np.ndarray  # optical frame → base_link
    ego_pose: np.ndarray = field(default_factory=lambda: np.eye(4))  # base_link@capture in base_link@T
    encoding: str = "rgb8"
    name: str = ""


@dataclass
class SensorFrame:
    """Everything one fusion step needs, already brought to base_link at `stamp_ns` (= T).

    `lidar_xyz` (N, 3) deskewed, `lidar_intensity` (N,) on the 0–1 scale
    (`bev.normalised_intensity`, by each sensor's `intensity_max`) or None; `lidar_prev_xyz` /
    `lidar_prev_intensity` the sweep before it, deskewed to the same T (None: no previous
    sweep, its raster channels stay 0; `network_io.LIDAR_SWEEPS`); `radar_xyz` (M, 3),
    `radar_rcs` (M,) dBsm, `radar_v_comp` (M,) ego-compensated radial velocity m/s;
    `radar_sensors` the rig names of the radars whose scans those are (None: all of the rig's
    radars), so that with one of several radars missing the radar coverage is that of the others;
    `cameras` one entry per camera slot of the rig (None = that camera missing);
    `imu` recent samples (any order; only those ≤ T are used). A modality is present
    when its data is not None (and, for cameras, at least one slot has an image).
    """

    stamp_ns: int
    lidar_xyz: np.ndarray | None = None
    lidar_intensity: np.ndarray | None = None
    lidar_prev_xyz: np.ndarray | None = None
    lidar_prev_intensity: np.ndarray | None = None
    radar_xyz: np.ndarray | None = None
    radar_rcs: np.ndarray | None = None
    radar_v_comp: np.ndarray | None = None
    radar_sensors: Sequence[str] | None = None
    cameras: Sequence[CameraFrame | None] = ()
    imu: Sequence[ImuSample] = ()
    #: The LiDAR input (`lidar_input`) when it was already built at this `stamp_ns` (pipelining:
    #: the live pipeline rasterises a sweep as soon as it arrives, before the bundle is complete).
    lidar_bev: np.ndarray | None = None

    def present(self) -> dict[str, bool]:
        return {
            "camera": any(c is not None for c in self.cameras),
            "lidar": self.lidar_xyz is not None or self.lidar_bev is not None,
            "radar": self.radar_xyz is not None,
        }


def is_previous_sweep(prev_stamp_ns: int, stamp_ns: int, period_s: float) -> bool:
    """Whether a sweep stamped `prev_stamp_ns` is the one before `stamp_ns` for a LiDAR of `period_s`.

    Older than `PREV_SWEEP_MAX_GAP_PERIODS` periods (a dropped sweep, a stall) it is not: the
    network learned the motion between consecutive sweeps, and a gap would double it.
    """
    gap = int(stamp_ns) - int(prev_stamp_ns)
    return 0 < gap <= nio.PREV_SWEEP_MAX_GAP_PERIODS * float(period_s) * 1e9


class Preprocessor:
    """Holds what is fixed for a rig (grid, static LiDAR/radar coverage, camera count, IMU mounting)."""

    def __init__(self, rig: Rig | None = None, grid: BevGrid | None = None, n_cameras: int | None = None) -> None:
        self.grid = grid or BevGrid()
        self.radar_sensor_coverage: dict[str, np.ndarray] | None = None  # no rig, no sectors
        if rig is not None:
            self.camera_names = sorted(s.name for s in rig.of(Modality.CAMERA))
            self.lidar_coverage = self.grid.modality_coverage(rig.of(Modality.LIDAR))
            # Each radar's own sector: a bundle missing some radars covers only the others' (`radar_input_coverage`).
            self.radar_sensor_coverage = {s.name: self.grid.sensor_coverage(s) for s in rig.of(Modality.RADAR)}
            self.radar_coverage = self.grid.coverage_union(self.radar_sensor_coverage.values())
            imus = rig.of(Modality.IMU)
            self.imu_extrinsic = imus[0].extrinsic if imus else None
        else:
            self.camera_names = []
            ones = np.ones(self.grid.shape(self.grid.stride), np.float32)
            self.lidar_coverage, self.radar_coverage = ones, ones.copy()
            self.imu_extrinsic = None
        self.n_cameras = int(n_cameras if n_cameras is not None else max(len(self.camera_names), 1))
        if not 1 <= self.n_cameras <= nio.MAX_CAMERAS:
            raise ValueError(f"n_cameras must be 1..{nio.MAX_CAMERAS}, got {self.n_cameras}")

    def radar_input_coverage(self, sensors: Sequence[str] | None) -> np.ndarray:
        """BEV coverage of the radars named (None: every radar of the rig; without a rig: everywhere)."""
        if sensors is None or self.radar_sensor_coverage is None:
            return self.radar_coverage
        unknown = sorted(set(sensors) - set(self.radar_sensor_coverage))
        if unknown:
            raise RejectedInput("unknown_sensor", f"radar scans from {unknown}, which the rig does not have "
                                f"(radars: {sorted(self.radar_sensor_coverage)})", "radar")
        if not sensors:
            raise RejectedInput("missing_field", "radar points from no radar (radar_sensors is empty)", "radar")
        return self.grid.coverage_union(self.radar_sensor_coverage[n] for n in sensors)

    def lidar_input(self, xyz: np.ndarray, intensity: np.ndarray | None = None,
                    prev_xyz: np.ndarray | None = None, prev_intensity: np.ndarray | None = None) -> np.ndarray:
        """The network's `lidar_bev`: this sweep's pillar statistics, then the previous sweep's.

        Both clouds must already be in base_link at the same T; a missing previous sweep
        leaves its channels 0 (what training shows the network for that case).
        """
        g = self.grid
        nch = len(nio.LIDAR_SWEEP_CHANNELS)
        out = np.zeros((len(nio.LIDAR_CHANNELS), g.nx, g.ny), np.float32)
        g.lidar_raster(xyz, intensity, out=out[:nch])
        if prev_xyz is not None:
            g.lidar_raster(prev_xyz, prev_intensity, out=out[nch:2 * nch])
        return out

    def build(self, frame: SensorFrame) -> nio.NetworkInputs:
        """The `NetworkInputs` of one bundle (see module docstring); raises RejectedInput on malformed data."""
        g = self.grid
        F = g.shape(g.stride)
        nz = len(nio.CAM_Z_LEVELS)
        nc = self.n_cameras
        present = np.zeros(len(nio.FUSED_MODALITIES), np.float32)
        coverage = np.zeros((len(nio.FUSED_MODALITIES), *F), np.float32)

        lidar = np.zeros((len(nio.LIDAR_CHANNELS), g.nx, g.ny), np.float32)
        if frame.lidar_bev is not None:
            if frame.lidar_bev.shape != lidar.shape or frame.lidar_bev.dtype != np.float32:
                raise ValueError(f"lidar_bev must be {lidar.shape} float32, got {frame.lidar_bev.shape} "
                                 f"{frame.lidar_bev.dtype}")
            lidar = frame.lidar_bev
            present[MODALITY_INDEX["lidar"]] = 1.0
            coverage[MODALITY_INDEX["lidar"]] = self.lidar_coverage
        elif frame.lidar_xyz is not None:
            lidar = self.lidar_input(frame.lidar_xyz, frame.lidar_intensity, frame.lidar_prev_xyz,
                                     frame.lidar_prev_intensity)
            present[MODALITY_INDEX["lidar"]] = 1.0
            coverage[MODALITY_INDEX["lidar"]] = self.lidar_coverage

        radar = np.zeros((len(nio.RADAR_CHANNELS), g.nx, g.ny), np.float32)
        if frame.radar_xyz is not None:
            if frame.radar_rcs is None or frame.radar_v_comp is None:
                raise RejectedInput("missing_field", "radar points need rcs and v_comp", "radar")
            radar = g.radar_raster(frame.radar_xyz, frame.radar_rcs, frame.radar_v_comp)
            present[MODALITY_INDEX["radar"]] = 1.0
            coverage[MODALITY_INDEX["radar"]] = self.radar_input_coverage(frame.radar_sensors)

        if len(frame.cameras) > nc:
            raise RejectedInput("too_many", f"{len(frame.cameras)} cameras for a {nc}-camera network", "cameras")
        images = np.zeros((nc, 3, nio.CAM_H, nio.CAM_W), np.float32)
        grid_ = np.full((nc, nz, *F, 2), INVALID, np.float32)
        valid = np.zeros((nc, nz, *F), np.float32)
        for k, cam in enumerate(frame.cameras):
            if cam is None:
                continue
            images[k] = prepare_image(cam.image, cam.encoding)
            grid_[k], valid[k] = camera_grid(cam.intrinsics, cam.extrinsic, cam.ego_pose, g)
        if any(c is not None for c in frame.cameras):
            present[MODALITY_INDEX["camera"]] = 1.0
            coverage[MODALITY_INDEX["camera"]] = camera_coverage(valid)

        imu = imu_window(frame.imu, frame.stamp_ns, self.imu_extrinsic)
        out = nio.NetworkInputs({
            "lidar_bev": lidar, "radar_bev": radar, "images": images, "cam_grid": grid_, "cam_valid": valid,
            "coverage": coverage, "present": present, "imu": imu,
        })
        out.check(nc)
        return out


def drop_modalities(inputs: nio.NetworkInputs, keep: Sequence[str]) -> nio.NetworkInputs:
    """A copy of `inputs` with every fused modality not in `keep` made absent, exactly as a missing sensor.

    Used for modality dropout in training and for the robustness matrix in evaluation.
    """
    unknown = set(keep) - set(nio.FUSED_MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)} (one of {nio.FUSED_MODALITIES})")
    a = {k: v.copy() for k, v in inputs.arrays.items()}
    for m, i in MODALITY_INDEX.items():
        if m in keep:
            continue
        a["present"][i] = 0.0
        a["coverage"][i] = 0.0
        if m == "lidar":
            a["lidar_bev"][:] = 0.0
        elif m == "radar":
            a["radar_bev"][:] = 0.0
        else:
            a["images"][:] = 0.0
            a["cam_grid"][:] = INVALID
            a["cam_valid"][:] = 0.0
    return nio.NetworkInputs(a)
