"""CameraInfo, Imu, Odometry, stamps and the to_message/from_message dispatch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nav_msgs.msg import Odometry as OdometryMsg
from sensor_msgs.msg import CameraInfo as CameraInfoMsg
from sensor_msgs.msg import CompressedImage, Imu, PointCloud2
from sensor_msgs.msg import Image as ImageMsg
from std_msgs.msg import String

from ros_fusion.core.types import (
    CameraInfo,
    CameraIntrinsics,
    Image,
    ImuSample,
    Obstacles,
    Odometry,
    PointCloud,
    RejectedInput,
)
from ros_fusion.ros.messages import (
    camera_info_to_core,
    camera_info_to_msg,
    from_message,
    imu_to_sample,
    odometry_to_core,
    odometry_to_msg,
    sample_to_imu,
    to_message,
)
from ros_fusion.ros.pointcloud import xyz_fields_array
from ros_fusion.ros.stamps import header, ns_to_stamp, seconds_to_duration, stamp_to_ns


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**31) * 10**9, (2**31 - 1) * 10**9 + 999_999_999))
def test_stamp_round_trip(ns):
    t = ns_to_stamp(ns)
    assert 0 <= t.nanosec < 10**9
    assert stamp_to_ns(t) == ns


def test_stamp_values_and_header():
    t = ns_to_stamp(1_700_000_000_000_000_001)
    assert (t.sec, t.nanosec) == (1_700_000_000, 1)
    assert (ns_to_stamp(-1).sec, ns_to_stamp(-1).nanosec) == (-1, 999_999_999)
    h = header(2_500_000_000, "base_link")
    assert (h.stamp.sec, h.stamp.nanosec, h.frame_id) == (2, 500_000_000, "base_link")
    d = seconds_to_duration(0.3)
    assert (d.sec, d.nanosec) == (0, 300_000_000)
    with pytest.raises(RejectedInput):
        ns_to_stamp(2**31 * 10**9)


def _intrinsics(model: str, n_d: int) -> CameraIntrinsics:
    K = np.array([[800.0, 0.5, 640.0], [0.0, 810.0, 360.0], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(1280, 720, K, np.linspace(-0.1, 0.1, n_d), model, np.eye(3), None)


@pytest.mark.parametrize("model,n_d", [("plumb_bob", 5), ("rational_polynomial", 8), ("equidistant", 4)])
def test_camera_info_round_trip(model, n_d):
    info = CameraInfo(42, "camera_front_optical", _intrinsics(model, n_d))
    msg = camera_info_to_msg(info)
    assert len(msg.d) == n_d and msg.distortion_model == model
    back = camera_info_to_core(msg)
    assert (back.stamp_ns, back.frame_id) == (42, "camera_front_optical")
    b, a = back.intrinsics, info.intrinsics
    assert (b.width, b.height, b.distortion_model) == (1280, 720, model)
    np.testing.assert_array_equal(b.K, a.K)
    np.testing.assert_array_equal(b.D, a.D)
    np.testing.assert_array_equal(b.projection(), a.projection())


def test_camera_info_defaults_for_empty_d_r_p():
    msg = CameraInfoMsg()
    msg.width, msg.height = 640, 480
    msg.k = np.array([500.0, 0, 320, 0, 500, 240, 0, 0, 1])
    info = camera_info_to_core(msg).intrinsics
    assert info.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(info.D, np.zeros(5))
    np.testing.assert_array_equal(info.R, np.eye(3))
    assert info.P is None
    np.testing.assert_array_equal(info.projection()[:, :3], info.K)


def _imu_sample(orientation=True, cov=True) -> ImuSample:
    c = np.diag([0.01, 0.02, 0.03]) if cov else None
    q = np.array([0.0, 0.0, np.sin(0.25), np.cos(0.25)]) if orientation else None
    return ImuSample(7, "imu_link", np.array([0.1, -0.2, 0.3]), np.array([0.5, 0.0, 9.81]), q, c, c, c)


@pytest.mark.parametrize("orientation", [True, False])
@pytest.mark.parametrize("cov", [True, False])
def test_imu_round_trip(orientation, cov):
    s = _imu_sample(orientation, cov)
    msg = sample_to_imu(s)
    if not orientation:
        assert msg.orientation_covariance[0] == -1
    back = imu_to_sample(msg)
    assert (back.stamp_ns, back.frame_id) == (7, "imu_link")
    np.testing.assert_array_equal(back.angular_velocity, s.angular_velocity)
    np.testing.assert_array_equal(back.linear_acceleration, s.linear_acceleration)
    for got, want in [
        (back.orientation, s.orientation),
        (back.angular_velocity_cov, s.angular_velocity_cov),
        (back.linear_acceleration_cov, s.linear_acceleration_cov),
        (back.orientation_cov, s.orientation_cov if orientation else None),
    ]:
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, atol=1e-15)


def test_imu_zero_quaternion_means_no_orientation():
    msg = sample_to_imu(_imu_sample())
    msg.orientation.x = msg.orientation.y = msg.orientation.z = msg.orientation.w = 0.0
    msg.orientation_covariance = np.zeros(9)
    assert imu_to_sample(msg).orientation is None


def test_imu_slightly_non_unit_quaternion_is_normalised():
    msg = sample_to_imu(_imu_sample())
    msg.orientation.w *= 1.05
    q = imu_to_sample(msg).orientation
    assert abs(np.linalg.norm(q) - 1.0) < 1e-12


def _odometry(cov: bool) -> Odometry:
    c6 = np.diag(np.arange(1.0, 7.0)) if cov else None
    return Odometry(
        99, "odom", "base_link", np.array([1.0, 2.0, 0.5]), np.array([0.0, 0.0, 0.6, 0.8]),
        np.array([5.0, 0.1, 0.0]), np.array([0.0, 0.0, 0.2]), c6, c6,
    )


@pytest.mark.parametrize("cov", [True, False])
def test_odometry_round_trip(cov):
    o = _odometry(cov)
    back = odometry_to_core(odometry_to_msg(o))
    assert (back.stamp_ns, back.frame_id, back.child_frame_id) == (99, "odom", "base_link")
    for name in ("position", "orientation", "linear_velocity", "angular_velocity"):
        np.testing.assert_allclose(getattr(back, name), getattr(o, name), atol=1e-15)
    if cov:
        np.testing.assert_array_equal(back.pose_cov, o.pose_cov)
        np.testing.assert_array_equal(back.twist_cov, o.twist_cov)
    else:
        assert back.pose_cov is None and back.twist_cov is None


def test_dispatch_round_trips_every_payload_type():
    rng = np.random.default_rng(0)
    payloads = [
        PointCloud(1, "lidar_top", xyz_fields_array(rng.normal(size=(10, 3)), ring=np.arange(10, dtype=np.uint16))),
        Image(2, "camera_front_optical", rng.integers(0, 255, (4, 6, 3), np.uint8), "rgb8"),
        CameraInfo(3, "camera_front_optical", _intrinsics("plumb_bob", 5)),
        _imu_sample(),
        _odometry(True),
        Obstacles(6, "base_link", rng.random((2, 9)).astype(np.float32), np.array([0.9, 0.4], np.float32),
                  np.array([0, 3], np.int32), np.zeros((2, 3), np.float32)),
    ]
    expected_msgs = [PointCloud2, ImageMsg, CameraInfoMsg, Imu, OdometryMsg, PointCloud2]
    for payload, msg_type in zip(payloads, expected_msgs, strict=True):
        msg = to_message(payload)
        assert isinstance(msg, msg_type)
        back = from_message(msg)
        assert type(back) is type(payload)
        assert back.stamp_ns == payload.stamp_ns and back.frame_id == payload.frame_id
    np.testing.assert_array_equal(from_message(to_message(payloads[0])).points, payloads[0].points)
    np.testing.assert_array_equal(from_message(to_message(payloads[1])).data, payloads[1].data)
    np.testing.assert_array_equal(from_message(to_message(payloads[5])).table(), payloads[5].table())


def test_dispatch_compressed_topic_and_unknown_types():
    img = Image(2, "cam", np.zeros((8, 8, 3), np.uint8), "rgb8")
    msg = to_message(img, topic_hint="/camera/front/image_raw/compressed")
    assert isinstance(msg, CompressedImage)
    assert from_message(msg).encoding == "rgb8"
    with pytest.raises(TypeError):
        to_message("not a payload")
    with pytest.raises(RejectedInput) as err:
        from_message(String(data="x"))
    assert err.value.reason == "type"


def test_from_message_reads_rosbags_deserialised_messages():
    """The bag tools may hand over rosbags message objects: same field names, numpy buffers."""
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    rng = np.random.default_rng(3)
    cloud = PointCloud(11, "lidar_top", xyz_fields_array(rng.normal(size=(7, 3)), t=np.arange(7, dtype=np.uint32)))
    imu = _imu_sample()
    for payload, type_name in [(cloud, "sensor_msgs/msg/PointCloud2"), (imu, "sensor_msgs/msg/Imu")]:
        foreign = store.deserialize_cdr(bytes(serialize_message(to_message(payload))), type_name)
        back = from_message(foreign)
        assert type(back) is type(payload) and back.stamp_ns == payload.stamp_ns
    np.testing.assert_array_equal(from_message(store.deserialize_cdr(
        bytes(serialize_message(to_message(cloud))), "sensor_msgs/msg/PointCloud2")).points, cloud.points)
