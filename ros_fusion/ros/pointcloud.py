"""sensor_msgs/PointCloud2 <-> core PointCloud, for any field layout (docs/DESIGN.md §5).

Reading builds one numpy structured dtype that mirrors the message layout
(field offsets, padding, `count` > 1, endianness, itemsize = point_step) and
views `msg.data` through it, so a well-formed dense cloud is decoded without
copying a byte. Everything the header claims is checked against the buffer
first: a LiDAR driver bug must become a counted rejection, never a crash or
a silent out-of-bounds read.

Non-finite points (policy): a point whose x, y or z is NaN/Inf carries no
geometry, so by default it is dropped and the number dropped is reported in
`DecodedCloud.n_nonfinite` for the node to count. If *every* point is
non-finite the message is rejected with reason ``nan`` (a sensor producing
only NaN is broken, and an empty result would hide that). Dropping points
from an organised cloud (height > 1) makes it unorganised (height 1);
pass ``drop_nonfinite=False`` to keep the organisation and the NaN points
(then nothing is dropped or rejected for NaN, and `is_dense` is False).

Rejection reasons (`RejectedInput.reason`, used as diagnostics counters):
``truncated`` (buffer shorter than height*row_step), ``size_mismatch`` (longer),
``point_step``, ``row_step``, ``fields``, ``datatype``, ``empty`` (only with
``allow_empty=False``), ``too_large`` (over ``max_points``), ``nan``.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from ..core.point_times import TIME_FIELDS, point_times_ns, time_field_name  # noqa: F401 - re-exported
from ..core.types import PointCloud, RejectedInput
from .stamps import header, stamp_to_ns

#: PointField datatype constant → numpy kind+size (byte order is added per message).
DATATYPES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_NUMPY_TO_DATATYPE: dict[str, int] = {v: k for k, v in DATATYPES.items()}

#: Per-point time field names, in order of preference (docs/DESIGN.md §4).


@dataclass
class DecodedCloud:
    """The result of decoding: the cloud plus what the node must count."""

    cloud: PointCloud
    n_nonfinite: int = 0  # points dropped because x, y or z was NaN/Inf


# --------------------------------------------------------------------------- reading


def fields_to_dtype(fields, point_step: int, is_bigendian: bool) -> np.dtype:
    """Validate PointField descriptions and build the matching structured dtype.

    Raises RejectedInput(``fields`` | ``datatype`` | ``point_step``).
    """
    order = ">" if is_bigendian else "<"
    names: list[str] = []
    formats: list[object] = []
    offsets: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for f in fields:
        name = str(f.name)
        if not name:
            raise RejectedInput("fields", "a PointField has an empty name", "fields")
        if name in names:
            raise RejectedInput("fields", f"field {name!r} appears twice", f"fields.{name}")
        code = DATATYPES.get(int(f.datatype))
        if code is None:
            raise RejectedInput("datatype", f"unknown PointField datatype {f.datatype}", f"fields.{name}.datatype")
        count = int(f.count)
        if count < 1:
            raise RejectedInput("fields", f"count={count}, must be >= 1", f"fields.{name}.count")
        offset = int(f.offset)
        base = np.dtype(order + code)
        end = offset + base.itemsize * count
        if end > point_step:
            raise RejectedInput(
                "point_step",
                f"field {name!r} ends at byte {end} but point_step is {point_step}",
                "point_step",
            )
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
        spans.append((offset, end, name))
    spans.sort()
    for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:], strict=False):
        if start_b < end_a:
            raise RejectedInput("fields", f"fields {name_a!r} and {name_b!r} overlap", f"fields.{name_b}.offset")
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise RejectedInput("fields", f"no {axis!r} field (have {names})", "fields")
        fmt = formats[names.index(axis)]
        if not isinstance(fmt, np.dtype) or fmt.kind != "f":
            raise RejectedInput("fields", f"field {axis!r} must be a single FLOAT32/FLOAT64", f"fields.{axis}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def _finite_mask(points: np.ndarray) -> np.ndarray | None:
    """Boolean mask of points with finite x, y, z, or None when all are finite.

    Fast path: x + y + z is finite only if all three are (NaN and Inf
    propagate), so one add pair + one isfinite covers the common clean cloud;
    the exact per-axis test runs only where the sum was not finite (a finite
    overflow to Inf is re-checked there, so no point is dropped wrongly).
    """
    x, y, z = points["x"], points["y"], points["z"]
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(x + y + z)
    if ok.all():
        return None
    bad = np.flatnonzero(~ok)
    ok[bad] = np.isfinite(x[bad]) & np.isfinite(y[bad]) & np.isfinite(z[bad])
    return None if ok.all() else ok


def decode_pointcloud2(
    msg: PointCloud2,
    *,
    max_points: int | None = None,
    allow_empty: bool = True,
    drop_nonfinite: bool = True,
) -> DecodedCloud:
    """PointCloud2 → DecodedCloud (cloud + count of dropped non-finite points).

    Zero-copy when rows are unpadded (or there is one row) and no point is
    dropped; the cloud then references `msg.data`.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    n = height * width
    if max_points is not None and n > max_points:
        raise RejectedInput("too_large", f"{width}x{height} = {n} points > max_points={max_points}", "width")
    if n and point_step <= 0:
        raise RejectedInput("point_step", f"point_step={point_step} with {n} points", "point_step")
    if n == 0 and len(msg.fields) == 0:  # a default-constructed "nothing seen" message
        dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    else:
        dtype = fields_to_dtype(msg.fields, point_step, bool(msg.is_bigendian))
    if n and row_step < width * point_step:
        raise RejectedInput(
            "row_step", f"row_step={row_step} < width*point_step={width * point_step}", "row_step"
        )
    buf = msg.data
    size = len(buf)
    expected = height * row_step if n else 0
    if size < expected:
        raise RejectedInput(
            "truncated",
            f"data has {size} bytes, height*row_step = {height}*{row_step} = {expected} (width={width})",
            "data",
        )
    if size > expected:
        raise RejectedInput(
            "size_mismatch",
            f"data has {size} bytes but width*height = {width}*{height} points fill {expected}",
            "data",
        )
    stamp_ns = stamp_to_ns(msg.header.stamp)
    frame_id = str(msg.header.frame_id)
    if n == 0:
        if not allow_empty:
            raise RejectedInput("empty", "cloud has no points", "width")
        return DecodedCloud(PointCloud(stamp_ns, frame_id, np.zeros(0, dtype), height=1, is_dense=True))

    if height == 1 or row_step == width * point_step:
        points = np.frombuffer(buf, dtype=dtype, count=n)
    else:  # padded rows: view (height, width) with the row stride, then compact (one copy)
        raw = np.frombuffer(buf, dtype=np.uint8, count=expected)
        records = np.dtype((np.void, point_step))  # whole-record copies, not field by field
        grid = np.ndarray((height, width), dtype=records, buffer=raw, strides=(row_step, point_step))
        points = grid.reshape(-1).view(dtype)

    mask = _finite_mask(points)
    n_bad = 0 if mask is None else int(n - np.count_nonzero(mask))
    if not n_bad or not drop_nonfinite:
        return DecodedCloud(PointCloud(stamp_ns, frame_id, points, height=height, is_dense=not n_bad))
    if n_bad == n:
        raise RejectedInput("nan", f"all {n} points have non-finite x/y/z", "data")
    # Compact through an opaque void view: numpy copies whole records with one memcpy each
    # instead of field by field (15x faster for a 100k-point structured cloud).
    kept = points.view(np.dtype((np.void, point_step)))[mask].view(dtype)
    return DecodedCloud(PointCloud(stamp_ns, frame_id, kept, height=1, is_dense=True), n_bad)


def pointcloud2_to_cloud(
    msg: PointCloud2,
    *,
    max_points: int | None = None,
    allow_empty: bool = True,
    drop_nonfinite: bool = True,
) -> PointCloud:
    """PointCloud2 → PointCloud; see `decode_pointcloud2` for the dropped-point count."""
    return decode_pointcloud2(
        msg, max_points=max_points, allow_empty=allow_empty, drop_nonfinite=drop_nonfinite
    ).cloud


# --------------------------------------------------------------------------- writing


def _leaf_fields(dtype: np.dtype) -> list[tuple[str, np.dtype, int, int]]:
    """(name, base dtype, count, offset) for each field; rejects what PointField cannot express."""
    if dtype.names is None:
        raise RejectedInput("fields", f"points must be a structured array, got dtype {dtype}", "points")
    out = []
    for name in dtype.names:
        dt, offset = dtype.fields[name][:2]
        base, count = dt, 1
        if dt.subdtype is not None:
            base, shape = dt.subdtype
            count = int(np.prod(shape))
        key = f"{base.kind}{base.itemsize}"
        if base.names is not None or key not in _NUMPY_TO_DATATYPE:
            raise RejectedInput(
                "datatype", f"field {name!r} has dtype {dt}, not one of PointField's 8 types", f"points.{name}"
            )
        out.append((name, base, count, int(offset)))
    return out


def make_pointcloud2(stamp_ns: int, frame_id: str, points: np.ndarray, height: int = 1) -> PointCloud2:
    """Structured array → PointCloud2, layout (offsets, padding, endianness) kept as is.

    Fields of mixed byte order are normalised to little endian first. The
    buffer is filled with one memcpy into an `array.array('B')` (what rclpy
    stores anyway); assigning an ndarray to `msg.data` is tens of ms slower.
    """
    points = np.asarray(points)
    if points.ndim != 1:
        points = points.reshape(-1)
    height = int(height)
    if height < 1 or len(points) % height:
        raise RejectedInput("size_mismatch", f"{len(points)} points do not split into {height} rows", "height")
    leaves = _leaf_fields(points.dtype)
    orders = {base.byteorder for _, base, _, _ in leaves if base.itemsize > 1}
    orders = {"<" if o == "=" and np.little_endian else (">" if o == "=" else o) for o in orders}
    if len(orders) > 1:  # PointCloud2 has one is_bigendian flag: normalise to little endian
        points = points.astype(
            np.dtype(
                {
                    "names": list(points.dtype.names),
                    "formats": [points.dtype.fields[n][0].newbyteorder("<") for n in points.dtype.names],
                    "offsets": [points.dtype.fields[n][1] for n in points.dtype.names],
                    "itemsize": points.dtype.itemsize,
                }
            )
        )
        leaves = _leaf_fields(points.dtype)
        orders = {"<"}
    big = orders == {">"}
    width = len(points) // height
    msg = PointCloud2()
    msg.header = header(stamp_ns, frame_id)
    msg.height = height if width else 1
    msg.width = width
    msg.fields = [
        PointField(name=name, offset=offset, datatype=_NUMPY_TO_DATATYPE[f"{base.kind}{base.itemsize}"], count=count)
        for name, base, count, offset in leaves
    ]
    msg.is_bigendian = big
    msg.point_step = points.dtype.itemsize
    msg.row_step = points.dtype.itemsize * width
    contiguous = np.ascontiguousarray(points)
    data = array.array("B")
    data.frombytes(contiguous.view(np.uint8))  # one memcpy, half the cost of tobytes()+array()
    msg.data = data
    return msg


def cloud_to_pointcloud2(cloud: PointCloud) -> PointCloud2:
    """PointCloud → PointCloud2 (the inverse of `pointcloud2_to_cloud`)."""
    height = cloud.height if cloud.height > 0 and len(cloud.points) % cloud.height == 0 else 1
    msg = make_pointcloud2(cloud.stamp_ns, cloud.frame_id, cloud.points, height=height)
    msg.is_dense = bool(cloud.is_dense)
    return msg


def xyz_fields_array(xyz: np.ndarray, **extra_fields: np.ndarray) -> np.ndarray:
    """Packed structured array with float32 x, y, z plus named extra columns.

    Each extra field keeps its dtype; a (N, k) array becomes a `count=k` field.
    Example: ``xyz_fields_array(xyz, intensity=i.astype(np.float32), ring=r.astype(np.uint16))``.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    n = len(xyz)
    columns = {k: np.asarray(v) for k, v in extra_fields.items()}
    fmt: list[tuple] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    for name, col in columns.items():
        if len(col) != n:
            raise ValueError(f"field {name!r} has {len(col)} rows, xyz has {n}")
        fmt.append((name, col.dtype) if col.ndim == 1 else (name, col.dtype, col.shape[1:]))
    out = np.empty(n, dtype=np.dtype(fmt))
    out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    for name, col in columns.items():
        out[name] = col
    return out
