"""KITTI object layout → ConvertedDrive(s): LiDAR, camera 2, labels as base_link boxes, rig.

Input: ``<root>/training/{velodyne,image_2,calib,label_2}/<frame>.{bin,png,txt,txt}``
(or ``<root>`` itself holding those folders). ``velodyne/*.bin`` is float32
x, y, z, reflectance in the Velodyne frame (x forward, y left, z up);
``calib/*.txt`` holds P0..P3 (3×4 rectified projections), R0_rect (3×3) and
Tr_velo_to_cam (3×4), so a LiDAR point reaches image 2 as
``P2 · R0_rect · Tr_velo_to_cam · x``. Labels are in the *rectified camera*
frame of camera 0 (x right, y down, z forward): ``location`` is the BOTTOM
centre of the box, ``dimensions`` are height, width, length, and
``rotation_y`` is the yaw about the camera y axis, zero when the box's length
runs along camera +x (so its heading vector is (cos ry, 0, −sin ry)).

base_link (documented in the generated rig file too): the Velodyne frame's
axes (x forward, y left, z up), with its origin moved straight down onto the
ground: base_link = velodyne − (0, 0, lidar_height). KITTI's Velodyne HDL-64E
sits 1.73 m above the road (Geiger et al., "Vision meets Robotics: The KITTI
Dataset", IJRR 2013, Fig. 3), the default height. So the LiDAR→base_link
extrinsic is a pure translation and a box's z is about its height/2, as in the
simulator. A label goes base_link ← velodyne ← rect through the inverses of
Tr_velo_to_cam and R0_rect; its heading vector goes the same way, and yaw is
its angle about +z.

Camera 2 becomes ``camera_front`` with K = P2[:, :3] and no distortion (KITTI
images are rectified). P2's fourth column is camera 2's offset from the
rectified camera 0 (t = K⁻¹ P2[:, 3]); it is folded into the camera's
extrinsic so that K · (x_cam2) reproduces P2 exactly.

Times: the object benchmark has none, and its frames are still frames: one
sweep each, ids not consecutive in time (adjacent ids may come from different
drives). KITTI frames are stamped one LiDAR period apart in file order — the
k-th frame of a bag at ``DATASET_EPOCH_NS + k × 100 ms``, whatever its id, so
no gap between ids makes the sensors stale — and the rig says
``still_frames: true``, so the pipeline never fuses a frame with the one before
it as "previous sweep": each frame is its own instant. (View-of-Delft, which
shares this module, records sequences: its frames keep ``id × 100 ms``.) Ground
truth velocities are unknown (KITTI object has no tracks): vx = vy = 0, and the
bag metadata says ``gt_velocity: unavailable``.

Frames come from different recording days with different calibrations, but a
bag has one rig: frames are grouped by calibration, one `ConvertedDrive`
(bag + rig file) per group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.events import SIM_EPOCH_NS
from ..core.types import DEFAULT_CLASSES, CameraInfo, CameraIntrinsics, CompressedImage, PointCloud
from .convert_common import (
    JPEG_MAGIC,
    KITTI_CLASS_MAP,
    PNG_MAGIC,
    ConversionError,
    ConversionReport,
    ConvertedDrive,
    EventRef,
    SkipFile,
    extrinsics_entry,
    first_image_size,
    ground_truth_ref,
    image_format,
    intrinsics_entry,
    make_obstacles,
    map_class,
    orthonormalize,
    read_bytes,
    read_float32_bin,
    rig_dict,
)

#: Height of KITTI's Velodyne above the ground (IJRR 2013 setup figure).
KITTI_LIDAR_HEIGHT_M = 1.73
#: Full scale of KITTI's Velodyne reflectance: `velodyne/*.bin` rows are float32 x, y, z, reflectance with the
#: reflectance in [0, 1] (KITTI object devkit, readme.txt; Geiger et al., IJRR 2013 §III), not the 0–255 of
#: Velodyne packets. Written to the rig as the LiDAR's `intensity_max`.
KITTI_INTENSITY_MAX = 1.0
#: Stamps for datasets that have none start here (the simulator's epoch: plausible, never 1970).
DATASET_EPOCH_NS = SIM_EPOCH_NS
FRAME_PERIOD_NS = 100_000_000

LIDAR_TOPIC = "/sensors/lidar_top/points"
CAMERA_TOPIC = "/sensors/camera_front/image_raw/compressed"
CAMERA_INFO_TOPIC = "/sensors/camera_front/camera_info"
LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])


@dataclass
class KittiCalib:
    """The three matrices of a KITTI calib file that place LiDAR, camera 2 and labels."""

    P2: np.ndarray  # (3, 4)
    R0_rect: np.ndarray  # (3, 3)
    Tr_velo_to_cam: np.ndarray  # (3, 4)

    def rect_from_velo(self) -> np.ndarray:
        """4×4 mapping Velodyne points into the rectified camera frame (R0_rect · Tr_velo_to_cam)."""
        R0 = np.eye(4)
        R0[:3, :3] = self.R0_rect
        Tr = np.eye(4)
        Tr[:3, :] = self.Tr_velo_to_cam
        return R0 @ Tr

    def key(self) -> tuple[float, ...]:
        return tuple(np.round(np.concatenate([self.P2.ravel(), self.R0_rect.ravel(),
                                              self.Tr_velo_to_cam.ravel()]), 9).tolist())


def read_calib(path: Path, *, velo_key: str = "Tr_velo_to_cam") -> KittiCalib:
    """Parse a KITTI calib file; a missing file, key or malformed row raises SkipFile naming it."""
    if not path.is_file():
        raise SkipFile(path, "calibration file missing")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SkipFile(path, f"cannot read: {e}") from None
    rows: dict[str, np.ndarray] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, values = line.partition(":")
        if not sep:
            raise SkipFile(path, f"line {n}: expected 'KEY: numbers'")
        try:
            arr = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError:
            raise SkipFile(path, f"line {n} ({key.strip()}): not all numbers") from None
        if not np.isfinite(arr).all():
            raise SkipFile(path, f"line {n} ({key.strip()}): NaN/Inf")
        rows[key.strip()] = arr
    # KITTI raw names R0_rect "R_rect" in some exports and Tr_velo_to_cam "Tr_velo_cam"
    aliases = {"R0_rect": ("R0_rect", "R_rect"), velo_key: (velo_key, velo_key.replace("_to_", "_"))}
    found: dict[str, np.ndarray] = {}
    for want, shape in (("P2", (3, 4)), ("R0_rect", (3, 3)), (velo_key, (3, 4))):
        names = aliases.get(want, (want,))
        arr = next((rows[a] for a in names if a in rows), None)
        if arr is None:
            raise SkipFile(path, f"no {want} row (have {sorted(rows)})")
        if arr.size != shape[0] * shape[1]:
            raise SkipFile(path, f"{want} has {arr.size} numbers, expected {shape[0] * shape[1]}")
        found[want] = arr.reshape(shape)
    if abs(np.linalg.det(found["R0_rect"])) < 1e-6 or abs(np.linalg.det(found[velo_key][:, :3])) < 1e-6:
        raise SkipFile(path, "R0_rect or the rotation of Tr_velo_to_cam is singular")
    K = found["P2"][:, :3]
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1.0) > 1e-9 or abs(K[1, 0]) + abs(K[2, 0]) + abs(K[2, 1]) > 0:
        raise SkipFile(path, f"P2 is not a pinhole projection K[I|t] with K upper-triangular: {K.tolist()}")
    return KittiCalib(found["P2"], found["R0_rect"], found[velo_key])


@dataclass
class KittiLabel:
    cls: str
    h: float
    w: float
    l: float
    x: float
    y: float
    z: float
    ry: float


def parse_labels(path: Path, table: Mapping[str, str | None], report: ConversionReport) -> list[KittiLabel]:
    """Label lines of one file; a bad line or unknown class is reported (naming file:line) and skipped."""
    if not path.is_file():
        raise SkipFile(path, "label file missing")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SkipFile(path, f"cannot read: {e}") from None
    out: list[KittiLabel] = []
    for n, line in enumerate(text.splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        where = f"{path}:{n}"
        if tok[0] not in table:
            report.skip(where, f"unknown class {tok[0]!r} (known: {', '.join(sorted(table))}); box skipped")
            report.count("boxes_unknown_class")
            continue
        if table[tok[0]] is None:
            report.count("boxes_ignored_class")
            continue
        if len(tok) < 15:
            report.skip(where, f"{len(tok)} fields, a KITTI label line has 15 (16 with score); box skipped")
            continue
        try:
            v = [float(t) for t in tok[8:15]]
        except ValueError:
            report.skip(where, "dimensions/location/rotation_y are not numbers; box skipped")
            continue
        if not all(math.isfinite(x) for x in v) or min(v[:3]) <= 0:
            report.skip(where, f"implausible dimensions/location {v}; box skipped")
            continue
        out.append(KittiLabel(tok[0], *v))
    return out


def label_to_box(label: KittiLabel, base_from_rect: np.ndarray) -> list[float]:
    """A KITTI label (rectified camera frame, bottom centre, yaw about camera y) → base_link box.

    The centre is half a height above the bottom centre, i.e. at y − h/2
    (camera y points down); the heading (cos ry, 0, −sin ry) is rotated into
    base_link and yaw is its angle about +z.
    """
    centre = base_from_rect @ np.array([label.x, label.y - label.h / 2.0, label.z, 1.0])
    heading = base_from_rect[:3, :3] @ np.array([math.cos(label.ry), 0.0, -math.sin(label.ry)])
    yaw = math.atan2(heading[1], heading[0])
    return [float(centre[0]), float(centre[1]), float(centre[2]), label.l, label.w, label.h, yaw, 0.0, 0.0]


def camera_from_projection(P: np.ndarray, base_from_rect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, base_from_camera) of a rectified camera with projection P = K [I | t] in the rect frame."""
    K = np.array(P[:, :3], dtype=np.float64)
    t = np.linalg.solve(K, P[:, 3])
    rect_from_cam = np.eye(4)
    rect_from_cam[:3, 3] = -t
    return K, base_from_rect @ rect_from_cam


def base_from_velo(lidar_height: float) -> np.ndarray:
    T = np.eye(4)
    T[2, 3] = lidar_height
    return T


@dataclass
class KittiFrame:
    """One frame's files (paths may not exist: loading reports them)."""

    frame: str
    number: int
    velodyne: Path
    image: Path
    calib: Path
    label: Path


def find_split(root: Path, split: str) -> Path:
    """`root/<split>` when it exists, else `root` itself if it holds velodyne/ or calib/."""
    if not root.is_dir():
        raise ConversionError(f"{root}: no such directory")
    if (root / split).is_dir():
        return root / split
    if (root / "velodyne").is_dir() or (root / "calib").is_dir():
        return root
    raise ConversionError(f"{root}: neither {root / split} nor velodyne/ and calib/ folders found "
                          "(expected the KITTI object layout <root>/training/{velodyne,image_2,calib,label_2})")


def index_frames(base: Path, image_dir: str = "image_2") -> list[KittiFrame]:
    """Every frame named by any of the folders, sorted by frame number."""
    stems: set[str] = set()
    for sub, exts in (("velodyne", (".bin",)), (image_dir, (".png", ".jpg")), ("calib", (".txt",)),
                      ("label_2", (".txt",))):
        d = base / sub
        if d.is_dir():
            stems.update(p.stem for p in d.iterdir() if p.suffix in exts and p.stem.isdigit())
    frames = []
    for s in sorted(stems, key=lambda x: (int(x), x)):
        img = base / image_dir / f"{s}.png"
        if not img.exists() and (base / image_dir / f"{s}.jpg").exists():
            img = base / image_dir / f"{s}.jpg"
        frames.append(KittiFrame(s, int(s), base / "velodyne" / f"{s}.bin", img, base / "calib" / f"{s}.txt",
                                 base / "label_2" / f"{s}.txt"))
    return frames


def load_lidar(path: Path, stamp_ns: int) -> PointCloud:
    data = read_float32_bin(path, 4)
    pts = np.empty(len(data), LIDAR_DTYPE)
    for i, name in enumerate(LIDAR_DTYPE.names or ()):
        pts[name] = data[:, i]
    return PointCloud(stamp_ns, "lidar_top", pts)


def load_image(path: Path, stamp_ns: int, frame_id: str = "camera_front_optical") -> CompressedImage:
    data = read_bytes(path, (JPEG_MAGIC, PNG_MAGIC))
    return CompressedImage(stamp_ns, frame_id, data, image_format(data))


def camera_info(stamp_ns: int, K: np.ndarray, size: tuple[int, int],
                frame_id: str = "camera_front_optical") -> CameraInfo:
    intr = CameraIntrinsics(size[0], size[1], K.copy(), np.zeros(5), "plumb_bob", np.eye(3),
                            np.hstack([K, np.zeros((3, 1))]))
    return CameraInfo(stamp_ns, frame_id, intr)


def camera_refs(stamp_ns: int, K: np.ndarray, size: tuple[int, int], image: Path, calib_source: Path
                ) -> list[EventRef]:
    """The front camera of one still-image frame: its CameraInfo (from the calibration) and its image, both at
    `stamp_ns` (shared by the KITTI-layout and Astyx converters)."""
    return [
        EventRef("camera_front", CAMERA_INFO_TOPIC, stamp_ns, stamp_ns,
                 lambda s=stamp_ns, sz=size: camera_info(s, K, sz), str(calib_source)),
        EventRef("camera_front", CAMERA_TOPIC, stamp_ns, stamp_ns,
                 lambda p=image, s=stamp_ns: load_image(p, s), str(image)),
    ]


@dataclass
class CalibGroup:
    calib: KittiCalib
    frames: list[KittiFrame]


def group_by_calib(frames: Sequence[KittiFrame], report: ConversionReport,
                   read: Any = read_calib) -> list[CalibGroup]:
    """Frames with identical calibration together; a frame whose calib is missing/bad is reported and dropped."""
    groups: dict[tuple[float, ...], CalibGroup] = {}
    for f in frames:
        try:
            c = read(f.calib)
        except SkipFile as e:
            report.skip(e.path, f"{e.message}; frame {f.frame} skipped (its data cannot be placed without it)")
            report.count("frames_skipped")
            continue
        groups.setdefault(c.key(), CalibGroup(c, [])).frames.append(f)
    return list(groups.values())


def calibration_groups(base: Path, frames: Sequence[int] | None, report: ConversionReport) -> list:
    """Index a KITTI-layout split, keep the requested frames, group them by calibration.

    Shared by KITTI and View-of-Delft (same layout); raises ConversionError when
    nothing usable is left, naming the folder and the first problems found.
    """
    all_frames = index_frames(base)
    if frames is not None:
        wanted = set(frames)
        all_frames = [f for f in all_frames if f.frame in wanted]
    if not all_frames:
        raise ConversionError(f"{base}: no frames found (velodyne/*.bin, image_2/*.png, calib/*.txt)")
    groups = group_by_calib(all_frames, report)
    if not groups:
        raise ConversionError(f"{base}: no frame has a usable calibration: "
                              + "; ".join(str(i) for i in report.skipped[:5]))
    return groups


def convert_kitti(
    root: str | Path,
    *,
    split: str = "training",
    classes: Sequence[str] = DEFAULT_CLASSES,
    lidar_height: float = KITTI_LIDAR_HEIGHT_M,
    frames: Sequence[str] | None = None,
    name: str | None = None,
) -> list[ConvertedDrive]:
    """Index a KITTI object dataset; one ConvertedDrive per distinct calibration.

    `frames` limits the conversion to those frame names (e.g. ``["000000"]``).
    Raises ConversionError when nothing at all can be converted.
    """
    root = Path(root)
    base = find_split(root, split)
    report = ConversionReport()
    groups = calibration_groups(base, frames, report)
    stem = name or root.resolve().name or "kitti"
    drives = []
    for gi, g in enumerate(groups):
        drive_name = stem if len(groups) == 1 else f"{stem}_calib{gi}"
        drives.append(_group_drive(drive_name, g, classes, lidar_height, report, KITTI_CLASS_MAP, "kitti"))
    return drives


def _group_drive(drive_name: str, g: CalibGroup, classes: Sequence[str], lidar_height: float,
                 report: ConversionReport, table: Mapping[str, str | None], dataset: str,
                 intensity_max: float = KITTI_INTENSITY_MAX, still_frames: bool = True) -> ConvertedDrive:
    """Refs for one calibration group: LiDAR, camera + info and ground truth per frame."""
    calib = g.calib
    base_from_rect = base_from_velo(lidar_height) @ np.linalg.inv(calib.rect_from_velo())
    K, base_from_cam = camera_from_projection(calib.P2, base_from_rect)
    cam_T, err = orthonormalize(base_from_cam)
    if err > 1e-6:
        report.warn(g.frames[0].calib, f"camera rotation orthonormalised (max change {err:.2e})")
    size = first_image_size(f.image for f in g.frames)
    refs: list[EventRef] = []
    seen = {"lidar_top": 0, "camera_front": 0}
    for k, f in enumerate(g.frames):
        stamp = DATASET_EPOCH_NS + (k if still_frames else f.number) * FRAME_PERIOD_NS
        if f.velodyne.exists():
            refs.append(EventRef("lidar_top", LIDAR_TOPIC, stamp, stamp,
                                 lambda p=f.velodyne, s=stamp: load_lidar(p, s), str(f.velodyne)))
            seen["lidar_top"] += 1
        else:
            report.skip(f.velodyne, f"missing; frame {f.frame} has no LiDAR sweep")
        if f.image.exists() and size is not None:
            refs += camera_refs(stamp, K, size, f.image, f.calib)
            seen["camera_front"] += 1
        else:
            report.skip(f.image, f"missing; frame {f.frame} has no camera image")
        if f.label.exists():
            try:
                labels = parse_labels(f.label, table, report)
            except SkipFile as e:
                report.skip(e.path, e.message)
            else:
                keep: list[list[float]] = []
                idx: list[int] = []
                for lb in labels:
                    ours = map_class(lb.cls, table, classes)
                    if ours is not None:
                        keep.append(label_to_box(lb, base_from_rect))
                        idx.append(list(classes).index(ours))
                report.count("boxes", len(keep))
                refs.append(ground_truth_ref(stamp, stamp, lambda s=stamp, b=keep, i=idx: make_obstacles(s, b, i),
                                             str(f.label)))
    size = size or (1242, 375)
    sensors: dict[str, Any] = {
        "lidar_top": {
            "modality": "lidar", "topic": LIDAR_TOPIC, "frame_id": "lidar_top", "rate_hz": 10.0,
            "intensity_max": float(intensity_max),
            "extrinsics": extrinsics_entry(base_from_velo(lidar_height)),
        },
        "camera_front": {
            "modality": "camera", "topic": CAMERA_TOPIC, "info_topic": CAMERA_INFO_TOPIC,
            "frame_id": "camera_front_optical", "rate_hz": 10.0,
            "extrinsics": extrinsics_entry(cam_T),
            "intrinsics": intrinsics_entry(size[0], size[1], K),
        },
    }
    comment = (f"Converted from {dataset} ({g.frames[0].calib.parent}). base_link = the LiDAR frame's axes "
               f"(x forward, y left, z up) with its origin {lidar_height:.3f} m below the LiDAR, on the ground. "
               "camera_front is the rectified camera 2 (K = P2[:, :3], no distortion).")
    absent = [s for s, n in seen.items() if n == 0]
    for s in absent:
        report.warn(drive_name, f"sensor {s} is in the rig but has no data in this recording")
    meta = {
        "dataset": dataset, "source": str(g.frames[0].calib.parent.parent), "frames": str(len(g.frames)),
        "first_frame": g.frames[0].frame, "last_frame": g.frames[-1].frame, "lidar_height_m": repr(lidar_height),
        "gt_velocity": "unavailable",
        "timestamps": ("synthetic: still frames, one per 100 ms in file order" if still_frames
                       else "synthetic: frame number x 100 ms"),
        "classes": " ".join(classes),
    }
    return ConvertedDrive(drive_name, rig_dict(drive_name, sensors, comment, still_frames), refs, report, meta,
                          absent)
