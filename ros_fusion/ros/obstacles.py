"""Obstacles <-> the `~/obstacles` PointCloud2 table, and RViz/Foxglove markers (docs/DESIGN.md §5).

The table is a PointCloud2 with one row per detection and float32 fields
named exactly as `OBSTACLE_FIELDS`, packed in that order: any PointCloud2
tool (costmaps, Foxglove, our bag decoder) can read it, and ground truth in
simulated bags uses the same layout so one decoder reads both.

Markers: a DELETEALL first (so boxes from the previous frame vanish even if
a lifetime is missed), then per detection a LINE_LIST box, a TEXT label
``class score`` and, when moving faster than `MIN_ARROW_SPEED`, a velocity
ARROW showing one second of motion. Colour is per class, tinted by the
fusion mode so a fallback is visible at a glance.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from ..core.types import GT_POINTS_FIELD, OBSTACLE_FIELDS, Obstacles, RejectedInput
from .pointcloud import make_pointcloud2, pointcloud2_to_cloud
from .stamps import ns_to_stamp, seconds_to_duration

#: The packed float32 row dtype of the obstacles table.
OBSTACLE_DTYPE = np.dtype([(name, "<f4") for name in OBSTACLE_FIELDS])
#: Ground-truth tables add the LiDAR + radar return count of each box (see `Obstacles.num_points`).
GT_DTYPE = np.dtype([(name, "<f4") for name in (*OBSTACLE_FIELDS, GT_POINTS_FIELD)])

#: Speeds below this (m/s) draw no velocity arrow.
MIN_ARROW_SPEED = 0.2

#: Class colours (RGB 0..1), cycled by label index.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.10, 0.55, 1.00),  # car: blue
    (0.60, 0.30, 1.00),  # truck: purple
    (1.00, 0.55, 0.00),  # bus: orange
    (1.00, 0.15, 0.25),  # pedestrian: red
    (0.10, 0.90, 0.30),  # cyclist: green
    (0.85, 0.85, 0.10),  # barrier: yellow
)

#: Fusion mode → (tint colour, tint weight, alpha). intermediate/"" = pure class colour.
MODE_TINT: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "": ((1.0, 1.0, 1.0), 0.0, 0.9),
    "intermediate": ((1.0, 1.0, 1.0), 0.0, 0.9),
    "late": ((1.0, 0.85, 0.2), 0.35, 0.85),
    "degraded": ((1.0, 0.25, 0.1), 0.55, 0.75),
    "none": ((0.5, 0.5, 0.5), 1.0, 0.5),
}

# The 12 edges of a box as index pairs into its 8 corners (bit 0: +x, bit 1: +y, bit 2: +z).
_EDGES = [(a, b) for a in range(8) for b in range(8) if a < b and bin(a ^ b).count("1") == 1]
_CORNER_SIGNS = np.array([[(c & 1) * 2 - 1, ((c >> 1) & 1) * 2 - 1, ((c >> 2) & 1) * 2 - 1] for c in range(8)]) * 0.5


def obstacles_to_pointcloud2(obs: Obstacles) -> PointCloud2:
    """Obstacles → the obstacles PointCloud2 table (float32 fields in OBSTACLE_FIELDS order)."""
    table = obs.table()
    if obs.num_points is not None:  # ground truth: one more column
        table = np.concatenate([table, np.asarray(obs.num_points, np.float32).reshape(-1, 1)], axis=1)
        dtype = GT_DTYPE
    else:
        dtype = OBSTACLE_DTYPE
    rows = np.empty(len(table), dtype)
    rows.view(np.float32).reshape(len(table), table.shape[1])[:] = table
    msg = make_pointcloud2(obs.stamp_ns, obs.frame_id, rows)
    msg.is_dense = bool(np.isfinite(table).all())
    return msg


def pointcloud2_to_obstacles(msg: PointCloud2) -> Obstacles:
    """The obstacles PointCloud2 table → Obstacles.

    Accepts any layout that has every OBSTACLE_FIELDS column as a scalar
    number; of the extra fields only ground truth's `GT_POINTS_FIELD` is read. Rejects missing columns (``fields``),
    non-finite values (``nan``: a box with NaN cannot be evaluated or drawn)
    and negative labels (``range``). An empty table is a valid "no detections".
    """
    cloud = pointcloud2_to_cloud(msg, drop_nonfinite=False)
    dtype = cloud.points.dtype
    missing = [f for f in OBSTACLE_FIELDS if f not in cloud.field_names]
    if missing:
        raise RejectedInput("fields", f"obstacles table lacks {missing}", "fields")
    for name in OBSTACLE_FIELDS:
        if dtype.fields[name][0].shape != ():
            raise RejectedInput("fields", f"obstacle field {name!r} must have count 1", f"fields.{name}")
    table = np.empty((len(cloud.points), len(OBSTACLE_FIELDS)), np.float32)
    for i, name in enumerate(OBSTACLE_FIELDS):
        table[:, i] = cloud.points[name]
    if not np.isfinite(table).all():
        bad = sorted({OBSTACLE_FIELDS[j] for j in np.nonzero(~np.isfinite(table))[1]})
        raise RejectedInput("nan", f"non-finite values in {bad}", "data")
    labels = table[:, OBSTACLE_FIELDS.index("label")]
    if (labels < -0.5).any():
        raise RejectedInput("range", f"negative label {float(labels.min())}", "label")
    obs = Obstacles.from_table(cloud.stamp_ns, cloud.frame_id, table)
    if GT_POINTS_FIELD in cloud.field_names:
        pts = np.asarray(cloud.points[GT_POINTS_FIELD], np.float64).reshape(len(table), -1)[:, 0]
        if not (np.isfinite(pts).all() and (pts >= 0).all()):
            raise RejectedInput("range", f"{GT_POINTS_FIELD} must be finite and >= 0", GT_POINTS_FIELD)
        obs.num_points = np.rint(pts).astype(np.int32)
    return obs


def class_color(label: int, mode: str = "") -> ColorRGBA:
    """The marker colour of class index `label` under fusion `mode`."""
    base = np.array(PALETTE[label % len(PALETTE)] if label >= 0 else (0.7, 0.7, 0.7))
    tint, weight, alpha = MODE_TINT.get(mode, MODE_TINT[""])
    rgb = (1.0 - weight) * base + weight * np.array(tint)
    return ColorRGBA(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=float(alpha))


def _marker(obs: Obstacles, ns: str, marker_id: int, kind: int, lifetime) -> Marker:
    m = Marker()
    m.header.stamp = ns_to_stamp(obs.stamp_ns)
    m.header.frame_id = obs.frame_id
    m.ns = ns
    m.id = marker_id
    m.type = kind
    m.action = Marker.ADD
    m.lifetime = lifetime
    m.pose.orientation.w = 1.0
    return m


def box_edges(box: np.ndarray) -> np.ndarray:
    """(24, 3) LINE_LIST endpoints of box [x y z l w h yaw ...] in the obstacles frame."""
    x, y, z, length, width, height, yaw = (float(v) for v in box[:7])
    local = _CORNER_SIGNS * np.array([length, width, height])
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    corners = local @ rot.T + np.array([x, y, z])
    return corners[np.array(_EDGES).reshape(-1)]


def obstacles_to_markers(
    obs: Obstacles,
    classes,
    *,
    mode: str = "",
    lifetime_s: float = 0.3,
    ns: str = "ros_fusion",
) -> MarkerArray:
    """Obstacles → MarkerArray: DELETEALL, then box + label (+ velocity arrow) per detection.

    Marker ids are the detection index in namespaces ``<ns>/box``,
    ``<ns>/label`` and ``<ns>/velocity``.
    """
    out = MarkerArray()
    clear = Marker()
    clear.header.stamp = ns_to_stamp(obs.stamp_ns)
    clear.header.frame_id = obs.frame_id
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    lifetime = seconds_to_duration(lifetime_s)
    classes = tuple(classes)
    for i in range(len(obs)):
        box = np.asarray(obs.boxes[i], dtype=np.float64)
        label = int(obs.labels[i])
        color = class_color(label, mode)
        name = classes[label] if 0 <= label < len(classes) else f"class_{label}"

        m = _marker(obs, f"{ns}/box", i, Marker.LINE_LIST, lifetime)
        m.scale.x = 0.06
        m.color = color
        m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in box_edges(box)]
        out.markers.append(m)

        t = _marker(obs, f"{ns}/label", i, Marker.TEXT_VIEW_FACING, lifetime)
        t.pose.position.x, t.pose.position.y = float(box[0]), float(box[1])
        t.pose.position.z = float(box[2] + box[5] / 2 + 0.4)
        t.scale.z = 0.6
        t.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=color.a)
        t.text = f"{name} {float(obs.scores[i]):.2f}"
        out.markers.append(t)

        vx, vy = float(box[7]), float(box[8])
        if np.hypot(vx, vy) > MIN_ARROW_SPEED:
            a = _marker(obs, f"{ns}/velocity", i, Marker.ARROW, lifetime)
            a.scale.x, a.scale.y, a.scale.z = 0.12, 0.3, 0.4  # shaft diameter, head diameter, head length
            a.color = color
            start = Point(x=float(box[0]), y=float(box[1]), z=float(box[2]))
            end = Point(x=float(box[0] + vx), y=float(box[1] + vy), z=float(box[2]))
            a.points = [start, end]
            out.markers.append(a)
    return out
