"""Astyx HiRes2019 → ConvertedDrive(s): 4D radar, Velodyne VLP-16, front camera, 3D labels, rig.

Input: ``<root>/{radar_6455,lidar_vlp16,camera_front,calibration,groundtruth_obj3d}/NNNNNN.*`` (or
``<root>/dataset_astyx_hires2019/...``, the layout of the public repository). Per frame:

- ``radar_6455/*.txt``: an optional blank line, the header ``X Y Z V_r Mag``, one detection per
  row in the radar frame, which is the dataset's reference frame (its ``T_to_ref_COS`` is the
  identity). ``V_r`` is the radial velocity [m/s], kept as ``v_r`` as given: the dataset documents
  no sign convention and no ego-motion compensation (the fixture frames were recorded at a near
  standstill, so neither can be checked on them). Its values stay within ±5.2 m/s over the whole
  set: the radar's unambiguous interval, so faster targets come wrapped.
- ``lidar_vlp16/*.txt``: header ``X Y Z Reflectivity LaserID Timestamp``; Reflectivity is the
  VLP-16's calibrated 0–255 reflectivity (rig ``intensity_max: 255``), Timestamp the firing time
  in µs.
- ``calibration/*.json``: ``sensors[].calib_data.T_to_ref_COS`` (sensor → reference, 4×4) for
  ``radar_6455``, ``lidar_vlp16`` and ``camera_front`` (whose frame is the optical frame: x right,
  y down, z forward), plus the camera's ``K``.
- ``groundtruth_obj3d/*.json``: ``objects[]`` with ``center3d`` (reference frame),
  ``dimension3d`` (length, width, height), ``orientation_quat`` (w, x, y, z) and ``classname``.
  ``center3d`` is the centre of the box, not its bottom: on the fixture frames the LiDAR returns
  of the labelled cars span z ∈ [−h/2, +h/2] around it (e.g. frame 000000, car at 9.2 m:
  [−0.77, +0.70] m for h = 1.45 m), and the box's length runs along the rotated x axis (the
  perpendicular-parked cars there, 2.6 m apart, have yaw ±90° and hold 607 returns that way
  against 148 with length and width swapped).

base_link: the reference (radar) frame levelled to the road and lowered onto it. The road is fitted
per LiDAR sweep (`bag.ground`: a RANSAC plane, the sweep moved into the reference frame first,
median over up to `GROUND_FIT_SWEEPS` sweeps of the bag); base_link = the smallest rotation that
turns the road's normal into +z (heading unchanged), then the origin moved down by the fitted
height. Levelling matters here: in the reference frame the road leans by a median 2.8° pitch and
4.8° roll (calibration 0; calibration 1: 2.2°, 2.0°), and the labels' up axes lean the same way
(2.2°, 3.7°; 1.6°, 2.1°), so it is the radar's mounting, not the road; unlevelled, boxes 50 m
ahead would sit ~2.4 m above z = 0. When no sweep shows a road the height falls back to the
labels (median bottom of the boxes below the reference origin), then to
`ASTYX_FALLBACK_REF_HEIGHT_M`, unlevelled. ``ref_height`` (CLI ``--ref-height``) fixes the height
(the levelling still comes from the road).

Boxes: centre through reference → base_link, yaw of the label rotation's x axis in base_link
about +z (the remaining roll and pitch of the label are dropped: boxes are upright).
Ground-truth velocity is unknown (0; metadata ``gt_velocity: unavailable``). ``num_points`` of
each box counts the LiDAR and radar returns inside its upright box, as nuScenes'
num_lidar_pts + num_radar_pts do, so evaluation leaves out labels no sensor saw; when a frame's
LiDAR or radar cannot be read, that frame's boxes carry no count (all of them are scored).

Radar ``rcs``: the pipeline reads ``rcs`` in dBsm (`core.bev.radar_raster`), but Astyx ``Mag`` is
an uncalibrated reflection magnitude (0.5-step values of 45–97 with a floor of 45 at the detection
threshold) for which no dBsm conversion is published. So the cloud keeps
``mag`` as given and writes ``rcs`` = 0 dBsm for every detection: the value the pipeline already
substitutes for a radar without an ``rcs`` field, so the network sees "RCS unknown" rather than a
made-up spread (a NaN would make `radar_raster` drop every detection).

LiDAR fields: x y z intensity ring t. ``ring`` is the beam index ordered by elevation (0 = the
lowest beam, the velodyne_pointcloud convention); the file's LaserID is the VLP-16 firing order,
whose elevations interleave −15°, +1°, −13°, +3°, … (verified on the fixtures), so
ring = id // 2 + 8 · (id mod 2). ``t`` is each point's time relative to the sweep's stamp
(float32 s, ≤ 0, the stamp being the last point's time): the µs timestamps span 0.099–0.101 s
in all 546 sweeps, one VLP-16 revolution at 10 Hz. A sweep whose timestamps do not span a
plausible revolution gets t = 0 (no deskew) and a warning.

Times: consecutive frames are ~2 s apart (sometimes minutes), not a 10 Hz stream, so they are
still frames, exactly like KITTI object (`convert_kitti`): the k-th frame of a bag is stamped
``DATASET_EPOCH_NS + k × 100 ms`` whatever its number, and the rig says ``still_frames: true``.

Split (fixed for everyone): frames 000000–000399 are train/validation, 000400–000545 the TEST
split. Test frames convert (evaluation needs them), but they must never be used for training,
fine-tuning, checkpoint selection or threshold tuning. A bag never mixes the two: frames are
grouped by calibration (the full set has two) and by split, one `ConvertedDrive` per group, and
its metadata says ``split: train`` or ``split: test`` (``mixed`` is impossible by construction).
The height fit of a bag reads only that bag's own sweeps, so a train bag is the same whether or
not test frames were converted alongside.

Classes (`ASTYX_CLASS_MAP`): Trailer → truck, as the project's nuScenes grouping maps
vehicle.trailer (any trailer, of trucks, cars or bikes) → truck. Astyx trailers are mostly parked
or car-towed ones, 2–6 m long, each its own box (15 of the set's 3159 boxes), so the choice moves
little either way. ``Towed Object`` and ``Other Vehicle`` are deliberately not converted (no class of
ours fits them) and counted; a class in neither set is reported with its file and object index.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.bev import UNKNOWN_RCS_DBSM
from ..core.transforms import quat_to_matrix
from ..core.types import DEFAULT_CLASSES, Obstacles, PointCloud
from .convert_common import (
    ConversionError,
    ConversionReport,
    ConvertedDrive,
    EventRef,
    SkipFile,
    extrinsics_entry,
    first_image_size,
    ground_truth_ref,
    intrinsics_entry,
    make_obstacles,
    map_class,
    orthonormalize,
    read_text,
    rig_dict,
    yaw_of,
)
from .convert_kitti import (
    CAMERA_INFO_TOPIC,
    CAMERA_TOPIC,
    DATASET_EPOCH_NS,
    FRAME_PERIOD_NS,
    LIDAR_TOPIC,
    camera_refs,
)
from .convert_vod import GROUND_FIT_SWEEPS, RADAR_TOPIC
from .ground import fit_lidar_height

#: Astyx classnames → ours. None = known but deliberately not converted. Trailer → truck as in the
#: nuScenes grouping (`NUSCENES_CATEGORY_MAP`); a name in neither set is reported as unknown.
ASTYX_CLASS_MAP: dict[str, str | None] = {
    "Car": "car",
    "Truck": "truck",
    "Trailer": "truck",
    "Bus": "bus",
    "Person": "pedestrian",
    "Cyclist": "cyclist",
    "Motorcyclist": "cyclist",
    "Towed Object": None,
    "Other Vehicle": None,
}

#: Folder names of one Astyx HiRes2019 set, and the folder that holds them in the public repository.
RADAR_DIR, LIDAR_DIR, CAMERA_DIR, CALIB_DIR, LABEL_DIR = (
    "radar_6455", "lidar_vlp16", "camera_front", "calibration", "groundtruth_obj3d")
DATASET_DIR = "dataset_astyx_hires2019"
#: ``sensor_uid`` of each sensor in the calibration files.
RADAR_UID, LIDAR_UID, CAMERA_UID = "radar_6455", "lidar_vlp16", "camera_front"

#: Last frame number of the train/validation split; every later frame (000400–000545) is TEST data.
LAST_TRAIN_FRAME = 399

#: Full scale of the VLP-16's calibrated reflectivity (0–255, VLP-16 user manual, "Calibrated
#: Reflectivity"): the rig's `intensity_max`.
ASTYX_LIDAR_INTENSITY_MAX = 255.0
#: Unambiguous radial-velocity interval of the Astyx 6455 [m/s]: V_r takes 128 values 0.0812 m/s apart,
#: −5.116 … +5.197, over the whole set, so faster relative speeds come folded (the rig's
#: `velocity_interval_mps`; the pipeline fits the ego velocity from each scan's Doppler, `core.doppler_ego`).
ASTYX_RADAR_VELOCITY_INTERVAL_MPS = 128 * 0.0812
#: Beams of the VLP-16; LaserID n fires at elevation −15° + 2°·(n // 2) + 16°·(n mod 2).
VLP16_BEAMS = 16
#: A sweep's per-point times are used when they span this much [s] (one revolution at 5–20 Hz).
SWEEP_SPAN_S = (0.04, 0.21)
#: Reference-frame height over the road when neither the road nor the labels give one [m]: the ground fit
#: of the full set's train bag (calibration 0, frames 000000-000399: 1.595 m, median of 40 sweeps).
ASTYX_FALLBACK_REF_HEIGHT_M = 1.6
#: Image size written to the rig when no image of a bag decodes (the Astyx front camera's).
ASTYX_IMAGE_SIZE = (2048, 618)
#: Simulator parameters written into the rig's `model` blocks, so `ros-fusion simulate` can drive this rig
#: (pre-training on simulated drives of the real sensor set, docs/train_own_data.md). The pipeline never
#: reads them. LiDAR: Velodyne VLP-16 datasheet 63-9229 and user manual 63-9243 (16 lasers, +15 to -15 deg
#: in 2 deg steps, 0.2 deg azimuth steps at 10 Hz, range to 100 m, +-3 cm, reflectivity 0-100 for diffuse
#: targets). Radar: the Astyx 6455 HiRes as its dataset's training frames 000000-000339 show it (no public
#: datasheet; field of view and range from the 1st/99th percentiles of its detections, resolution cells of
#: 0.5 x 2 deg so that a car gets ~50 detections at 10-20 m, ~30 at 20-30 m, ~14 at 30-50 m and ~8 at 50-80 m,
#: as measured there;
#: `sim.imaging_radar`).
ASTYX_SIM_MODELS: dict[str, dict[str, Any]] = {
    "lidar_top": {"beams": 16, "vertical_fov_deg": [-15.0, 15.0], "azimuth_resolution_deg": 0.2,
                  "min_range_m": 1.0, "max_range_m": 100.0, "range_noise_m": 0.03, "dropout": 0.03,
                  "reflectivity_full_scale": 100.0},
    "radar_front": {"fov_deg": 120.0, "elevation_fov_deg": 28.0, "azimuth_resolution_deg": 0.5,
                    "elevation_resolution_deg": 2.0, "elevation_beamwidth_deg": 20.0, "min_range_m": 1.0,
                    "max_range_m": 100.0, "reference_range_m": 80.0, "detection_probability": 0.8,
                    "false_alarm_probability": 1e-4, "road_rcs_dbsm": -40.0, "range_noise_m": 0.1,
                    "azimuth_noise_deg": 0.3, "elevation_noise_deg": 0.5, "doppler_noise_mps": 0.08,
                    "report_rcs": False},
}

LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2"),
                        ("t", "<f4")])
RADAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("rcs", "<f4"),
                        ("mag", "<f4")])
LIDAR_COLUMNS = ("X", "Y", "Z", "Reflectivity", "LaserID", "Timestamp")
RADAR_COLUMNS = ("X", "Y", "Z", "V_r", "Mag")


# --------------------------------------------------------------------------- text tables


@dataclass
class Table:
    """Rows of an Astyx text file, in the requested column order, and what was dropped while reading."""

    data: np.ndarray  # (N, C) float64
    dropped: list[str] = field(default_factory=list)  # "line L: why", one per row left out

    def note(self, limit: int = 3) -> str:
        more = f" (+{len(self.dropped) - limit} more)" if len(self.dropped) > limit else ""
        return f"{len(self.dropped)} row(s) dropped: " + "; ".join(self.dropped[:limit]) + more


def read_table(path: Path, columns: Sequence[str],
               row_check: tuple[Callable[[np.ndarray], np.ndarray], str] | None = None) -> Table:
    """The named columns of a whitespace table with a header line (blank lines anywhere are ignored).

    Why row by row on failure: a truncated file ends in half a row and a bad export may hold a few
    NaN rows; those rows are dropped and named (line numbers count from 1, blank lines included) so
    the rest of the sweep converts. `row_check` = (rows → True where bad, why) drops more rows. A file
    that is missing, unreadable, empty, without the columns, or without one good row raises SkipFile.
    """
    lines = read_text(path).splitlines()
    head = next(i for i, line in enumerate(lines) if line.strip())
    header = lines[head].split()
    missing = [c for c in columns if c not in header]
    if missing:
        raise SkipFile(path, f"line {head + 1}: header {' '.join(header)!r} lacks column(s) {', '.join(missing)}")
    body = [(n, line) for n, line in enumerate(lines[head + 1:], head + 2) if line.strip()]
    if not body:
        raise SkipFile(path, "no data rows after the header")
    width = len(header)
    numbers = [n for n, _ in body]
    dropped: list[str] = []
    try:
        arr = np.loadtxt([line for _, line in body], dtype=np.float64, ndmin=2)
        if arr.shape[1] != width:
            raise ValueError("column count")
    except ValueError:
        rows, numbers = [], []
        for n, line in body:
            tok = line.split()
            if len(tok) != width:
                dropped.append(f"line {n}: {len(tok)} values, the header has {width}")
                continue
            try:
                rows.append([float(t) for t in tok])
            except ValueError:
                dropped.append(f"line {n}: not all numbers")
                continue
            numbers.append(n)
        arr = np.asarray(rows, np.float64).reshape(-1, width)
    arr = arr[:, [header.index(c) for c in columns]]
    bad = ~np.isfinite(arr).all(axis=1)
    why = {int(i): "NaN/Inf" for i in np.flatnonzero(bad)}
    if row_check is not None:
        extra = np.asarray(row_check[0](arr), bool) & ~bad
        why.update({int(i): row_check[1] for i in np.flatnonzero(extra)})
        bad |= extra
    if bad.any():
        dropped += [f"line {numbers[i]}: {why[i]}" for i in sorted(why)]
        dropped.sort(key=lambda s: int(s.split()[1].rstrip(":")))
        arr = arr[~bad]
    if len(arr) == 0:
        raise SkipFile(path, "no usable rows" + (f" ({dropped[0]}, ...)" if dropped else ""))
    return Table(arr, dropped)


def _bad_laser_id(arr: np.ndarray) -> np.ndarray:
    ids = arr[:, 4]
    return (ids != np.round(ids)) | (ids < 0) | (ids >= VLP16_BEAMS)


def read_lidar_table(path: Path) -> Table:
    """X Y Z Reflectivity LaserID Timestamp rows (a LaserID outside 0–15 drops its row)."""
    return read_table(path, LIDAR_COLUMNS, (_bad_laser_id, f"LaserID not an integer 0-{VLP16_BEAMS - 1}"))


def read_radar_table(path: Path) -> Table:
    return read_table(path, RADAR_COLUMNS)


def vlp16_ring(laser_id: np.ndarray) -> np.ndarray:
    """Elevation-ordered ring (0 = lowest beam) of VLP-16 laser ids, which alternate low/high beams."""
    ids = np.asarray(laser_id).astype(np.int64)
    return (ids // 2 + (VLP16_BEAMS // 2) * (ids % 2)).astype(np.uint16)


def _warn_dropped(report: ConversionReport | None, path: Path, table: Table) -> None:
    if report is not None and table.dropped:
        report.warn(path, table.note())
        report.count("rows_dropped", len(table.dropped))


def load_lidar(path: Path, stamp_ns: int, report: ConversionReport | None = None) -> PointCloud:
    """One VLP-16 sweep in the LiDAR frame; times relative to `stamp_ns`, the sweep's last point."""
    table = read_lidar_table(path)
    _warn_dropped(report, path, table)
    d = table.data
    pts = np.empty(len(d), LIDAR_DTYPE)
    pts["x"], pts["y"], pts["z"], pts["intensity"] = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
    pts["ring"] = vlp16_ring(d[:, 4])
    us = d[:, 5]
    span = float(us.max() - us.min()) * 1e-6
    if SWEEP_SPAN_S[0] <= span <= SWEEP_SPAN_S[1]:
        pts["t"] = (us - us.max()) * 1e-6
    else:
        pts["t"] = 0.0
        if report is not None:
            report.warn(path, f"point timestamps span {span:.3f} s, not one revolution "
                              f"({SWEEP_SPAN_S[0]}-{SWEEP_SPAN_S[1]} s): t = 0, sweep not deskewed")
    return PointCloud(stamp_ns, "lidar_top", pts)


def load_radar(path: Path, stamp_ns: int, report: ConversionReport | None = None) -> PointCloud:
    """One radar scan in the radar frame: x y z v_r as given, mag as given, rcs = `UNKNOWN_RCS_DBSM`."""
    table = read_radar_table(path)
    _warn_dropped(report, path, table)
    d = table.data
    pts = np.empty(len(d), RADAR_DTYPE)
    pts["x"], pts["y"], pts["z"], pts["v_r"], pts["mag"] = d[:, 0], d[:, 1], d[:, 2], d[:, 3], d[:, 4]
    pts["rcs"] = UNKNOWN_RCS_DBSM
    return PointCloud(stamp_ns, "radar_front", pts)


# --------------------------------------------------------------------------- calibration


@dataclass
class AstyxCalib:
    """Sensor → reference transforms (rigid, orthonormalised) and the camera matrix of one calibration file."""

    radar: np.ndarray  # (4, 4)
    lidar: np.ndarray  # (4, 4)
    camera: np.ndarray  # (4, 4), optical frame → reference
    K: np.ndarray  # (3, 3)
    max_orthonormal_change: float = 0.0

    def key(self) -> tuple[float, ...]:
        return tuple(np.round(np.concatenate([self.radar.ravel(), self.lidar.ravel(), self.camera.ravel(),
                                              self.K.ravel()]), 9).tolist())


def _load_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SkipFile(path, f"not JSON: {e}") from None


def _matrix(value: Any, shape: tuple[int, int], path: Path, what: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise SkipFile(path, f"{what} is not a {shape[0]}x{shape[1]} matrix of numbers") from None
    if m.shape != shape:
        raise SkipFile(path, f"{what} has shape {m.shape}, expected {shape}")
    if not np.isfinite(m).all():
        raise SkipFile(path, f"{what} holds NaN/Inf")
    return m


def _rigid(value: Any, path: Path, what: str) -> tuple[np.ndarray, float]:
    T = _matrix(value, (4, 4), path, what)
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise SkipFile(path, f"{what}: last row is {T[3].tolist()}, not [0, 0, 0, 1]")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) <= 0:
        raise SkipFile(path, f"{what}: rotation part is not a rotation")
    return orthonormalize(T)


def read_calibration(path: Path) -> AstyxCalib:
    """Parse one ``calibration/*.json``; all three sensors are required (a frame is placed whole or not at all)."""
    doc = _load_json(path)
    sensors = doc.get("sensors") if isinstance(doc, dict) else None
    if not isinstance(sensors, list):
        raise SkipFile(path, "no 'sensors' list")
    by_uid = {s.get("sensor_uid"): s.get("calib_data") for s in sensors if isinstance(s, dict)}
    found: dict[str, np.ndarray] = {}
    change = 0.0
    for uid in (RADAR_UID, LIDAR_UID, CAMERA_UID):
        data = by_uid.get(uid)
        if not isinstance(data, dict) or "T_to_ref_COS" not in data:
            raise SkipFile(path, f"no {uid} T_to_ref_COS (sensors: {', '.join(str(u) for u in by_uid)})")
        found[uid], err = _rigid(data["T_to_ref_COS"], path, f"{uid} T_to_ref_COS")
        change = max(change, err)
    if "K" not in by_uid[CAMERA_UID]:
        raise SkipFile(path, f"no {CAMERA_UID} K")
    K = _matrix(by_uid[CAMERA_UID]["K"], (3, 3), path, f"{CAMERA_UID} K")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1.0) > 1e-9 or abs(K[1, 0]) + abs(K[2, 0]) + abs(K[2, 1]) > 0:
        raise SkipFile(path, f"{CAMERA_UID} K is not an upper-triangular pinhole matrix: {K.tolist()}")
    return AstyxCalib(found[RADAR_UID], found[LIDAR_UID], found[CAMERA_UID], K, change)


def base_from_ref(ref_height: float, level: np.ndarray | None = None) -> np.ndarray:
    """reference → base_link: levelled by `level` (3×3, the road normal to +z), then lifted by `ref_height`."""
    T = np.eye(4)
    if level is not None:
        T[:3, :3] = level
    T[2, 3] = ref_height
    return T


# --------------------------------------------------------------------------- ground truth


@dataclass
class AstyxLabel:
    """One object of a groundtruth_obj3d file, in the reference frame."""

    cls: str
    centre: np.ndarray  # (3,)
    size: tuple[float, float, float]  # length, width, height
    rotation: np.ndarray  # (3, 3) box → reference

    def box(self, base_from_ref: np.ndarray) -> list[float]:
        """Upright base_link box: centre through `base_from_ref` (4×4), yaw of the box x axis in base_link."""
        x, y, z = (float(v) for v in base_from_ref[:3, :3] @ self.centre + base_from_ref[:3, 3])
        return [x, y, z, *self.size, yaw_of(base_from_ref[:3, :3] @ self.rotation), 0.0, 0.0]


def parse_labels(path: Path, table: Mapping[str, str | None], report: ConversionReport) -> list[AstyxLabel]:
    """Objects of one label file. A bad object or unknown class is reported (file + object index) and skipped;
    known classes that are not converted are counted (``boxes_ignored_class``, ``ignored_class:<name>``)."""
    doc = _load_json(path)
    objects = doc.get("objects") if isinstance(doc, dict) else None
    if not isinstance(objects, list):
        raise SkipFile(path, "no 'objects' list")
    out: list[AstyxLabel] = []
    for i, o in enumerate(objects):
        where = f"{path}: objects[{i}]"
        if not isinstance(o, dict):
            report.skip(where, "not an object; box skipped")
            continue
        cls = o.get("classname")
        if not isinstance(cls, str) or cls not in table:
            report.skip(where, f"unknown class {cls!r} (known: {', '.join(sorted(table))}); box skipped")
            report.count("boxes_unknown_class")
            continue
        if table[cls] is None:
            report.count("boxes_ignored_class")
            report.count(f"ignored_class:{cls}")
            continue
        try:
            c = np.asarray(o["center3d"], np.float64).reshape(3)
            dims = np.asarray(o["dimension3d"], np.float64).reshape(3)
            q = np.asarray(o["orientation_quat"], np.float64).reshape(4)
        except KeyError as e:
            report.skip(where, f"no {e.args[0]}; box skipped")
            continue
        except (ValueError, TypeError):
            report.skip(where, "center3d/dimension3d/orientation_quat are not 3/3/4 numbers; box skipped")
            continue
        if not (np.isfinite(c).all() and np.isfinite(dims).all() and np.isfinite(q).all()) or dims.min() <= 0:
            report.skip(where, f"implausible centre/size/orientation {c.tolist()} {dims.tolist()} {q.tolist()}; "
                               "box skipped")
            continue
        if np.linalg.norm(q) < 1e-6:
            report.skip(where, "zero-length orientation_quat; box skipped")
            continue
        w, x, y, z = q
        R = quat_to_matrix([x, y, z, w])
        out.append(AstyxLabel(str(cls), c, (float(dims[0]), float(dims[1]), float(dims[2])), R))
    return out


def points_in_boxes(boxes: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N,) int: how many of the base_link points lie inside each upright box [x y z l w h yaw ...]."""
    out = np.zeros(len(boxes), np.int64)
    for k, b in enumerate(np.asarray(boxes, np.float64)):
        c, s = math.cos(b[6]), math.sin(b[6])
        d = pts - b[:3]
        along = d[:, 0] * c + d[:, 1] * s
        across = -d[:, 0] * s + d[:, 1] * c
        out[k] = int(((np.abs(along) <= b[3] / 2) & (np.abs(across) <= b[4] / 2) & (np.abs(d[:, 2]) <= b[5] / 2))
                     .sum())
    return out


# --------------------------------------------------------------------------- frames


@dataclass
class AstyxFrame:
    """One frame's files (paths may not exist: indexing and loading report them)."""

    frame: str
    number: int
    radar: Path
    lidar: Path
    image: Path
    calib: Path
    label: Path

    @property
    def split(self) -> str:
        return split_of(self.number)


def split_of(number: int) -> str:
    """``train`` (000000–000399: training and validation) or ``test`` (000400–: never train on these)."""
    return "train" if number <= LAST_TRAIN_FRAME else "test"


def find_base(root: Path) -> Path:
    """The folder holding radar_6455/, lidar_vlp16/, ...: `root` itself or ``root/dataset_astyx_hires2019``."""
    if not root.is_dir():
        raise ConversionError(f"{root}: no such directory")
    folders = (RADAR_DIR, LIDAR_DIR, CAMERA_DIR, CALIB_DIR, LABEL_DIR)
    for base in (root, root / DATASET_DIR):
        if any((base / d).is_dir() for d in folders):
            if not (base / CALIB_DIR).is_dir():
                raise ConversionError(f"{base}: no {CALIB_DIR}/ folder: without calibration no sensor can be placed")
            return base
    raise ConversionError(f"{root}: none of {', '.join(f + '/' for f in folders)} found, neither there nor under "
                          f"{DATASET_DIR}/ (expected the Astyx HiRes2019 layout)")


def index_frames(base: Path) -> list[AstyxFrame]:
    """Every frame named by any of the five folders, sorted by frame number."""
    stems: set[str] = set()
    for sub, ext in ((RADAR_DIR, ".txt"), (LIDAR_DIR, ".txt"), (CAMERA_DIR, ".jpg"), (CALIB_DIR, ".json"),
                     (LABEL_DIR, ".json")):
        d = base / sub
        if d.is_dir():
            stems.update(p.stem for p in d.iterdir() if p.suffix == ext and p.stem.isdigit())
    return [AstyxFrame(s, int(s), base / RADAR_DIR / f"{s}.txt", base / LIDAR_DIR / f"{s}.txt",
                       base / CAMERA_DIR / f"{s}.jpg", base / CALIB_DIR / f"{s}.json", base / LABEL_DIR / f"{s}.json")
            for s in sorted(stems, key=lambda x: (int(x), x))]


@dataclass
class FrameGroup:
    """Frames of one bag: one calibration, one split."""

    calib: AstyxCalib
    calib_index: int
    split: str
    frames: list[AstyxFrame]


def group_frames(frames: Sequence[AstyxFrame], report: ConversionReport) -> list[FrameGroup]:
    """Frames with identical calibration and the same split together; a frame without calibration is dropped."""
    calibs: dict[tuple[float, ...], int] = {}
    groups: dict[tuple[int, str], FrameGroup] = {}
    for f in frames:
        try:
            c = read_calibration(f.calib)
        except SkipFile as e:
            report.skip(e.path, f"{e.message}; frame {f.frame} skipped (its data cannot be placed without it)")
            report.count("frames_skipped")
            continue
        if c.key() not in calibs and c.max_orthonormal_change > 1e-6:  # once per distinct calibration
            report.warn(f.calib, f"rotations orthonormalised (max change {c.max_orthonormal_change:.2e})")
        ci = calibs.setdefault(c.key(), len(calibs))
        groups.setdefault((ci, f.split), FrameGroup(c, ci, f.split, [])).frames.append(f)
    return sorted(groups.values(), key=lambda g: (g.calib_index, g.split != "train"))


# --------------------------------------------------------------------------- conversion


def convert_astyx(
    root: str | Path,
    *,
    classes: Sequence[str] = DEFAULT_CLASSES,
    ref_height: float | None = None,
    frames: Sequence[str | int] | None = None,
    name: str | None = None,
) -> list[ConvertedDrive]:
    """Index an Astyx HiRes2019 set; one ConvertedDrive per (calibration, split).

    `frames` limits the conversion to those frame numbers (``["000400", ...]`` or ints). TEST frames
    (000400–000545) convert too, into their own bags with ``split: test``: use them only to evaluate,
    never to train, fine-tune, select checkpoints or tune thresholds. `ref_height` fixes the
    reference frame's height over the road (default: fitted per bag, see the module docstring).
    Raises ConversionError when nothing at all can be converted, ValueError for a bad `ref_height`.
    """
    if ref_height is not None and not (math.isfinite(ref_height) and 0.0 < ref_height < 10.0):
        raise ValueError(f"ref_height (--ref-height) must be a height in metres in (0, 10), got {ref_height!r}")
    root = Path(root)
    base = find_base(root)
    report = ConversionReport()
    all_frames = index_frames(base)
    if frames is not None:
        wanted = {int(f) for f in frames}
        all_frames = [f for f in all_frames if f.number in wanted]
    if not all_frames:
        raise ConversionError(f"{base}: no frames found ({CALIB_DIR}/*.json, {LIDAR_DIR}/*.txt, {RADAR_DIR}/*.txt, "
                              f"...)" + (" among the requested --frames" if frames is not None else ""))
    groups = group_frames(all_frames, report)
    if not groups:
        raise ConversionError(f"{base}: no frame has a usable calibration: "
                              + "; ".join(str(i) for i in report.skipped[:5]))
    stem = name or base.resolve().name or "astyx"
    n_calibs = len({g.calib_index for g in groups})
    drives = []
    for g in groups:
        drive_name = f"{stem}_{g.split}" + (f"_calib{g.calib_index}" if n_calibs > 1 else "")
        drives.append(_group_drive(drive_name, g, classes, ref_height, report, base))
    return drives


def _ground_sweeps(frames: Sequence[AstyxFrame], ref_from_lidar: np.ndarray) -> Iterable[np.ndarray]:
    """Up to `GROUND_FIT_SWEEPS` sweeps spread over `frames`, in the reference frame (unreadable ones skipped)."""
    usable = [f for f in frames if f.lidar.exists()]
    if len(usable) > GROUND_FIT_SWEEPS:
        usable = [usable[int(i)] for i in np.linspace(0, len(usable) - 1, GROUND_FIT_SWEEPS)]
    for f in usable:
        try:
            xyz = read_lidar_table(f.lidar).data[:, :3]
        except SkipFile:
            continue
        yield xyz @ ref_from_lidar[:3, :3].T + ref_from_lidar[:3, 3]


def _label_height(frames: Sequence[AstyxFrame]) -> float | None:
    """Median depth of the labelled boxes' bottoms below the reference origin, or None without labels."""
    quiet = ConversionReport()  # label problems are reported once, by the conversion itself
    bottoms: list[float] = []
    for f in frames:
        try:
            labels = parse_labels(f.label, ASTYX_CLASS_MAP, quiet)
        except SkipFile:
            continue
        bottoms += [float(lb.centre[2] - lb.size[2] / 2) for lb in labels]
    return float(-np.median(bottoms)) if bottoms else None


def reference_height(g: FrameGroup, report: ConversionReport, given: float | None
                     ) -> tuple[float, str, np.ndarray | None]:
    """(height of the reference origin over the road, how it was found, the levelling rotation or None) for one
    bag. The road plane levels base_link whenever a sweep shows it, a given height included."""
    fit = fit_lidar_height(_ground_sweeps(g.frames, g.calib.lidar))
    level = fit.level_rotation() if fit is not None else None
    if given is not None:
        return float(given), "given" + (f"; levelled by the road ({fit.tilt_deg():.1f} deg)" if fit else ""), level
    if fit is not None:
        return fit.height_m, fit.describe() + "; base_link levelled to it", level
    h = _label_height(g.frames)
    if h is not None:
        report.warn(g.frames[0].calib, f"no sweep shows a road plane; reference height {h:.3f} m estimated from "
                                       "the labelled boxes' bottoms (pass --ref-height to set it)")
        return h, "estimated from labels", None
    report.warn(g.frames[0].calib, f"no road plane and no labels; reference height {ASTYX_FALLBACK_REF_HEIGHT_M} m "
                                   "assumed (pass --ref-height to set it)")
    return ASTYX_FALLBACK_REF_HEIGHT_M, "assumed (no road plane, no labels)", None


def _ground_truth(f: AstyxFrame, stamp: int, labels: list[AstyxLabel], idx: list[int], to_base: np.ndarray,
                  base_from_lidar: np.ndarray, base_from_radar: np.ndarray) -> Obstacles:
    """Boxes of one frame with their LiDAR + radar return counts (None when either cloud is unreadable)."""
    boxes = [lb.box(to_base) for lb in labels]
    counts: list[int] | None = [] if not boxes else None
    if boxes:
        try:
            lidar = read_lidar_table(f.lidar).data[:, :3]
            radar = read_radar_table(f.radar).data[:, :3]
        except SkipFile:
            pass  # the sensor's own event reports the file; these boxes carry no count and are all scored
        else:
            pts = np.vstack([lidar @ base_from_lidar[:3, :3].T + base_from_lidar[:3, 3],
                             radar @ base_from_radar[:3, :3].T + base_from_radar[:3, 3]])
            counts = points_in_boxes(np.asarray(boxes), pts).tolist()
    return make_obstacles(stamp, boxes, idx, counts)


def _group_drive(drive_name: str, g: FrameGroup, classes: Sequence[str], ref_height: float | None,
                 report: ConversionReport, base: Path) -> ConvertedDrive:
    """Refs for one bag: LiDAR, radar, camera + info and ground truth per frame; the rig; the metadata."""
    h, h_source, level = reference_height(g, report, ref_height)
    to_base = base_from_ref(h, level)
    base_from_lidar = to_base @ g.calib.lidar
    base_from_radar = to_base @ g.calib.radar
    base_from_cam = to_base @ g.calib.camera
    K = g.calib.K
    size = first_image_size(f.image for f in g.frames)
    refs: list[EventRef] = []
    seen = {"lidar_top": 0, "radar_front": 0, "camera_front": 0}
    n_boxes = 0
    for k, f in enumerate(g.frames):
        stamp = DATASET_EPOCH_NS + k * FRAME_PERIOD_NS
        if f.lidar.exists():
            refs.append(EventRef("lidar_top", LIDAR_TOPIC, stamp, stamp,
                                 lambda p=f.lidar, s=stamp: load_lidar(p, s, report), str(f.lidar)))
            seen["lidar_top"] += 1
        else:
            report.skip(f.lidar, f"missing; frame {f.frame} has no LiDAR sweep")
        if f.radar.exists():
            refs.append(EventRef("radar_front", RADAR_TOPIC, stamp, stamp,
                                 lambda p=f.radar, s=stamp: load_radar(p, s, report), str(f.radar)))
            seen["radar_front"] += 1
        else:
            report.skip(f.radar, f"missing; frame {f.frame} has no radar scan")
        if f.image.exists() and size is not None:
            refs += camera_refs(stamp, K, size, f.image, f.calib)
            seen["camera_front"] += 1
        else:
            report.skip(f.image, f"missing; frame {f.frame} has no camera image")
        if not f.label.exists():
            report.skip(f.label, f"missing; frame {f.frame} has no ground truth")
            continue
        try:
            labels = parse_labels(f.label, ASTYX_CLASS_MAP, report)
        except SkipFile as e:
            report.skip(e.path, f"{e.message}; frame {f.frame} has no ground truth")
            continue
        keep: list[AstyxLabel] = []
        idx: list[int] = []
        for lb in labels:
            ours = map_class(lb.cls, ASTYX_CLASS_MAP, classes)
            if ours is None:
                report.count("boxes_not_in_classes")
                continue
            keep.append(lb)
            idx.append(list(classes).index(ours))
        n_boxes += len(keep)
        report.count("boxes", len(keep))
        refs.append(ground_truth_ref(stamp, stamp, lambda f=f, s=stamp, b=keep, i=idx: _ground_truth(
            f, s, b, i, to_base, base_from_lidar, base_from_radar), str(f.label)))
    size = size or ASTYX_IMAGE_SIZE
    sensors: dict[str, Any] = {
        "lidar_top": {
            "modality": "lidar", "topic": LIDAR_TOPIC, "frame_id": "lidar_top", "rate_hz": 10.0,
            "intensity_max": ASTYX_LIDAR_INTENSITY_MAX,
            "extrinsics": extrinsics_entry(base_from_lidar), "model": dict(ASTYX_SIM_MODELS["lidar_top"]),
        },
        "radar_front": {
            "modality": "radar", "topic": RADAR_TOPIC, "frame_id": "radar_front", "rate_hz": 10.0,
            "velocity_interval_mps": round(ASTYX_RADAR_VELOCITY_INTERVAL_MPS, 4),
            "extrinsics": extrinsics_entry(base_from_radar), "model": dict(ASTYX_SIM_MODELS["radar_front"]),
        },
        "camera_front": {
            "modality": "camera", "topic": CAMERA_TOPIC, "info_topic": CAMERA_INFO_TOPIC,
            "frame_id": "camera_front_optical", "rate_hz": 10.0,
            "extrinsics": extrinsics_entry(base_from_cam),
            "intrinsics": intrinsics_entry(size[0], size[1], K),
        },
    }
    comment = (f"Converted from Astyx HiRes2019 ({base}), {g.split.upper()} split, calibration {g.calib_index}. "
               f"base_link = the reference (radar_6455) frame levelled to the fitted road plane, with its origin "
               f"{h:.3f} m below the reference origin, on the road. Still frames: one "
               "per 100 ms in file order. radar_front rcs is a 0 dBsm placeholder (Astyx gives an uncalibrated "
               "magnitude, kept in field mag). camera_front: K from the dataset, no distortion given.")
    if g.split == "test":
        comment += " TEST split: evaluation only, never train or tune on it."
    absent = [s for s, n in seen.items() if n == 0]
    for s in absent:
        report.warn(drive_name, f"sensor {s} is in the rig but has no data in this recording")
    meta = {
        "dataset": "astyx", "source": str(base), "split": g.split, "calibration": str(g.calib_index),
        "frames": str(len(g.frames)), "first_frame": g.frames[0].frame, "last_frame": g.frames[-1].frame,
        "frame_list": " ".join(f.frame for f in g.frames),
        "ref_height_m": repr(h), "ref_height_source": h_source,
        "gt_boxes": str(n_boxes), "gt_velocity": "unavailable",
        "gt_num_points": "LiDAR + radar returns inside each upright box",
        "timestamps": "synthetic: still frames, one per 100 ms in file order",
        "lidar_point_time": "t = (Timestamp - last Timestamp of the sweep) in seconds",
        "radar_rcs": f"constant {UNKNOWN_RCS_DBSM} dBsm placeholder; Astyx Mag (uncalibrated) in field mag",
        "classes": " ".join(classes),
    }
    return ConvertedDrive(drive_name, rig_dict(drive_name, sensors, comment, still_frames=True), refs, report, meta,
                          absent)


__all__ = ["ASTYX_CLASS_MAP", "convert_astyx", "read_calibration", "parse_labels", "split_of"]
