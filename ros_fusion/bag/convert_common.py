"""Shared pieces of the dataset converters (KITTI, View-of-Delft, nuScenes → bags + rig files).

A converter indexes a dataset into `EventRef`s - one per future bag message,
with its times and a `load()` that reads the file only when the bag writer
asks for it - so a scene of hundreds of JPEGs and sweeps never sits in memory
and the events can be sorted by publish time before anything is read.

Datasets are untrusted input: a missing calibration, a truncated ``.bin`` or
an unknown class must not stop a conversion. Everything that is skipped is
recorded in a `ConversionReport` as an `Issue` naming the file (and line), the
rest converts, and the command prints the report and stores its counts in the
bag metadata. Only "nothing usable at all" raises `ConversionError`.

No rclpy here (bag/ is ROS-free): payloads are core types; the command turns
them into messages through `ros.bag_io.write_drive`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.events import GROUND_TRUTH_TOPIC, SensorEvent
from ..core.rig import Rig, rig_from_dict
from ..core.transforms import matrix_to_quat, so3_log
from ..core.types import DEFAULT_CLASSES, Obstacles, Odometry

#: KITTI object classes → ours. None = known but deliberately not converted (DontCare regions,
#: Misc, trams: no class of ours fits them). A name in neither set is reported as unknown.
KITTI_CLASS_MAP: dict[str, str | None] = {
    "Car": "car",
    "Van": "car",
    "Truck": "truck",
    "Pedestrian": "pedestrian",
    "Person_sitting": "pedestrian",
    "Cyclist": "cyclist",
    "Tram": None,
    "Misc": None,
    "DontCare": None,
}

#: View-of-Delft classes (its label_2 files) → ours. VoD labels a cyclist as the
#: ``Cyclist`` box (rider + bike); ``rider``/``bicycle`` alone are parts or parked bikes.
VOD_CLASS_MAP: dict[str, str | None] = {
    "Car": "car",
    "Pedestrian": "pedestrian",
    "Cyclist": "cyclist",
    "truck": "truck",
    "moped_scooter": "cyclist",
    "motor": "cyclist",
    "rider": None,
    "bicycle": None,
    "bicycle_rack": None,
    "human_depiction": None,
    "ride_other": None,
    "ride_uncertain": None,
    "uncertain_ride": None,
    "vehicle_other": None,
    "DontCare": None,
}

#: nuScenes category → ours, following the nuScenes detection challenge's grouping
#: (emergency vehicles, animals, cones, debris and pushables are not detection classes).
NUSCENES_CATEGORY_MAP: dict[str, str | None] = {
    "vehicle.car": "car",
    "vehicle.truck": "truck",
    "vehicle.trailer": "truck",
    "vehicle.construction": "truck",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.bicycle": "cyclist",
    "vehicle.motorcycle": "cyclist",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.wheelchair": None,
    "human.pedestrian.stroller": None,
    "human.pedestrian.personal_mobility": None,
    "movable_object.barrier": "barrier",
    "movable_object.trafficcone": None,
    "movable_object.pushable_pullable": None,
    "movable_object.debris": None,
    "static_object.bicycle_rack": None,
    "animal": None,
    "vehicle.emergency.ambulance": None,
    "vehicle.emergency.police": None,
}


class ConversionError(RuntimeError):
    """The dataset as a whole cannot be converted (no such root, no frames, no calibration at all)."""


class SkipFile(ValueError):
    """One file (or line) is unusable; `path` names it. The converter records it and goes on."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass
class Issue:
    path: str
    message: str
    kind: str = "skipped"  # "skipped" (data left out) or "warning" (converted, but worth knowing)

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class ConversionReport:
    """Everything a conversion skipped or doubted, each naming its file, plus simple counters."""

    issues: list[Issue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def skip(self, path: str | Path, message: str) -> None:
        self.issues.append(Issue(str(path), message, "skipped"))

    def warn(self, path: str | Path, message: str) -> None:
        self.issues.append(Issue(str(path), message, "warning"))

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    @property
    def skipped(self) -> list[Issue]:
        return [i for i in self.issues if i.kind == "skipped"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.kind == "warning"]

    def lines(self) -> list[str]:
        return [str(i) for i in self.issues]


@dataclass
class EventRef:
    """One future bag message: where and when, and how to read it (lazily)."""

    sensor: str
    topic: str
    stamp_ns: int
    publish_ns: int
    load: Callable[[], Any]
    source: str = ""


@dataclass
class ConvertedDrive:
    """One bag's worth of converted data: the rig (as a rig-file dict) and its sorted events.

    `events()` yields `SensorEvent`s sorted by publish time (ties keep index
    order, so a CameraInfo stays next to its image); a ref whose file turns out
    unreadable while loading is recorded in `report` and left out.
    `absent_sensors` lists rig sensors with no data in this recording (reported,
    not fatal: the rig still describes the car).
    """

    name: str
    rig: dict[str, Any]
    refs: list[EventRef]
    report: ConversionReport
    metadata: dict[str, str] = field(default_factory=dict)
    absent_sensors: list[str] = field(default_factory=list)

    def rig_object(self) -> Rig:
        return rig_from_dict(self.rig, source=f"{self.name} (generated rig)")

    def sorted_refs(self) -> list[EventRef]:
        order = sorted(range(len(self.refs)), key=lambda i: (self.refs[i].publish_ns, i))
        return [self.refs[i] for i in order]

    def events(self) -> Iterator[SensorEvent]:
        for ref in self.sorted_refs():
            try:
                payload = ref.load()
            except SkipFile as e:
                self.report.skip(e.path, e.message)
                self.report.count(f"skipped_{ref.sensor}")
                continue
            self.report.count(f"written_{ref.sensor}")
            yield SensorEvent(ref.sensor, ref.topic, int(ref.stamp_ns), int(ref.publish_ns), payload)

    def bag_metadata(self) -> dict[str, str]:
        """custom_data for the bag: converter metadata + what was absent or skipped while indexing."""
        out = dict(self.metadata)
        out["absent_sensors"] = " ".join(self.absent_sensors)
        out["skipped_at_index"] = str(len(self.report.skipped))
        if self.report.skipped:
            out["skipped_files"] = "\n".join(str(i) for i in self.report.skipped[:200])
        return out


# --------------------------------------------------------------------------- classes


def class_index(name: str, classes: Sequence[str] = DEFAULT_CLASSES) -> int:
    return list(classes).index(name)


def map_class(raw: str, table: Mapping[str, str | None], classes: Sequence[str]) -> str | None:
    """Our class for a dataset class; None if deliberately ignored or not in `classes`.

    Raises KeyError for a class the table does not know (the caller reports it with the file).
    """
    if raw not in table:
        raise KeyError(raw)
    ours = table[raw]
    return ours if ours is not None and ours in classes else None


# --------------------------------------------------------------------------- files


def read_float32_bin(path: Path, n_fields: int) -> np.ndarray:
    """(N, n_fields) float32 from a raw little-endian ``.bin``; a truncated or empty file raises SkipFile."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SkipFile(path, f"cannot read: {e.strerror or e}") from None
    record = 4 * n_fields
    if size == 0:
        raise SkipFile(path, "empty file (0 points)")
    if size % record:
        raise SkipFile(path, f"truncated: {size} bytes is not a multiple of {record} "
                             f"({n_fields} float32 per point)")
    data = np.fromfile(path, dtype="<f4").reshape(-1, n_fields)
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).any(axis=1).sum())
        raise SkipFile(path, f"{bad} points with NaN/Inf values")
    return data


def read_bytes(path: Path, magic: Sequence[bytes] = ()) -> bytes:
    """A whole file; SkipFile when unreadable, empty, or not starting with one of `magic`."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SkipFile(path, f"cannot read: {e.strerror or e}") from None
    if not data:
        raise SkipFile(path, "empty file")
    if magic and not any(data.startswith(m) for m in magic):
        raise SkipFile(path, "not a JPEG/PNG file (bad magic bytes)")
    return data


def read_text(path: Path) -> str:
    """A whole text file; SkipFile when missing, unreadable, not UTF-8 or blank."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SkipFile(path, "missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SkipFile(path, f"cannot read: {e}") from None
    if not text.strip():
        raise SkipFile(path, "empty file")
    return text


JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_format(data: bytes) -> str:
    return "png" if data.startswith(PNG_MAGIC) else "jpeg"


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a JPEG/PNG file by decoding it once (also proves the file is an image)."""
    import cv2

    data = read_bytes(path, (JPEG_MAGIC, PNG_MAGIC))
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise SkipFile(path, "image does not decode")
    return int(img.shape[1]), int(img.shape[0])


# --------------------------------------------------------------------------- rig helpers


def first_image_size(paths: Iterable[Path]) -> tuple[int, int] | None:
    """(width, height) of the first readable image among `paths` (a rig has one size per camera), or None."""
    for p in paths:
        if p.exists():
            try:
                return image_size(p)
            except SkipFile:
                continue
    return None


def orthonormalize(T: np.ndarray) -> tuple[np.ndarray, float]:
    """Nearest rigid transform (SVD) and how far the rotation part was from orthonormal.

    Dataset calibrations are printed with ~9 digits, so their rotations are not
    exactly orthonormal; the rig format requires that they are.
    """
    T = np.asarray(T, dtype=np.float64)
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = T[:3, 3]
    return out, float(np.abs(R - T[:3, :3]).max())


def extrinsics_entry(T: np.ndarray) -> dict[str, Any]:
    """4×4 → rig-file ``{matrix: [[...], ...]}`` with full float precision."""
    return {"matrix": [[float(v) for v in row] for row in np.asarray(T, dtype=np.float64)]}


def intrinsics_entry(width: int, height: int, K: np.ndarray, D: Sequence[float] | None = None,
                     model: str = "plumb_bob") -> dict[str, Any]:
    n = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}[model]
    return {
        "width": int(width), "height": int(height),
        "fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
        "distortion_model": model,
        "D": [float(v) for v in (D if D is not None else [0.0] * n)],
    }


def rig_dict(name: str, sensors: dict[str, dict[str, Any]], comment: str, still_frames: bool = False
             ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "base_frame": "base_link", "description": comment}
    if still_frames:
        meta["still_frames"] = True
    return {"rig": meta, "sensors": sensors}


# --------------------------------------------------------------------------- ground truth / motion


def yaw_of(R: np.ndarray) -> float:
    """Heading about +z of a rotation's x axis (its projection on the ground plane)."""
    return float(math.atan2(R[1, 0], R[0, 0]))


def make_obstacles(stamp_ns: int, boxes: list[list[float]], labels: list[int],
                   num_points: list[int] | None = None) -> Obstacles:
    """Ground truth; `num_points` (LiDAR + radar returns per box) where the dataset annotates them."""
    n = len(boxes)
    return Obstacles(
        stamp_ns, "base_link",
        np.asarray(boxes, np.float32).reshape(n, 9),
        np.ones(n, np.float32),
        np.asarray(labels, np.int32).reshape(n),
        np.zeros((n, 3), np.float32),
        None if num_points is None else np.asarray(num_points, np.int32).reshape(n),
    )


def odometry_from_poses(stamps_ns: Sequence[int], poses: Sequence[np.ndarray], *, frame_id: str = "odom",
                        max_gap_s: float = 0.5) -> list[Odometry]:
    """Odometry of base_link from a pose sequence (4×4 base_link → odom), twist by finite differences.

    Velocities are body-frame (nav_msgs convention): the central difference of
    neighbours less than `max_gap_s` apart, one-sided at the ends; a pose
    with no neighbour in reach gets zero twist (it is still a valid pose).
    """
    n = len(poses)
    out: list[Odometry] = []
    t = np.asarray(stamps_ns, dtype=np.int64)
    for i in range(n):
        lo = i - 1 if i > 0 and (t[i] - t[i - 1]) / 1e9 <= max_gap_s else i
        hi = i + 1 if i + 1 < n and (t[i + 1] - t[i]) / 1e9 <= max_gap_s else i
        R = poses[i][:3, :3]
        v = np.zeros(3)
        w = np.zeros(3)
        if hi != lo:
            dt = (t[hi] - t[lo]) / 1e9
            v = R.T @ (poses[hi][:3, 3] - poses[lo][:3, 3]) / dt
            w = so3_log(poses[lo][:3, :3].T @ poses[hi][:3, :3]) / dt
        out.append(Odometry(int(t[i]), frame_id, "base_link", poses[i][:3, 3].copy(),
                            matrix_to_quat(R), v, w))
    return out


def ground_truth_ref(stamp_ns: int, publish_ns: int, load: Callable[[], Obstacles], source: str) -> EventRef:
    return EventRef("ground_truth", GROUND_TRUTH_TOPIC, stamp_ns, publish_ns, load, source)
