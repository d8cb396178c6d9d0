"""Conversion speed goals (run: python -m pytest benchmarks/bench_convert.py).

Targets (one 2-core CI box): 100k-point LiDAR PointCloud2 → numpy ≤ 1 ms and
numpy → PointCloud2 ≤ 2 ms; a 1280×720 rgb8 image ≤ 2 ms each way. The
decoders are views plus one finiteness pass, the encoders one memcpy, so
these numbers are what the node pays per message before any algorithm runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core.types import Image
from ros_fusion.ros.image import compressed_to_image, image_msg_to_image, image_to_compressed, image_to_image_msg
from ros_fusion.ros.pointcloud import decode_pointcloud2, make_pointcloud2, point_times_ns, xyz_fields_array

N_POINTS = 100_000


@pytest.fixture(scope="module")
def lidar_points() -> np.ndarray:
    """A 100k-point sweep with the common Ouster-like layout x y z intensity t ring."""
    rng = np.random.default_rng(0)
    return xyz_fields_array(
        rng.normal(0, 20, (N_POINTS, 3)).astype(np.float32),
        intensity=rng.random(N_POINTS).astype(np.float32),
        t=rng.integers(0, 100_000_000, N_POINTS).astype(np.uint32),
        ring=rng.integers(0, 128, N_POINTS).astype(np.uint16),
    )


@pytest.fixture(scope="module")
def frame_720p() -> Image:
    rng = np.random.default_rng(1)
    return Image(0, "camera_front_optical", rng.integers(0, 256, (720, 1280, 3), np.uint8), "rgb8")


def test_pointcloud2_to_numpy_100k(benchmark, lidar_points):
    msg = make_pointcloud2(1, "lidar_top", lidar_points)
    decoded = benchmark(decode_pointcloud2, msg)
    assert len(decoded.cloud) == N_POINTS and decoded.n_nonfinite == 0


def test_pointcloud2_to_numpy_100k_with_nan(benchmark, lidar_points):
    """Slow path: 5 % NaN points are filtered out (one compacting copy)."""
    pts = lidar_points.copy()
    pts["x"][::20] = np.nan
    msg = make_pointcloud2(1, "lidar_top", pts)
    decoded = benchmark(decode_pointcloud2, msg)
    assert decoded.n_nonfinite == N_POINTS // 20


def test_numpy_to_pointcloud2_100k(benchmark, lidar_points):
    msg = benchmark(make_pointcloud2, 1, "lidar_top", lidar_points)
    assert msg.width == N_POINTS and len(msg.data) == N_POINTS * lidar_points.dtype.itemsize


def test_point_times_100k(benchmark, lidar_points):
    msg = make_pointcloud2(1, "lidar_top", lidar_points)
    cloud = decode_pointcloud2(msg).cloud
    times = benchmark(point_times_ns, cloud)
    assert len(times) == N_POINTS


def test_image_msg_to_image_720p(benchmark, frame_720p):
    msg = image_to_image_msg(frame_720p)
    img = benchmark(image_msg_to_image, msg)
    assert img.data.shape == (720, 1280, 3)


def test_image_to_image_msg_720p(benchmark, frame_720p):
    msg = benchmark(image_to_image_msg, frame_720p)
    assert len(msg.data) == 720 * 1280 * 3


def test_jpeg_decode_720p(benchmark, frame_720p):
    """Informational (no target): what a CompressedImage camera costs per frame."""
    y, x = np.mgrid[0:720, 0:1280]
    smooth = Image(0, "cam", np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8), "rgb8")
    msg = image_to_compressed(smooth, "jpeg", 90)
    img = benchmark(compressed_to_image, msg)
    assert img.data.shape == (720, 1280, 3)
