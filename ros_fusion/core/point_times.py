"""Per-point capture times of a LiDAR cloud (docs/DESIGN.md §4), independent of ROS.

Drivers disagree on the name, type and origin of the per-point time field;
this decides them once per cloud so deskewing (`core.compensation`) gets
absolute int64 nanoseconds whatever the source — the live pipeline, the
offline evaluator and the converters all read times through here.
"""

from __future__ import annotations

import numpy as np

from .types import NS_PER_S, PointCloud

#: Field names tried, in order, for the per-point time.
TIME_FIELDS: tuple[str, ...] = ("t", "time", "timestamp", "time_offset")


def time_field_name(cloud: PointCloud) -> str | None:
    """The per-point time field of `cloud` (first of TIME_FIELDS that is a scalar number)."""
    names = cloud.field_names
    for name in TIME_FIELDS:
        if name in names:
            dt = cloud.points.dtype.fields[name][0]
            if dt.shape == () and dt.kind in "iuf":
                return name
    return None


def point_times_ns(cloud: PointCloud) -> np.ndarray | None:
    """Absolute capture time of each point as int64 ns, or None without a time field.

    The field is the first of ``t``, ``time``, ``timestamp``, ``time_offset``.
    Its meaning is decided once per cloud from its type and the largest
    finite magnitude m (so one cloud never mixes interpretations):

    * integer, m < 1e14  → nanoseconds relative to `stamp_ns` (Ouster ``t`` uint32);
    * integer, m >= 1e14 → absolute nanoseconds;
    * float,   m < 1e6   → seconds relative to `stamp_ns` (Velodyne ``time`` float32);
    * float,   1e6 <= m < 1e14 → absolute seconds (Hesai/Robosense float64);
    * float,   m >= 1e14 → absolute nanoseconds (Livox float64 ``timestamp``).

    Relative offsets may be negative (stamp = last point, docs/DESIGN.md §4) or positive
    (stamp = first point); both are simply added. A non-finite time gives that
    point `stamp_ns` (it is not deskewed, it is not dropped).
    """
    name = time_field_name(cloud)
    if name is None:
        return None
    values = cloud.points[name]
    stamp = np.int64(cloud.stamp_ns)
    if len(values) == 0:
        return np.zeros(0, np.int64)
    if values.dtype.kind in "iu":
        v = values.astype(np.int64)
        m = int(np.abs(v).max())
        return v if m >= 10**14 else v + stamp
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    all_finite = bool(finite.all())
    m = float(np.abs(v if all_finite else v[finite]).max()) if finite.any() else 0.0
    if not all_finite:
        v = np.where(finite, v, 0.0)
    if m < 1e6:
        out = np.rint(v * NS_PER_S).astype(np.int64) + stamp
    elif m < 1e14:
        whole = np.floor(v)
        out = whole.astype(np.int64) * NS_PER_S + np.rint((v - whole) * NS_PER_S).astype(np.int64)
    else:
        out = np.rint(v).astype(np.int64)
    if not all_finite:
        out[~finite] = stamp
    return out
