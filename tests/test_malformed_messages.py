"""Every malformed input is rejected with RejectedInput and its specific, stable reason (docs/DESIGN.md §10)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, PointField
from sensor_msgs.msg import Image as ImageMsg

from ros_fusion.core.types import CameraInfo, CameraIntrinsics, ImuSample, Obstacles, Odometry, RejectedInput
from ros_fusion.ros.image import compressed_to_image, image_msg_to_image
from ros_fusion.ros.messages import (
    camera_info_to_core,
    camera_info_to_msg,
    imu_to_sample,
    odometry_to_core,
    odometry_to_msg,
    sample_to_imu,
)
from ros_fusion.ros.obstacles import obstacles_to_pointcloud2, pointcloud2_to_obstacles
from ros_fusion.ros.pointcloud import make_pointcloud2, pointcloud2_to_cloud, xyz_fields_array
from ros_fusion.ros.stamps import stamp_to_ns


def rejected(fn: Callable, *args, **kwargs) -> RejectedInput:
    with pytest.raises(RejectedInput) as err:
        fn(*args, **kwargs)
    assert err.value.detail  # every rejection says why
    return err.value


def _cloud_msg(n: int = 10, height: int = 1):
    pts = xyz_fields_array(np.arange(3 * n, dtype=np.float32).reshape(n, 3), intensity=np.ones(n, np.float32))
    return make_pointcloud2(1, "lidar_top", pts, height=height)


# --------------------------------------------------------------------------- PointCloud2


def test_truncated_data():
    msg = _cloud_msg()
    msg.data = bytes(msg.data)[:-1]
    err = rejected(pointcloud2_to_cloud, msg)
    assert (err.reason, err.field) == ("truncated", "data")


def test_data_longer_than_declared():
    msg = _cloud_msg()
    msg.data = bytes(msg.data) + b"\0" * 16
    assert rejected(pointcloud2_to_cloud, msg).reason == "size_mismatch"


def test_width_times_height_mismatch():
    msg = _cloud_msg(10)
    msg.height = 2  # claims 20 points in 10 points' bytes
    assert rejected(pointcloud2_to_cloud, msg).reason == "truncated"
    msg = _cloud_msg(10)
    msg.width, msg.row_step = 4, 4 * msg.point_step  # claims 4 points, buffer holds 10
    assert rejected(pointcloud2_to_cloud, msg).reason == "size_mismatch"


def test_point_step_smaller_than_fields():
    msg = _cloud_msg()
    msg.point_step = 12  # intensity at offset 12 needs 16
    msg.row_step = 12 * msg.width
    err = rejected(pointcloud2_to_cloud, msg)
    assert err.reason == "point_step" and "intensity" in err.detail


def test_zero_point_step():
    msg = _cloud_msg()
    msg.fields = []
    msg.point_step = 0
    assert rejected(pointcloud2_to_cloud, msg).reason == "point_step"


def test_row_step_smaller_than_a_row():
    msg = _cloud_msg(10, height=2)
    msg.row_step -= 1
    assert rejected(pointcloud2_to_cloud, msg).reason == "row_step"


def test_unknown_datatype():
    msg = _cloud_msg()
    msg.fields[3].datatype = 9
    err = rejected(pointcloud2_to_cloud, msg)
    assert (err.reason, err.field) == ("datatype", "fields.intensity.datatype")


def test_overlapping_and_duplicate_fields_and_bad_count():
    msg = _cloud_msg()
    msg.fields[3].offset = 10
    assert rejected(pointcloud2_to_cloud, msg).reason == "fields"
    msg = _cloud_msg()
    msg.fields[3].name = "x"
    assert rejected(pointcloud2_to_cloud, msg).reason == "fields"
    msg = _cloud_msg()
    msg.fields[3].count = 0
    assert rejected(pointcloud2_to_cloud, msg).reason == "fields"


@pytest.mark.parametrize("change", ["drop_z", "int_x", "count_y"])
def test_missing_or_non_float_xyz(change):
    msg = _cloud_msg()
    if change == "drop_z":
        msg.fields = [f for f in msg.fields if f.name != "z"]
    elif change == "int_x":
        msg.fields[0].datatype = PointField.INT32
    else:
        msg.fields[1].count = 2
        msg.fields[2].offset, msg.fields[3].offset = 12, 16  # keep the fields apart
        msg.point_step, msg.row_step = 20, 20 * msg.width
        msg.data = bytes(20 * msg.width)
    assert rejected(pointcloud2_to_cloud, msg).reason == "fields"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_points_nonfinite(bad):
    pts = xyz_fields_array(np.full((5, 3), bad, np.float32))
    assert rejected(pointcloud2_to_cloud, make_pointcloud2(0, "l", pts)).reason == "nan"


def test_empty_when_not_allowed():
    assert rejected(pointcloud2_to_cloud, _cloud_msg(0), allow_empty=False).reason == "empty"


def test_too_many_points():
    assert rejected(pointcloud2_to_cloud, _cloud_msg(50), max_points=10).reason == "too_large"


def test_bad_stamp():
    msg = _cloud_msg()
    msg.header.stamp = Time(sec=1, nanosec=1_500_000_000)
    assert rejected(pointcloud2_to_cloud, msg).reason == "stamp"
    assert rejected(stamp_to_ns, object()).reason == "stamp"


# --------------------------------------------------------------------------- Image


def _image_msg(encoding="rgb8", h=4, w=5, step=None) -> ImageMsg:
    bpp = {"rgb8": 3, "mono8": 1, "16UC1": 2}.get(encoding, 3)
    msg = ImageMsg()
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.step = w * bpp if step is None else step
    msg.data = bytes(msg.step * h)
    return msg


def test_unknown_image_encoding():
    err = rejected(image_msg_to_image, _image_msg("yuv422_yuy2"))
    assert (err.reason, err.field) == ("encoding", "encoding")


def test_image_step_too_small():
    assert rejected(image_msg_to_image, _image_msg("rgb8", step=14)).reason == "step"
    assert rejected(image_msg_to_image, _image_msg("16UC1", step=9)).reason == "step"


def test_image_truncated_and_oversized_and_empty():
    msg = _image_msg()
    msg.data = bytes(msg.data)[:-3]
    assert rejected(image_msg_to_image, msg).reason == "truncated"
    msg = _image_msg()
    msg.data = bytes(msg.data) + b"\0"
    assert rejected(image_msg_to_image, msg).reason == "size_mismatch"
    assert rejected(image_msg_to_image, _image_msg(h=0)).reason == "empty"
    huge = _image_msg()
    huge.height = huge.width = 100_000  # header claims 10^10 pixels; rejected before the size check
    huge.step = 300_000
    assert rejected(image_msg_to_image, huge).reason == "too_large"


def test_garbage_and_empty_compressed_images():
    msg = CompressedImage()
    msg.format = "rgb8; jpeg compressed bgr8"
    msg.data = np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes()
    assert rejected(compressed_to_image, msg).reason == "compressed_decode"
    msg.data = b""
    assert rejected(compressed_to_image, msg).reason == "empty"
    msg.data = b"\x89PNG\r\n\x1a\n" + bytes(40)
    msg.format = "png"
    assert rejected(compressed_to_image, msg).reason == "compressed_decode"
    msg.format = "16UC1; compressedDepth png"
    assert rejected(compressed_to_image, msg).reason == "encoding"
    msg.format = "tiff"
    assert rejected(compressed_to_image, msg).reason == "encoding"


# --------------------------------------------------------------------------- CameraInfo / Imu / Odometry


def _camera_info_msg():
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    return camera_info_to_msg(CameraInfo(0, "cam", CameraIntrinsics(640, 480, K, np.zeros(5))))


@pytest.mark.parametrize(
    "index,value,reason",
    [(0, 0.0, "intrinsics"), (4, -1.0, "intrinsics"), (2, np.nan, "nan"), (8, np.inf, "nan"), (6, 0.3, "intrinsics")],
)
def test_bad_camera_info_k(index, value, reason):
    msg = _camera_info_msg()
    k = np.array(msg.k)
    k[index] = value
    msg.k = k
    err = rejected(camera_info_to_core, msg)
    assert (err.reason, err.field) == (reason, "k")


def test_camera_info_all_zero_k_size_and_distortion():
    msg = _camera_info_msg()
    msg.k = np.zeros(9)
    assert rejected(camera_info_to_core, msg).reason == "intrinsics"
    msg = _camera_info_msg()
    msg.width = 0
    assert rejected(camera_info_to_core, msg).reason == "size"
    msg = _camera_info_msg()
    msg.d = [0.1, 0.2, 0.0]
    assert rejected(camera_info_to_core, msg).reason == "distortion"
    msg = _camera_info_msg()
    msg.distortion_model = "equidistant"  # still 5 coefficients
    assert rejected(camera_info_to_core, msg).reason == "distortion"
    msg = _camera_info_msg()
    msg.distortion_model = "kannala_brandt_9000"
    assert rejected(camera_info_to_core, msg).reason == "distortion"
    msg = _camera_info_msg()
    msg.d = [0.1, np.nan, 0.0, 0.0, 0.0]
    assert rejected(camera_info_to_core, msg).reason == "nan"


def _imu_msg():
    return sample_to_imu(ImuSample(0, "imu_link", np.zeros(3), np.array([0.0, 0.0, 9.81]), np.array([0, 0, 0, 1.0])))


def test_imu_nan_range_missing_and_bad_quaternion():
    msg = _imu_msg()
    msg.angular_velocity.y = float("nan")
    assert rejected(imu_to_sample, msg).reason == "nan"
    msg = _imu_msg()
    msg.linear_acceleration.z = float("inf")
    assert rejected(imu_to_sample, msg).reason == "nan"
    msg = _imu_msg()
    msg.angular_velocity.z = 150.0
    assert rejected(imu_to_sample, msg).reason == "range"
    msg = _imu_msg()
    msg.linear_acceleration.x = 600.0
    assert rejected(imu_to_sample, msg).reason == "range"
    msg = _imu_msg()
    msg.orientation.w = 2.0
    assert rejected(imu_to_sample, msg).reason == "range"
    msg = _imu_msg()
    cov = np.zeros(9)
    cov[0] = -1
    msg.angular_velocity_covariance = cov
    assert rejected(imu_to_sample, msg).reason == "missing"


def test_odometry_bad_inputs():
    good = Odometry(0, "odom", "base_link", np.zeros(3), np.array([0, 0, 0, 1.0]), np.zeros(3), np.zeros(3))
    msg = odometry_to_msg(good)
    msg.pose.pose.orientation.w = 0.0
    assert rejected(odometry_to_core, msg).reason == "range"
    msg = odometry_to_msg(good)
    msg.pose.pose.position.x = float("nan")
    assert rejected(odometry_to_core, msg).reason == "nan"
    msg = odometry_to_msg(good)
    msg.twist.twist.linear.x = 400.0
    assert rejected(odometry_to_core, msg).reason == "range"
    msg = odometry_to_msg(good)
    cov = np.zeros(36)
    cov[7] = np.nan
    msg.pose.covariance = cov
    assert rejected(odometry_to_core, msg).reason == "nan"


# --------------------------------------------------------------------------- Obstacles


def test_obstacles_missing_field_nan_and_negative_label():
    rows = xyz_fields_array(np.zeros((2, 3), np.float32), score=np.ones(2, np.float32))
    assert rejected(pointcloud2_to_obstacles, make_pointcloud2(0, "base_link", rows)).reason == "fields"
    obs = Obstacles(0, "base_link", np.zeros((1, 9), np.float32), np.array([np.nan], np.float32),
                    np.zeros(1, np.int32), np.zeros((1, 3), np.float32))
    err = rejected(pointcloud2_to_obstacles, obstacles_to_pointcloud2(obs))
    assert err.reason == "nan" and "score" in err.detail
    obs.scores[:] = 0.5
    obs.labels[:] = -3
    assert rejected(pointcloud2_to_obstacles, obstacles_to_pointcloud2(obs)).reason == "range"
