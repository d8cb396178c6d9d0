"""CameraInfo, Imu, Odometry <-> core types, and the one message dispatch (docs/DESIGN.md §5, §11).

`to_message` / `from_message` are the single place where a core payload
meets its ROS message, so the bag writer, the replay tool and the nodes can
never disagree on a conversion.

Conventions enforced here (REP 145 / sensor_msgs docs): an IMU covariance
whose element 0 is -1 means "this quantity is not provided"; a covariance of
all zeros means "covariance unknown" (→ None); an all-zero orientation
quaternion means "no orientation". Values outside physical plausibility are
rejected with reason ``range`` rather than fed to the ego-motion filter.

Rejection reasons: ``nan``, ``range``, ``size``, ``intrinsics``,
``distortion``, ``missing``, ``type`` (plus ``stamp`` from the header).
"""

from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Quaternion, Vector3
from nav_msgs.msg import Odometry as OdometryMsg
from sensor_msgs.msg import CameraInfo as CameraInfoMsg
from sensor_msgs.msg import CompressedImage as CompressedImageMsg
from sensor_msgs.msg import Imu, PointCloud2

from ..core.types import (
    OBSTACLE_FIELDS,
    CameraInfo,
    CameraIntrinsics,
    CompressedImage,
    Image,
    ImuSample,
    Obstacles,
    Odometry,
    PointCloud,
    RejectedInput,
)
from .image import (
    MAX_COMPRESSED_BYTES,
    compressed_to_image,
    image_msg_to_image,
    image_to_compressed,
    image_to_image_msg,
)
from .obstacles import obstacles_to_pointcloud2, pointcloud2_to_obstacles
from .pointcloud import cloud_to_pointcloud2, pointcloud2_to_cloud
from .stamps import header, stamp_to_ns

#: Number of distortion coefficients each model takes (an empty D means "no distortion").
DISTORTION_LENGTHS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (5,),
    "rational_polynomial": (8, 12, 14),
    "equidistant": (4,),
}

#: Plausibility limits (docs/DESIGN.md §10): beyond these a reading is a fault, not motion.
MAX_GYRO_RAD_S = 100.0
MAX_ACCEL_M_S2 = 50.0 * 9.80665
MAX_SPEED_M_S = 150.0
#: |q| must be within this of 1 before it is normalised.
QUAT_NORM_TOLERANCE = 0.1


def _finite(values: np.ndarray, field: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise RejectedInput("nan", f"non-finite value in {np.asarray(values).ravel().tolist()}", field)
    return values


def _vec3(v, field: str) -> np.ndarray:
    return _finite(np.array([v.x, v.y, v.z], dtype=np.float64), field)


def _quat(q, field: str, *, allow_zero: bool) -> np.ndarray | None:
    """(x y z w) normalised, None if all zero and allowed; rejects a clearly non-unit quaternion."""
    arr = _finite(np.array([q.x, q.y, q.z, q.w], dtype=np.float64), field)
    norm = float(np.linalg.norm(arr))
    if norm == 0.0 and allow_zero:
        return None
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise RejectedInput("range", f"quaternion norm {norm:.4f} is not ~1", field)
    return arr / norm


def _cov(values, n: int, field: str) -> np.ndarray | None:
    arr = _finite(np.asarray(values, dtype=np.float64).reshape(n, n), field)
    return None if not arr.any() else arr.copy()


def _cov_out(cov: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n * n) if cov is None else np.asarray(cov, dtype=np.float64).reshape(n * n)


# --------------------------------------------------------------------------- CameraInfo


def camera_info_to_core(msg: CameraInfoMsg) -> CameraInfo:
    """sensor_msgs/CameraInfo → CameraInfo; an uncalibrated (all-zero K) info is rejected.

    An empty D means no distortion (zeros of the model's length). An all-zero
    R is read as identity and an all-zero P as "not given" (P = [K | 0]).
    Binning and ROI are not supported and ignored.
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise RejectedInput("size", f"image size {width}x{height}", "width")
    K = _finite(np.asarray(msg.k, dtype=np.float64).reshape(3, 3), "k")
    fx, fy = K[0, 0], K[1, 1]
    if fx <= 0 or fy <= 0:
        raise RejectedInput("intrinsics", f"fx={fx}, fy={fy} must be > 0 (uncalibrated camera?)", "k")
    if K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1 or K[1, 0] != 0:
        raise RejectedInput("intrinsics", f"K is not upper-triangular with K[2,2]=1: {K.ravel().tolist()}", "k")
    model = str(msg.distortion_model) or "plumb_bob"
    lengths = DISTORTION_LENGTHS.get(model)
    if lengths is None:
        raise RejectedInput("distortion", f"unknown distortion_model {model!r} (have {sorted(DISTORTION_LENGTHS)})",
                            "distortion_model")
    D = _finite(np.asarray(msg.d, dtype=np.float64), "d")
    if len(D) == 0:
        D = np.zeros(lengths[0])
    elif len(D) not in lengths:
        raise RejectedInput("distortion", f"{model} needs {lengths} coefficients, got {len(D)}", "d")
    R = _finite(np.asarray(msg.r, dtype=np.float64).reshape(3, 3), "r")
    if not R.any():
        R = np.eye(3)
    P = _finite(np.asarray(msg.p, dtype=np.float64).reshape(3, 4), "p")
    intr = CameraIntrinsics(width, height, K.copy(), D.copy(), model, R.copy(), P.copy() if P.any() else None)
    return CameraInfo(stamp_to_ns(msg.header.stamp), str(msg.header.frame_id), intr)


def camera_info_to_msg(info: CameraInfo) -> CameraInfoMsg:
    """CameraInfo → sensor_msgs/CameraInfo (P written as `projection()`, so never all zero)."""
    intr = info.intrinsics
    msg = CameraInfoMsg()
    msg.header = header(info.stamp_ns, info.frame_id)
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = intr.distortion_model
    msg.d = [float(v) for v in np.asarray(intr.D, dtype=np.float64).ravel()]
    msg.k = np.asarray(intr.K, dtype=np.float64).reshape(9)
    msg.r = np.asarray(intr.R, dtype=np.float64).reshape(9)
    msg.p = intr.projection().reshape(12)
    return msg


# --------------------------------------------------------------------------- Imu


def imu_to_sample(msg: Imu) -> ImuSample:
    """sensor_msgs/Imu → ImuSample.

    Orientation is optional (cov[0] = -1 or an all-zero quaternion → None).
    Angular velocity and linear acceleration are required by ego-motion, so a
    message declaring either as not provided (cov[0] = -1) is rejected with
    reason ``missing``.
    """
    av_cov, la_cov, or_cov = msg.angular_velocity_covariance, msg.linear_acceleration_covariance, \
        msg.orientation_covariance
    if av_cov[0] == -1:
        raise RejectedInput("missing", "angular velocity not provided (covariance[0] = -1)", "angular_velocity")
    if la_cov[0] == -1:
        raise RejectedInput("missing", "linear acceleration not provided (covariance[0] = -1)",
                            "linear_acceleration")
    gyro = _vec3(msg.angular_velocity, "angular_velocity")
    acc = _vec3(msg.linear_acceleration, "linear_acceleration")
    if np.linalg.norm(gyro) > MAX_GYRO_RAD_S:
        raise RejectedInput("range", f"|gyro| = {np.linalg.norm(gyro):.1f} rad/s > {MAX_GYRO_RAD_S}",
                            "angular_velocity")
    if np.linalg.norm(acc) > MAX_ACCEL_M_S2:
        raise RejectedInput("range", f"|acc| = {np.linalg.norm(acc):.1f} m/s^2 > {MAX_ACCEL_M_S2:.1f}",
                            "linear_acceleration")
    orientation = orientation_cov = None
    if or_cov[0] != -1:
        orientation = _quat(msg.orientation, "orientation", allow_zero=True)
        if orientation is not None:
            orientation_cov = _cov(or_cov, 3, "orientation_covariance")
    return ImuSample(
        stamp_to_ns(msg.header.stamp),
        str(msg.header.frame_id),
        gyro,
        acc,
        orientation,
        _cov(av_cov, 3, "angular_velocity_covariance"),
        _cov(la_cov, 3, "linear_acceleration_covariance"),
        orientation_cov,
    )


def sample_to_imu(s: ImuSample) -> Imu:
    """ImuSample → sensor_msgs/Imu (no orientation → zero quaternion and covariance[0] = -1)."""
    msg = Imu()
    msg.header = header(s.stamp_ns, s.frame_id)
    av = np.asarray(s.angular_velocity, dtype=np.float64)
    la = np.asarray(s.linear_acceleration, dtype=np.float64)
    msg.angular_velocity = Vector3(x=float(av[0]), y=float(av[1]), z=float(av[2]))
    msg.linear_acceleration = Vector3(x=float(la[0]), y=float(la[1]), z=float(la[2]))
    msg.angular_velocity_covariance = _cov_out(s.angular_velocity_cov, 3)
    msg.linear_acceleration_covariance = _cov_out(s.linear_acceleration_cov, 3)
    if s.orientation is None:
        msg.orientation = Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)
        cov = np.zeros(9)
        cov[0] = -1.0
        msg.orientation_covariance = cov
    else:
        q = np.asarray(s.orientation, dtype=np.float64)
        msg.orientation = Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
        msg.orientation_covariance = _cov_out(s.orientation_cov, 3)
    return msg


# --------------------------------------------------------------------------- Odometry


def odometry_to_core(msg: OdometryMsg) -> Odometry:
    """nav_msgs/Odometry → Odometry (all-zero covariances → None; implausible speeds rejected)."""
    pose, twist = msg.pose.pose, msg.twist.twist
    position = _vec3(pose.position, "pose.pose.position")
    orientation = _quat(pose.orientation, "pose.pose.orientation", allow_zero=False)
    lin = _vec3(twist.linear, "twist.twist.linear")
    ang = _vec3(twist.angular, "twist.twist.angular")
    if np.linalg.norm(lin) > MAX_SPEED_M_S:
        raise RejectedInput("range", f"|v| = {np.linalg.norm(lin):.1f} m/s > {MAX_SPEED_M_S}", "twist.twist.linear")
    if np.linalg.norm(ang) > MAX_GYRO_RAD_S:
        raise RejectedInput("range", f"|w| = {np.linalg.norm(ang):.1f} rad/s > {MAX_GYRO_RAD_S}",
                            "twist.twist.angular")
    return Odometry(
        stamp_to_ns(msg.header.stamp),
        str(msg.header.frame_id),
        str(msg.child_frame_id),
        position,
        orientation,
        lin,
        ang,
        _cov(msg.pose.covariance, 6, "pose.covariance"),
        _cov(msg.twist.covariance, 6, "twist.covariance"),
    )


def odometry_to_msg(o: Odometry) -> OdometryMsg:
    """Odometry → nav_msgs/Odometry (covariance None → zeros, i.e. unknown)."""
    msg = OdometryMsg()
    msg.header = header(o.stamp_ns, o.frame_id)
    msg.child_frame_id = str(o.child_frame_id)
    p = np.asarray(o.position, dtype=np.float64)
    q = np.asarray(o.orientation, dtype=np.float64)
    v = np.asarray(o.linear_velocity, dtype=np.float64)
    w = np.asarray(o.angular_velocity, dtype=np.float64)
    pose = msg.pose.pose
    pose.position.x, pose.position.y, pose.position.z = float(p[0]), float(p[1]), float(p[2])
    pose.orientation = Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    msg.twist.twist.linear = Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))
    msg.twist.twist.angular = Vector3(x=float(w[0]), y=float(w[1]), z=float(w[2]))
    msg.pose.covariance = _cov_out(o.pose_cov, 6)
    msg.twist.covariance = _cov_out(o.twist_cov, 6)
    return msg


# --------------------------------------------------------------------------- CompressedImage


def compressed_payload_to_msg(img: CompressedImage) -> CompressedImageMsg:
    """Already-encoded bytes → sensor_msgs/CompressedImage, unchanged (a recorded JPEG stays bit-exact).

    Empty or oversized payloads are rejected here rather than written to a bag
    that every reader would then have to reject.
    """
    data = bytes(img.data)
    if not data:
        raise RejectedInput("empty", "compressed image has no data", "data")
    if len(data) > MAX_COMPRESSED_BYTES:
        raise RejectedInput("too_large", f"{len(data)} bytes > {MAX_COMPRESSED_BYTES}", "data")
    msg = CompressedImageMsg()
    msg.header = header(img.stamp_ns, img.frame_id)
    msg.format = str(img.format)
    msg.data = array.array("B", data)
    return msg


# --------------------------------------------------------------------------- dispatch


def _is_compressed_topic(topic_hint: str | None) -> bool:
    return bool(topic_hint) and topic_hint.rstrip("/").endswith("compressed")


def to_message(payload, topic_hint: str | None = None):
    """Core payload → its ROS message.

    An Image goes out as CompressedImage (JPEG) when `topic_hint` ends in
    ``compressed``; a `CompressedImage` payload goes out with its bytes as they
    are; Obstacles go out as the obstacles PointCloud2 table.
    """
    if isinstance(payload, PointCloud):
        return cloud_to_pointcloud2(payload)
    if isinstance(payload, Image):
        return image_to_compressed(payload) if _is_compressed_topic(topic_hint) else image_to_image_msg(payload)
    if isinstance(payload, CompressedImage):
        return compressed_payload_to_msg(payload)
    if isinstance(payload, CameraInfo):
        return camera_info_to_msg(payload)
    if isinstance(payload, ImuSample):
        return sample_to_imu(payload)
    if isinstance(payload, Odometry):
        return odometry_to_msg(payload)
    if isinstance(payload, Obstacles):
        return obstacles_to_pointcloud2(payload)
    raise TypeError(f"no ROS message for payload type {type(payload).__name__}")


def is_obstacles_cloud(msg: PointCloud2, topic_hint: str | None = None) -> bool:
    """True for the obstacles table layout (or a topic named ``.../obstacles``)."""
    if topic_hint and topic_hint.rstrip("/").endswith("obstacles"):
        return True
    return tuple(f.name for f in msg.fields) == OBSTACLE_FIELDS


def message_type_name(msg) -> str:
    """``pkg/msg/Type`` of an rclpy message or a rosbags message (its ``__msgtype__``)."""
    name = getattr(msg, "__msgtype__", None)
    if isinstance(name, str):
        return name
    cls = type(msg)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def from_message(msg, topic_hint: str | None = None):
    """ROS message → core payload (PointCloud, Image, CameraInfo, ImuSample, Odometry or Obstacles).

    Accepts rclpy messages and rosbags-deserialised ones alike (the readers
    only use field names), so the bag tools need not round-trip through rclpy.
    Raises RejectedInput (reason ``type`` for a message type with no core
    counterpart, else the converter's reason).
    """
    name = message_type_name(msg)
    if name == "sensor_msgs/msg/PointCloud2":
        return pointcloud2_to_obstacles(msg) if is_obstacles_cloud(msg, topic_hint) else pointcloud2_to_cloud(msg)
    readers = {
        "sensor_msgs/msg/Image": image_msg_to_image,
        "sensor_msgs/msg/CompressedImage": compressed_to_image,
        "sensor_msgs/msg/CameraInfo": camera_info_to_core,
        "sensor_msgs/msg/Imu": imu_to_sample,
        "nav_msgs/msg/Odometry": odometry_to_core,
    }
    reader = readers.get(name)
    if reader is None:
        raise RejectedInput("type", f"no core type for message {name}", "type")
    return reader(msg)
