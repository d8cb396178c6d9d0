"""Plain data types shared by every layer (docs/DESIGN.md §4).

Everything here is numpy + dataclasses so that the simulator, the bag tools,
the evaluator and the ROS adapters exchange the same objects without ROS.
Times are int64 nanoseconds, units SI, angles radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

NS_PER_S = 1_000_000_000

#: Default class list (docs/DESIGN.md §4). Configurable through the fusion config.
DEFAULT_CLASSES: tuple[str, ...] = ("car", "truck", "bus", "pedestrian", "cyclist", "barrier")

#: Modalities that produce BEV features; IMU/odometry only condition them.
FEATURE_MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar")
MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar", "imu", "odometry")

#: Column layout of the `~/obstacles` PointCloud2 and `/ground_truth/obstacles` (docs/DESIGN.md §5).
OBSTACLE_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "length", "width", "height", "yaw", "vx", "vy",
    "score", "label", "w_camera", "w_lidar", "w_radar",
)
#: Optional 15th column of ground-truth obstacle tables: LiDAR + radar returns on the box.
GT_POINTS_FIELD = "num_points"
#: A box is [x, y, z, length, width, height, yaw, vx, vy] (docs/DESIGN.md §4).
BOX_DIM = 9


class Modality(str, Enum):
    """Kind of sensor; the value is the string used in configs."""

    CAMERA = "camera"
    LIDAR = "lidar"
    RADAR = "radar"
    IMU = "imu"
    ODOMETRY = "odometry"


@dataclass
class PointCloud:
    """A point cloud in its sensor frame.

    `points` is a numpy *structured* array with at least float fields x, y, z;
    other fields (intensity, t, ring, v_r, rcs, ...) keep their names. Reading a
    PointCloud2 gives a zero-copy view whose dtype mirrors the message layout
    (offsets, padding, endianness), so nothing is copied until a field is used.
    Per-point time, when present, is in field ``t``/``time``/``timestamp``
    (seconds relative to `stamp_ns` when small, else absolute; see `point_times_ns`).
    For an organised cloud, `height` > 1 and `points` has height*width rows.
    """

    stamp_ns: int
    frame_id: str
    points: np.ndarray
    height: int = 1
    is_dense: bool = False

    @property
    def width(self) -> int:
        return len(self.points) // max(self.height, 1)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.points.dtype.names or ())

    def xyz(self) -> np.ndarray:
        """(N, 3) float32 copy of the coordinates."""
        out = np.empty((len(self.points), 3), dtype=np.float32)
        out[:, 0] = self.points["x"]
        out[:, 1] = self.points["y"]
        out[:, 2] = self.points["z"]
        return out

    def field(self, name: str) -> np.ndarray:
        return self.points[name]

    def has(self, name: str) -> bool:
        return name in self.field_names


@dataclass
class Image:
    """A camera image. `data` is (H, W, C) or (H, W); `encoding` is a ROS encoding name."""

    stamp_ns: int
    frame_id: str
    data: np.ndarray
    encoding: str = "rgb8"

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def width(self) -> int:
        return int(self.data.shape[1])


@dataclass
class CompressedImage:
    """An already-encoded camera frame (JPEG or PNG bytes) carried as it is.

    Dataset converters use it so a recorded JPEG reaches the bag byte for byte
    (no decode/re-encode loss, no CPU spent); `format` follows image_transport
    (``"jpeg"``, ``"png"`` or ``"rgb8; jpeg compressed bgr8"``). Readers decode
    it into an `Image` (ros/messages.py `from_message`).
    """

    stamp_ns: int
    frame_id: str
    data: bytes
    format: str = "jpeg"


@dataclass
class CameraIntrinsics:
    """Pinhole intrinsics + distortion as in sensor_msgs/CameraInfo.

    `distortion_model` is ``plumb_bob`` (k1 k2 t1 t2 k3), ``rational_polynomial``
    or ``equidistant`` (k1..k4, the fisheye model).
    """

    width: int
    height: int
    K: np.ndarray  # (3, 3)
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = "plumb_bob"
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None  # (3, 4); defaults to [K | 0]

    def projection(self) -> np.ndarray:
        if self.P is not None:
            return np.asarray(self.P, dtype=np.float64)
        return np.hstack([np.asarray(self.K, dtype=np.float64), np.zeros((3, 1))])


@dataclass
class CameraInfo:
    """Stamped intrinsics (what arrives on a camera_info topic)."""

    stamp_ns: int
    frame_id: str
    intrinsics: CameraIntrinsics


@dataclass
class ImuSample:
    """One IMU reading in its frame. A covariance of None means unknown (ROS: element 0 = -1)."""

    stamp_ns: int
    frame_id: str
    angular_velocity: np.ndarray  # (3,) rad/s
    linear_acceleration: np.ndarray  # (3,) m/s^2, gravity included (specific force)
    orientation: np.ndarray | None = None  # (4,) quaternion x y z w, None = not provided
    angular_velocity_cov: np.ndarray | None = None  # (3, 3)
    linear_acceleration_cov: np.ndarray | None = None
    orientation_cov: np.ndarray | None = None


@dataclass
class Odometry:
    """Pose of `child_frame_id` in `frame_id` and its twist in `child_frame_id`."""

    stamp_ns: int
    frame_id: str
    child_frame_id: str
    position: np.ndarray  # (3,)
    orientation: np.ndarray  # (4,) x y z w
    linear_velocity: np.ndarray  # (3,) in child frame
    angular_velocity: np.ndarray  # (3,) in child frame
    pose_cov: np.ndarray | None = None  # (6, 6)
    twist_cov: np.ndarray | None = None


@dataclass
class Obstacles:
    """A set of 3D boxes in `frame_id` (docs/DESIGN.md §4/§5).

    boxes: (N, 9) [x y z length width height yaw vx vy]; scores (N,); labels (N,)
    int indices into the class list; weights (N, 3) gate attribution
    [w_camera w_lidar w_radar] (zeros when not applicable, e.g. ground truth).

    num_points (N,), ground truth only: LiDAR + radar returns on the object when it
    was observed (nuScenes' num_lidar_pts + num_radar_pts). Evaluation leaves out
    boxes no sensor hit, as the devkit's `filter_eval_boxes` does; None = not known
    (then every box is scored). Carried on the wire as the optional extra column
    `GT_POINTS_FIELD` of the obstacles table.
    """

    stamp_ns: int
    frame_id: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    num_points: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> Obstacles:
        """The boxes selected by `keep` (bool mask or indices), every per-box array alike."""
        return Obstacles(self.stamp_ns, self.frame_id, self.boxes[keep], self.scores[keep], self.labels[keep],
                         self.weights[keep], None if self.num_points is None else self.num_points[keep])

    def observed(self, min_points: int = 1) -> Obstacles:
        """Ground truth a sensor saw (num_points ≥ min_points); all boxes when num_points is unknown."""
        if self.num_points is None:
            return self
        return self.subset(np.asarray(self.num_points) >= min_points)

    @staticmethod
    def empty(stamp_ns: int, frame_id: str = "base_link") -> Obstacles:
        return Obstacles(
            stamp_ns,
            frame_id,
            np.zeros((0, BOX_DIM), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
            np.zeros((0, 3), np.float32),
        )

    @staticmethod
    def concat(parts: list[Obstacles], stamp_ns: int, frame_id: str = "base_link") -> Obstacles:
        """One set holding every box of `parts` (same frame and stamp assumed: the caller moved them there).

        num_points is kept only when every part knows it.
        """
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return Obstacles.empty(stamp_ns, frame_id)
        npts = None if any(p.num_points is None for p in parts) else np.concatenate([p.num_points for p in parts])
        return Obstacles(stamp_ns, parts[0].frame_id, np.concatenate([p.boxes for p in parts]),
                         np.concatenate([p.scores for p in parts]), np.concatenate([p.labels for p in parts]),
                         np.concatenate([p.weights for p in parts]), npts)

    def __len__(self) -> int:
        return len(self.boxes)

    def table(self) -> np.ndarray:
        """(N, 14) float32 rows in OBSTACLE_FIELDS order."""
        n = len(self.boxes)
        out = np.empty((n, len(OBSTACLE_FIELDS)), np.float32)
        out[:, :BOX_DIM] = self.boxes
        out[:, 9] = self.scores
        out[:, 10] = self.labels
        out[:, 11:14] = self.weights
        return out

    @staticmethod
    def from_table(stamp_ns: int, frame_id: str, table: np.ndarray) -> Obstacles:
        table = np.asarray(table, np.float32).reshape(-1, len(OBSTACLE_FIELDS))
        return Obstacles(
            stamp_ns,
            frame_id,
            table[:, :BOX_DIM].copy(),
            table[:, 9].copy(),
            np.rint(table[:, 10]).astype(np.int32),
            table[:, 11:14].copy(),
        )


class RejectedInput(ValueError):
    """A message, file or value that failed validation (docs/DESIGN.md §10).

    `field` names what was wrong and `reason` a short stable cause used as the
    counter key in diagnostics (e.g. ``"truncated"``, ``"nan"``, ``"encoding"``).
    """

    def __init__(self, reason: str, detail: str, field: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        where = f" ({field})" if field else ""
        super().__init__(f"{reason}{where}: {detail}")
