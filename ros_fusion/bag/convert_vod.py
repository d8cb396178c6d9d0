"""View-of-Delft → ConvertedDrive(s): the KITTI layout twice (LiDAR and 3+1D radar) plus odometry.

Input: ``<root>/lidar/training/{velodyne,image_2,calib,label_2,pose}`` and
``<root>/radar/training/{velodyne,calib,...}``. The LiDAR half is converted
exactly like KITTI (see `convert_kitti`: same label conventions, same
base_link definition, same camera handling). On top of it:

- radar ``velodyne/*.bin`` holds float32 x, y, z, rcs, v_r, v_r_comp, time per
  point in the radar frame; the radar ``calib`` file's Tr_velo_to_cam maps
  radar → camera (and its own R0_rect → rectified camera), so radar →
  base_link = base_link ← rect (LiDAR calib) ← rect (radar calib) ← radar. The
  cloud keeps x y z v_r rcs v_r_comp (v_r: raw range rate, negative =
  approaching; v_r_comp: ego-motion compensated). VoD's ``time`` column is a
  scan index for its accumulated multi-scan variants, not seconds, so it is
  kept as field ``scan`` and NOT as the per-point time ``t``.
- ``pose/*.json`` (JSON lines ``{"odomToCamera": 16 numbers}``,
  ``{"mapToCamera": ...}``, ``{"UTMToCamera": ...}``): following the VoD
  devkit's naming (``t_odom_camera`` maps camera points into odom), base_link's
  pose in odom is ``odomToCamera · camera←base_link`` with the camera being the
  rectified camera of the LiDAR calibration. It becomes nav_msgs/Odometry on
  ``/vehicle/odometry`` (frame odom, child base_link), twist from finite
  differences of neighbouring frames.

base_link height: VoD does not publish its LiDAR mount height, so by default
it is fitted to the road: a RANSAC ground plane per sweep, median over up to
`GROUND_FIT_SWEEPS` sweeps of the calibration group (`bag.ground`). Only when
no sweep shows a road does it fall back to the labels (the median height of the
labelled boxes' bottom centres below the LiDAR), then to KITTI's 1.73 m. Pass
`lidar_height` to fix it. Times: frame ``NNNNN`` at
``DATASET_EPOCH_NS + NNNNN × 100 ms`` (VoD frames are 10 Hz; a gap in frame
numbers, i.e. a new sequence, is a gap in time).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.types import DEFAULT_CLASSES, PointCloud
from .convert_common import (
    VOD_CLASS_MAP,
    ConversionError,
    ConversionReport,
    ConvertedDrive,
    EventRef,
    SkipFile,
    extrinsics_entry,
    odometry_from_poses,
    orthonormalize,
    read_float32_bin,
)
from .convert_kitti import (
    DATASET_EPOCH_NS,
    FRAME_PERIOD_NS,
    KITTI_LIDAR_HEIGHT_M,
    CalibGroup,
    KittiCalib,
    _group_drive,
    base_from_velo,
    calibration_groups,
    load_lidar,
    parse_labels,
    read_calib,
)
from .ground import GroundFit, fit_lidar_height

#: Full scale of the View-of-Delft LiDAR's intensity (HDL-64 S3): 0–255, unlike KITTI's 0–1 reflectance
#: (View-of-Delft devkit, lidar data description; Palffy et al., RA-L 2022). The rig's `intensity_max`.
VOD_LIDAR_INTENSITY_MAX = 255.0
RADAR_TOPIC = "/sensors/radar_front/points"
ODOMETRY_TOPIC = "/vehicle/odometry"
#: View-of-Delft radar (ZF FRGen21) `RCS` is in dBsm (View-of-Delft devkit, radar data description): the
#: rig's `rcs_offset_db` is 0.
VOD_RCS_OFFSET_DB = 0.0
RADAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("rcs", "<f4"),
                        ("v_r_comp", "<f4"), ("scan", "<f4")])
#: Column of each RADAR_DTYPE field in VoD's x, y, z, rcs, v_r, v_r_comp, time rows.
RADAR_COLUMNS = {"x": 0, "y": 1, "z": 2, "rcs": 3, "v_r": 4, "v_r_comp": 5, "scan": 6}


def load_radar(path: Path, stamp_ns: int) -> PointCloud:
    data = read_float32_bin(path, 7)
    pts = np.empty(len(data), RADAR_DTYPE)
    for name, col in RADAR_COLUMNS.items():
        pts[name] = data[:, col]
    return PointCloud(stamp_ns, "radar_front", pts)


def read_pose(path: Path) -> np.ndarray:
    """``odomToCamera`` of a VoD pose file (JSON lines or one JSON object) as a 4×4; SkipFile if unusable."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SkipFile(path, f"cannot read: {e}") from None
    found = None
    try:
        objs = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        try:
            objs = [json.loads(text)]
        except json.JSONDecodeError as e:
            raise SkipFile(path, f"not JSON: {e}") from None
    for o in objs:
        if isinstance(o, dict) and "odomToCamera" in o:
            found = o["odomToCamera"]
    if found is None:
        raise SkipFile(path, "no odomToCamera entry")
    try:
        T = np.asarray(found, dtype=np.float64).reshape(4, 4)
    except (ValueError, TypeError):
        raise SkipFile(path, "odomToCamera is not 16 numbers") from None
    if not np.isfinite(T).all() or not np.allclose(T[3], [0, 0, 0, 1]):
        raise SkipFile(path, "odomToCamera is not a finite 4x4 rigid transform")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4):
        raise SkipFile(path, "odomToCamera rotation is not orthonormal")
    return T


#: Sweeps of a calibration group the ground fit reads, spread evenly over it.
GROUND_FIT_SWEEPS = 40


def fit_group_height(group: CalibGroup) -> GroundFit | None:
    """The road-plane height of up to `GROUND_FIT_SWEEPS` of the group's sweeps (unreadable ones skipped)."""
    frames = [f for f in group.frames if f.velodyne.exists()]
    if len(frames) > GROUND_FIT_SWEEPS:
        frames = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, GROUND_FIT_SWEEPS)]

    def sweeps():
        for f in frames:
            try:
                yield load_lidar(f.velodyne, 0).xyz()
            except SkipFile:
                continue

    return fit_lidar_height(sweeps())


def estimate_lidar_height(group: CalibGroup, report: ConversionReport, max_frames: int = 500) -> float:
    """Median height of labelled boxes' bottom centres below the LiDAR; KITTI's 1.73 m if there are none."""
    velo_from_rect = np.linalg.inv(group.calib.rect_from_velo())
    bottoms: list[float] = []
    quiet = ConversionReport()  # label problems are reported once, by the conversion itself
    for f in group.frames[:max_frames]:
        if not f.label.exists():
            continue
        try:
            labels = parse_labels(f.label, VOD_CLASS_MAP, quiet)
        except SkipFile:
            continue
        for lb in labels:
            bottoms.append(float((velo_from_rect @ np.array([lb.x, lb.y, lb.z, 1.0]))[2]))
    if not bottoms:
        report.warn(group.frames[0].calib, f"no labels to estimate the LiDAR height from; using "
                                           f"{KITTI_LIDAR_HEIGHT_M} m (pass --lidar-height to set it)")
        return KITTI_LIDAR_HEIGHT_M
    return float(-np.median(bottoms))


def convert_vod(
    root: str | Path,
    *,
    split: str = "training",
    classes: Sequence[str] = DEFAULT_CLASSES,
    lidar_height: float | None = None,
    frames: Sequence[str] | None = None,
    name: str | None = None,
) -> list[ConvertedDrive]:
    """Index a View-of-Delft root (holding lidar/ and radar/); one ConvertedDrive per LiDAR calibration."""
    root = Path(root)
    lidar_base, radar_base = root / "lidar" / split, root / "radar" / split
    if not root.is_dir():
        raise ConversionError(f"{root}: no such directory")
    if not lidar_base.is_dir():
        raise ConversionError(f"{root}: no {lidar_base} (expected the View-of-Delft layout "
                              "<root>/lidar/training/... and <root>/radar/training/...)")
    report = ConversionReport()
    if not radar_base.is_dir():
        report.warn(radar_base, "missing: converting without radar")
    groups = calibration_groups(lidar_base, frames, report)
    stem = name or root.resolve().name or "vod"
    drives = []
    for gi, g in enumerate(groups):
        drive_name = stem if len(groups) == 1 else f"{stem}_calib{gi}"
        if lidar_height is not None:
            h, source = lidar_height, "given"
        elif (fit := fit_group_height(g)) is not None:
            h, source = fit.height_m, fit.describe()
        else:
            report.warn(g.frames[0].calib, "no sweep shows a road plane; LiDAR height estimated from the labels")
            h, source = estimate_lidar_height(g, report), "estimated from labels"
        drive = _group_drive(drive_name, g, classes, h, report, VOD_CLASS_MAP, "vod", VOD_LIDAR_INTENSITY_MAX,
                             still_frames=False)
        drive.metadata["lidar_height_source"] = source
        _add_radar(drive, g, radar_base, h, report)
        _add_odometry(drive, g, lidar_base / "pose", h, report)
        drives.append(drive)
    return drives


def _add_radar(drive: ConvertedDrive, g: CalibGroup, radar_base: Path, lidar_height: float,
               report: ConversionReport) -> None:
    base_from_rect = base_from_velo(lidar_height) @ np.linalg.inv(g.calib.rect_from_velo())
    radar_calib: KittiCalib | None = None
    n = 0
    for f in g.frames:
        calib_path = radar_base / "calib" / f"{f.frame}.txt"
        bin_path = radar_base / "velodyne" / f"{f.frame}.bin"
        if not bin_path.exists():
            if radar_base.is_dir():
                report.skip(bin_path, f"missing; frame {f.frame} has no radar scan")
            continue
        try:
            c = read_calib(calib_path)
        except SkipFile as e:
            report.skip(e.path, f"{e.message}; radar scan of frame {f.frame} skipped")
            continue
        if radar_calib is None:
            radar_calib = c
        elif c.key() != radar_calib.key():
            report.skip(calib_path, f"radar calibration differs from frame {g.frames[0].frame}'s; radar scan "
                                    f"of frame {f.frame} skipped (one rig per bag)")
            continue
        stamp = DATASET_EPOCH_NS + f.number * FRAME_PERIOD_NS
        drive.refs.append(EventRef("radar_front", RADAR_TOPIC, stamp, stamp,
                                   lambda p=bin_path, s=stamp: load_radar(p, s), str(bin_path)))
        n += 1
    if radar_calib is None:
        drive.absent_sensors.append("radar_front")
        report.warn(drive.name, "no usable radar scans: radar_front left out of the rig")
        return
    T, err = orthonormalize(base_from_rect @ radar_calib.rect_from_velo())
    if err > 1e-6:
        report.warn(radar_base / "calib", f"radar rotation orthonormalised (max change {err:.2e})")
    drive.rig["sensors"]["radar_front"] = {
        "modality": "radar", "topic": RADAR_TOPIC, "frame_id": "radar_front", "rate_hz": 10.0,
        "rcs_offset_db": VOD_RCS_OFFSET_DB, "extrinsics": extrinsics_entry(T),
    }
    drive.metadata["radar_scans"] = str(n)


def _add_odometry(drive: ConvertedDrive, g: CalibGroup, pose_dir: Path, lidar_height: float,
                  report: ConversionReport) -> None:
    rect_from_base = np.linalg.inv(base_from_velo(lidar_height) @ np.linalg.inv(g.calib.rect_from_velo()))
    stamps: list[int] = []
    poses: list[np.ndarray] = []
    for f in g.frames:
        p = pose_dir / f"{f.frame}.json"
        if not p.exists():
            continue
        try:
            T = read_pose(p) @ rect_from_base
        except SkipFile as e:
            report.skip(e.path, f"{e.message}; no odometry for frame {f.frame}")
            continue
        stamps.append(DATASET_EPOCH_NS + f.number * FRAME_PERIOD_NS)
        poses.append(orthonormalize(T)[0])
    if not poses:
        report.warn(pose_dir, "no pose files: odometry left out of the rig")
        return
    origin_inv = np.linalg.inv(poses[0])  # odom starts at the first pose, as odometry frames do
    odo = odometry_from_poses(stamps, [origin_inv @ T for T in poses], frame_id="odom")
    for o in odo:
        drive.refs.append(EventRef("odometry", ODOMETRY_TOPIC, o.stamp_ns, o.stamp_ns, lambda o=o: o, str(pose_dir)))
    sensors: dict[str, Any] = drive.rig["sensors"]
    sensors["odometry"] = {"modality": "odometry", "topic": ODOMETRY_TOPIC, "frame_id": "odom",
                           "child_frame_id": "base_link", "rate_hz": 10.0,
                           "extrinsics": {"xyz": [0.0, 0.0, 0.0], "rpy": [0.0, 0.0, 0.0]}}
