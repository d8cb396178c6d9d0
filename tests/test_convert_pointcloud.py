"""PointCloud2 <-> PointCloud: random layouts against an independent struct decoder, NaN policy, times."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import PointCloud2, PointField

from ros_fusion.core.types import PointCloud, RejectedInput
from ros_fusion.ros.pointcloud import (
    cloud_to_pointcloud2,
    decode_pointcloud2,
    make_pointcloud2,
    point_times_ns,
    pointcloud2_to_cloud,
    xyz_fields_array,
)
from ros_fusion.ros.stamps import ns_to_stamp

# datatype -> (struct code, size); written out independently of the module under test
STRUCT_CODES = {1: ("b", 1), 2: ("B", 1), 3: ("h", 2), 4: ("H", 2), 5: ("i", 4), 6: ("I", 4), 7: ("f", 4), 8: ("d", 8)}
EXTRA_NAMES = ["intensity", "t", "ring", "rgb", "normal", "v_r", "rcs", "label"]


def reference_decode(msg: PointCloud2) -> list[dict[str, list]]:
    """Slow, obviously-correct decoder: one struct.unpack_from per value, row-major."""
    endian = ">" if msg.is_bigendian else "<"
    data = bytes(msg.data)
    out = []
    for r in range(msg.height):
        for c in range(msg.width):
            base = r * msg.row_step + c * msg.point_step
            point = {}
            for f in msg.fields:
                code, size = STRUCT_CODES[f.datatype]
                point[f.name] = [
                    struct.unpack_from(endian + code, data, base + f.offset + k * size)[0] for k in range(f.count)
                ]
            out.append(point)
    return out


def same_value(a, b) -> bool:
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or a == b


@st.composite
def random_pointcloud2(draw) -> PointCloud2:
    """A PointCloud2 with a random field set/order/types/counts, padding, endianness and row padding."""
    fields = [(axis, draw(st.sampled_from([7, 8])), 1) for axis in "xyz"]
    for name in draw(st.lists(st.sampled_from(EXTRA_NAMES), unique=True, max_size=4)):
        fields.append((name, draw(st.integers(1, 8)), draw(st.integers(1, 3))))
    fields = draw(st.permutations(fields))
    pfields, offset = [], 0
    for name, datatype, count in fields:
        offset += draw(st.integers(0, 3))  # inter-field padding, alignment not guaranteed
        pfields.append(PointField(name=name, offset=offset, datatype=datatype, count=count))
        offset += STRUCT_CODES[datatype][1] * count
    point_step = offset + draw(st.integers(0, 5))
    height = draw(st.integers(1, 4))
    width = draw(st.integers(1, 6))
    row_step = width * point_step + draw(st.sampled_from([0, 0, 1, 3, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.integers(0, 256, height * row_step, dtype=np.uint8).tobytes()
    msg = PointCloud2()
    msg.header.stamp = ns_to_stamp(draw(st.integers(0, 2**40)))
    msg.header.frame_id = "lidar_top"
    msg.height, msg.width = height, width
    msg.fields = pfields
    msg.is_bigendian = draw(st.booleans())
    msg.point_step, msg.row_step = point_step, row_step
    msg.data = data
    return msg


def assert_matches_reference(cloud: PointCloud, ref: list[dict[str, list]]) -> None:
    assert len(cloud) == len(ref)
    for i, point in enumerate(ref):
        for name, values in point.items():
            got = np.atleast_1d(cloud.points[name][i])
            assert len(got) == len(values)
            for g, v in zip(got, values, strict=True):
                assert same_value(g, v), (i, name, g, v)


@settings(max_examples=150, deadline=None)
@given(random_pointcloud2())
def test_random_layout_matches_reference_and_round_trips(msg):
    ref = reference_decode(msg)
    cloud = pointcloud2_to_cloud(msg, drop_nonfinite=False)
    assert cloud.height == msg.height and cloud.width == msg.width
    assert cloud.field_names == tuple(f.name for f in msg.fields)
    assert_matches_reference(cloud, ref)

    again = pointcloud2_to_cloud(cloud_to_pointcloud2(cloud), drop_nonfinite=False)
    assert again.points.dtype == cloud.points.dtype
    assert again.height == cloud.height and again.stamp_ns == cloud.stamp_ns and again.frame_id == "lidar_top"
    assert again.points.tobytes() == np.ascontiguousarray(cloud.points).tobytes()


@settings(max_examples=100, deadline=None)
@given(random_pointcloud2())
def test_random_layout_drops_exactly_the_nonfinite_points(msg):
    ref = reference_decode(msg)
    keep = [p for p in ref if all(math.isfinite(p[a][0]) for a in "xyz")]
    if not keep:
        with pytest.raises(RejectedInput) as err:
            decode_pointcloud2(msg)
        assert err.value.reason == "nan"
        return
    decoded = decode_pointcloud2(msg)
    assert decoded.n_nonfinite == len(ref) - len(keep)
    assert decoded.cloud.is_dense
    assert_matches_reference(decoded.cloud, keep)


def _lidar_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return xyz_fields_array(
        rng.normal(0, 20, (n, 3)).astype(np.float32),
        intensity=rng.random(n).astype(np.float32),
        t=rng.integers(0, 100_000_000, n).astype(np.uint32),
        ring=rng.integers(0, 128, n).astype(np.uint16),
    )


def test_dense_cloud_is_a_zero_copy_view():
    msg = make_pointcloud2(10, "lidar_top", _lidar_points(1000))
    cloud = pointcloud2_to_cloud(msg)
    assert np.shares_memory(cloud.points, np.frombuffer(msg.data, np.uint8))
    assert cloud.points.dtype.itemsize == msg.point_step == 3 * 4 + 4 + 4 + 2


def test_xyz_fields_array_packs_and_keeps_multi_count_fields():
    xyz = np.arange(12, dtype=np.float64).reshape(4, 3)
    arr = xyz_fields_array(xyz, rgb=np.ones((4, 3), np.uint8), v_r=np.array([1, 2, 3, 4], np.float32))
    assert arr.dtype.itemsize == 12 + 3 + 4
    assert arr["rgb"].shape == (4, 3)
    msg = make_pointcloud2(0, "radar_front", arr)
    rgb = next(f for f in msg.fields if f.name == "rgb")
    assert (rgb.datatype, rgb.count, rgb.offset) == (PointField.UINT8, 3, 12)
    cloud = pointcloud2_to_cloud(msg)
    np.testing.assert_array_equal(cloud.xyz(), xyz.astype(np.float32))
    np.testing.assert_array_equal(cloud.field("v_r"), [1, 2, 3, 4])
    with pytest.raises(ValueError):
        xyz_fields_array(xyz, v_r=np.zeros(3))


def test_nonfinite_points_are_dropped_and_counted_and_organisation_is_lost():
    pts = _lidar_points(12)
    pts["x"][[1, 5]] = np.nan
    pts["z"][7] = np.inf
    msg = make_pointcloud2(5, "lidar_top", pts, height=3)
    decoded = decode_pointcloud2(msg)
    assert decoded.n_nonfinite == 3
    assert len(decoded.cloud) == 9 and decoded.cloud.height == 1
    np.testing.assert_array_equal(decoded.cloud.points["ring"], np.delete(pts["ring"], [1, 5, 7]))
    kept = decode_pointcloud2(msg, drop_nonfinite=False)
    assert kept.n_nonfinite == 0 and kept.cloud.height == 3 and len(kept.cloud) == 12
    assert not kept.cloud.is_dense


def test_large_finite_values_that_overflow_the_sum_are_kept():
    pts = xyz_fields_array(np.array([[3e38, 3e38, 3e38], [1, 2, 3]], np.float32))
    decoded = decode_pointcloud2(make_pointcloud2(0, "l", pts))
    assert decoded.n_nonfinite == 0 and len(decoded.cloud) == 2


def test_empty_cloud_allowed_by_default_and_rejected_on_request():
    msg = make_pointcloud2(0, "lidar_top", _lidar_points(0))
    cloud = pointcloud2_to_cloud(msg)
    assert len(cloud) == 0 and cloud.has("ring")
    with pytest.raises(RejectedInput) as err:
        pointcloud2_to_cloud(msg, allow_empty=False)
    assert err.value.reason == "empty"


def test_max_points():
    msg = make_pointcloud2(0, "lidar_top", _lidar_points(100))
    assert len(pointcloud2_to_cloud(msg, max_points=100)) == 100
    with pytest.raises(RejectedInput) as err:
        pointcloud2_to_cloud(msg, max_points=99)
    assert err.value.reason == "too_large"


def test_big_endian_and_mixed_endian_writers():
    pts = np.zeros(3, dtype=[("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("i", ">u2")])
    pts["x"] = [1.5, -2.0, 3.25]
    pts["i"] = [1, 513, 65535]
    msg = make_pointcloud2(0, "l", pts)
    assert msg.is_bigendian
    assert bytes(msg.data[:4]) == struct.pack(">f", 1.5)
    np.testing.assert_array_equal(pointcloud2_to_cloud(msg).points["i"], [1, 513, 65535])

    mixed = np.zeros(2, dtype=[("x", ">f4"), ("y", "<f4"), ("z", "<f4")])
    mixed["x"] = [7.0, 8.0]
    msg = make_pointcloud2(0, "l", mixed)
    assert not msg.is_bigendian
    np.testing.assert_array_equal(pointcloud2_to_cloud(msg).points["x"], [7.0, 8.0])


def test_writer_rejects_types_pointfield_cannot_express():
    pts = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("t", "<u8")])
    with pytest.raises(RejectedInput) as err:
        make_pointcloud2(0, "l", pts)
    assert err.value.reason == "datatype" and "t" in err.value.field


def _cloud_with_time(values: np.ndarray, stamp_ns: int) -> PointCloud:
    pts = xyz_fields_array(np.zeros((len(values), 3), np.float32), t=values)
    return PointCloud(stamp_ns, "lidar_top", pts)


STAMP = 1_700_000_000_123_456_789


def test_point_times_relative_seconds_float32():
    times = point_times_ns(_cloud_with_time(np.array([-0.1, -0.05, 0.0], np.float32), STAMP))
    np.testing.assert_allclose(times - STAMP, [-100_000_000, -50_000_000, 0], atol=10)
    assert times.dtype == np.int64


def test_point_times_relative_nanoseconds_uint32_ouster():
    times = point_times_ns(_cloud_with_time(np.array([0, 1_000, 99_999_999], np.uint32), STAMP))
    np.testing.assert_array_equal(times, STAMP + np.array([0, 1_000, 99_999_999]))


def test_point_times_absolute_seconds_float64():
    secs = np.array([1_700_000_000.0, 1_700_000_000.05], np.float64)
    times = point_times_ns(_cloud_with_time(secs, STAMP))
    np.testing.assert_allclose(times, [1_700_000_000_000_000_000, 1_700_000_000_050_000_000], atol=1_000)


def test_point_times_absolute_nanoseconds_float64_and_int64():
    ns = np.array([STAMP - 10**8, STAMP], np.float64)
    np.testing.assert_allclose(point_times_ns(_cloud_with_time(ns, 0)), ns, atol=512)
    ints = np.array([STAMP - 10**8, STAMP], np.int64)
    np.testing.assert_array_equal(point_times_ns(_cloud_with_time(ints, 5)), ints)


def test_point_times_field_names_priority_and_nonfinite():
    pts = xyz_fields_array(np.zeros((2, 3), np.float32), time_offset=np.array([0.0, np.nan], np.float32))
    times = point_times_ns(PointCloud(1000, "l", pts))
    np.testing.assert_array_equal(times, [1000, 1000])
    pts = xyz_fields_array(np.zeros((1, 3), np.float32), timestamp=np.array([0.5]), t=np.array([7], np.uint32))
    assert point_times_ns(PointCloud(0, "l", pts))[0] == 7  # "t" wins over "timestamp"
    assert point_times_ns(PointCloud(0, "l", xyz_fields_array(np.zeros((1, 3))))) is None


def test_default_constructed_message_is_an_empty_cloud():
    cloud = pointcloud2_to_cloud(PointCloud2())
    assert len(cloud) == 0 and cloud.field_names == ("x", "y", "z")
    with pytest.raises(RejectedInput) as err:
        pointcloud2_to_cloud(PointCloud2(), allow_empty=False)
    assert err.value.reason == "empty"
