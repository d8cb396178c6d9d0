"""fusion_node: the lifecycle node that wires sensor topics, health and diagnostics.

A thin shell (DESIGN §3, §11): it subscribes to every sensor of the rig,
converts messages with the `ros/` converters, checks stamps, keeps
`core.health` up to date (including frozen-data detection from a cheap digest
of each message's data), feeds every accepted message to the `core.sync`
synchroniser and polls it on every message and on a timer (4× the reference's
nominal rate, so deadlines and the watchdog fire on time without data), logs
each bundle (sensors, ages, missing; debug level, and a rate-limited info
line), publishes /diagnostics with bundle statistics in `ros_fusion/fusion`,
and — until the FusionPipeline lands — publishes an empty obstacle set and a
DELETEALL marker array per bundle so downstream tools see the output topics at
the reference rate. No algorithm lives here.

Lifecycle: configure = read parameters + rig, create subscriptions and
(inactive) publishers; activate = start publishing; deactivate/cleanup undo
that. With `autostart` (default) `main` drives configure + activate itself, so
no lifecycle manager is needed. A bad parameter or rig file ends the process
with one FATAL line and a non-zero exit status; bad *messages* never do.

    python -m ros_fusion.ros.fusion_node --ros-args -p rig_file:=my_rig.yaml
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, PointCloud2
from visualization_msgs.msg import MarkerArray

from ..core.ego_motion import PoseHistory
from ..core.health import HealthMonitor, Level, SensorHealth, health_configs_from_rig
from ..core.rig import ConfigError, Rig, SensorSpec
from ..core.sync import Bundle, BundleStats, Synchroniser, default_reference, describe_bundle, stream_configs_from_rig
from ..core.types import DEFAULT_CLASSES, Modality, Obstacles, RejectedInput
from .diagnostics import DIAGNOSTICS_TOPIC, fusion_status, health_to_diagnostic_array
from .params import PARAM_SPECS, FusionNodeParams, declare_params, read_params, validate_params
from .pointcloud import DecodedCloud
from .qos import output_qos, sensor_qos
from .ratelimit import RateLimitedLogger

NODE_NAME = "fusion_node"
#: Seconds between two log lines for the same (topic, reason).
LOG_PERIOD_S = 5.0
#: Fusion mode reported until the FusionPipeline is wired in (DESIGN §8 mode names).
FUSION_MODE = "none"
PIPELINE_MODE = f"{FUSION_MODE} — pipeline not yet integrated"
#: Seconds between two info-level bundle lines (every bundle is logged at debug level).
BUNDLE_LOG_PERIOD_S = 5.0
#: The sync poll timer runs this many times per reference period (deadline resolution).
POLL_PER_PERIOD = 4
def message_digest(msg: Any) -> bytes | None:
    """A cheap fingerprint of a message's payload for frozen-data detection, or None when empty/unknown.

    Header (stamp) excluded on purpose: a frozen driver re-sends the same data
    with fresh stamps. Data-carrying messages (PointCloud2, Image,
    CompressedImage) hash length + CRC32 of *all* bytes (a sample would call a
    cloud frozen when only a few points changed; CRC32 runs at ~3 GB/s, 0.7 ms
    for a 100k-point cloud); Imu and Odometry hash their numeric fields. Empty
    data gives None (an empty radar scan repeating is not a fault).
    """
    data = getattr(msg, "data", None)
    if data is not None and not isinstance(data, str):
        try:
            mv = memoryview(data).cast("B")
        except TypeError:
            mv = memoryview(bytes(data))
        n = len(mv)
        if n == 0:
            return None
        return struct.pack("<QI", n, zlib.crc32(mv))
    if isinstance(msg, Imu):
        v = (msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z,
             msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z,
             msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w)
        return struct.pack("<10d", *v)
    if isinstance(msg, Odometry):
        p, t = msg.pose.pose, msg.twist.twist
        v = (p.position.x, p.position.y, p.position.z, p.orientation.z, p.orientation.w,
             t.linear.x, t.linear.y, t.angular.z)
        return struct.pack("<8d", *v)
    return None


@dataclass
class _Stream:
    """One subscribed topic: which sensor it feeds and how its messages become core objects."""

    sensor: SensorSpec
    topic: str
    msg_type: type
    decode: Callable[[Any], Any]
    is_info: bool = False  # CameraInfo: intrinsics only, not counted as the camera's data rate


def _decoders(max_points: int) -> dict[str, Callable[[Any], Any]]:
    """The converters of the `ros/` layer, imported when configuring so a missing one is a clear config error."""
    try:
        from .image import compressed_to_image, image_msg_to_image
        from .messages import camera_info_to_core, imu_to_sample, odometry_to_core
        from .pointcloud import decode_pointcloud2
    except ImportError as e:  # a broken install, not user input: still one clear line
        raise ConfigError("ros_fusion.ros", f"message converters unavailable ({e}); reinstall ros_fusion") from None
    return {
        "image": image_msg_to_image,
        "compressed": compressed_to_image,
        "camera_info": camera_info_to_core,
        "cloud": lambda msg: decode_pointcloud2(msg, max_points=max_points),
        "imu": imu_to_sample,
        "odometry": odometry_to_core,
    }


def _obstacle_encoders() -> tuple[Callable[[Obstacles], PointCloud2], Callable[..., MarkerArray]]:
    try:
        from .obstacles import obstacles_to_markers, obstacles_to_pointcloud2
    except ImportError as e:
        raise ConfigError("ros_fusion.ros", f"obstacle encoder unavailable ({e}); reinstall ros_fusion") from None
    return obstacles_to_pointcloud2, obstacles_to_markers


def plan_streams(rig: Rig, decoders: dict[str, Callable[[Any], Any]]) -> list[_Stream]:
    """Topics to subscribe for a rig: image (or CompressedImage for ``.../compressed``) + CameraInfo per
    camera, PointCloud2 per LiDAR/radar, Imu, Odometry."""
    streams: list[_Stream] = []
    for s in rig.sensors.values():
        if s.modality is Modality.CAMERA:
            if s.topic.rstrip("/").endswith("/compressed"):
                streams.append(_Stream(s, s.topic, CompressedImage, decoders["compressed"]))
            else:
                streams.append(_Stream(s, s.topic, Image, decoders["image"]))
            if s.info_topic:
                streams.append(_Stream(s, s.info_topic, CameraInfo, decoders["camera_info"], is_info=True))
        elif s.modality in (Modality.LIDAR, Modality.RADAR):
            streams.append(_Stream(s, s.topic, PointCloud2, decoders["cloud"]))
        elif s.modality is Modality.IMU:
            streams.append(_Stream(s, s.topic, Imu, decoders["imu"]))
        elif s.modality is Modality.ODOMETRY:
            streams.append(_Stream(s, s.topic, Odometry, decoders["odometry"]))
    return streams


def describe_config_error(e: ConfigError) -> str:
    """The one FATAL line for a bad parameter or rig file: what is wrong and where to fix it."""
    if e.source:
        return f"cannot configure {NODE_NAME}: rig file {e} (fix the rig file or point rig_file at another one)"
    return f"cannot configure {NODE_NAME}: parameter {e}"


class FusionNode(LifecycleNode):
    """Lifecycle node `fusion_node` (see module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare_params(self)  # ConfigError on a bad override: main turns it into FATAL + exit
        # Validate the initial values now so `autostart` and friends are trustworthy before configure.
        self.initial_params: FusionNodeParams = read_params(self)
        self.params: FusionNodeParams | None = None
        self.rig: Rig | None = None
        self.health = HealthMonitor()
        self.latest: dict[str, Any] = {}  # sensor (or sensor + "/info") → last accepted core object
        self.reference: str | None = None
        self.sync: Synchroniser | None = None
        self.ego: PoseHistory | None = None
        self.bundle_stats = BundleStats([])
        self._sync_timer: Any = None
        self.obstacles_published = 0
        self.config_error: ConfigError | None = None
        self._streams: list[_Stream] = []
        self._subs: list[Any] = []
        self._pub_obstacles: Any = None
        self._pub_markers: Any = None
        self._pub_diag: Any = None
        self._diag_timer: Any = None
        self._active = False
        self._classes = DEFAULT_CLASSES
        self._obs_to_cloud: Callable[[Obstacles], PointCloud2] | None = None
        self._obs_to_markers: Callable[..., MarkerArray] | None = None
        self.rlog = RateLimitedLogger(self.get_logger(), LOG_PERIOD_S)
        self.add_on_set_parameters_callback(self._validate_param_change)
        self.add_post_set_parameters_callback(self._apply_param_change)

    # --- lifecycle ---------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read_params(self)
            rig = params.load_rig()
            streams = plan_streams(rig, _decoders(params.max_points))
            obs_to_cloud, obs_to_markers = _obstacle_encoders()
        except ConfigError as e:
            self.config_error = e
            self.get_logger().fatal(describe_config_error(e))
            return TransitionCallbackReturn.FAILURE
        reference = params.sync_reference or default_reference(rig)
        if reference not in rig.sensors:
            e = ConfigError("sync_reference", f"{reference!r} is not a sensor of rig '{rig.name}' "
                                              f"(one of: {', '.join(rig.sensors)}; or empty for the first LiDAR)")
            self.config_error = e
            self.get_logger().fatal(describe_config_error(e))
            return TransitionCallbackReturn.FAILURE
        self.params, self.rig, self._streams = params, rig, streams
        self._obs_to_cloud, self._obs_to_markers = obs_to_cloud, obs_to_markers
        self.health = HealthMonitor(
            health_configs_from_rig(rig, params.stale_timeout_factor, params.missing_timeout_s, params.rate_window_s,
                                    params.frozen_repeats, params.recover_count)
        )
        self.reference = reference
        self.sync = Synchroniser(
            stream_configs_from_rig(rig, params.stale_timeout_factor), reference, watchdog=params.sync_watchdog,
            max_future_ns=params.max_future_ns, max_age_ns=params.max_age_ns,
        )
        self.bundle_stats = BundleStats(rig.sensors)
        # Ego-motion from the rig's IMU (+ wheel odometry): the pipeline compensates each
        # bundle to its trigger time with it; here it is fed and its health reported.
        self.ego = PoseHistory.from_rig(rig)
        if not rig.of(Modality.LIDAR):
            self.get_logger().warning(f"rig has no LiDAR: bundles are triggered by {reference}")
        for st in streams:
            self._subs.append(
                self.create_subscription(st.msg_type, st.topic, self._callback(st), sensor_qos())
            )
        self._pub_obstacles = self.create_lifecycle_publisher(PointCloud2, "~/obstacles", output_qos())
        self._pub_markers = self.create_lifecycle_publisher(MarkerArray, "~/markers", output_qos())
        self._pub_diag = self.create_lifecycle_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, output_qos())
        self.get_logger().info(
            f"configured: rig '{rig.name}' ({rig.source}), {len(rig.sensors)} sensors, "
            f"{len(streams)} subscriptions, reference {self.reference}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.params is not None
        self._active = True
        self._diag_timer = self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics)
        if self.sync is not None:
            period_s = 1.0 / self.sync.streams[self.sync.reference].cfg.rate_hz
            self._sync_timer = self.create_timer(period_s / POLL_PER_PERIOD, self.poll_sync)
        self.get_logger().info("active")
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_timer()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _destroy_timer(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._sync_timer is not None:
            self.destroy_timer(self._sync_timer)
            self._sync_timer = None

    def _teardown(self) -> None:
        self._destroy_timer()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs.clear()
        for name in ("_pub_obstacles", "_pub_markers", "_pub_diag"):
            pub = getattr(self, name)
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
                setattr(self, name, None)
        self._streams = []
        self.params = None
        self.sync = None
        self.ego = None

    # --- parameters at runtime ---------------------------------------------------
    def _validate_param_change(self, changes: list[Parameter]) -> SetParametersResult:
        values = {s.name: self.get_parameter(s.name).value for s in PARAM_SPECS}
        values.update({p.name: p.value for p in changes if p.name in values})
        try:
            validate_params(values)
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _apply_param_change(self, changes: list[Parameter]) -> None:
        if self.params is None:
            return
        old = self.params
        self.params = read_params(self)
        if self.params.diagnostics_period_s != old.diagnostics_period_s and self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics)
        if self.params.max_points != old.max_points:
            decoders = _decoders(self.params.max_points)
            for st in self._streams:
                if st.msg_type is PointCloud2:
                    st.decode = decoders["cloud"]

    # --- sensor callbacks ----------------------------------------------------------
    def _callback(self, stream: _Stream) -> Callable[[Any], None]:
        def on_message(msg: Any) -> None:
            try:
                self.handle_message(stream, msg)
            except Exception:  # noqa: BLE001 - last line of defence (e.g. the logger itself failed)
                self.health[stream.sensor.name].on_reject("internal")

        return on_message

    def handle_message(self, stream: _Stream, msg: Any) -> None:
        """Convert, check the stamp, update health; never raises (a node never dies on input)."""
        name = stream.sensor.name
        health: SensorHealth = self.health[name]
        prefix = "camera_info_" if stream.is_info else ""
        try:
            params = self.params
            if params is None:
                return
            now_ns = self.get_clock().now().nanoseconds
            obj = stream.decode(msg)
            if isinstance(obj, DecodedCloud):  # NaN/Inf points were removed: count them
                health.on_points_dropped("nonfinite", obj.n_nonfinite)
                obj = obj.cloud
            if stream.is_info:
                self.latest[name + "/info"] = obj
                return
            reason = health.accept_stamp(obj.stamp_ns, now_ns, params.max_future_ns, params.max_age_ns)
            if reason is not None:
                health.on_reject(reason)
                self.rlog.warning(
                    (stream.topic, reason),
                    f"{stream.topic}: rejected message (header.stamp): {reason}: stamp {obj.stamp_ns} ns, "
                    f"clock {now_ns} ns",
                )
                return
            health.on_message(obj.stamp_ns, now_ns, message_digest(msg))
            self.latest[name] = obj
            if self.ego is not None:
                if stream.sensor.modality is Modality.IMU:
                    self.ego.add_imu(obj)  # never raises: bad samples are counted in ego.stats
                elif stream.sensor.modality is Modality.ODOMETRY:
                    self.ego.add_odometry(obj)
            if self.sync is not None:
                sync_reason = self.sync.add(name, obj.stamp_ns, now_ns, obj)
                if sync_reason is not None:  # accepted by health, refused by the synchroniser: counted
                    health.on_drop("sync_" + sync_reason)
                self._handle_bundles(self.sync.poll(now_ns))
        except RejectedInput as e:
            health.on_reject(prefix + e.reason)
            where = e.field or "message"
            self.rlog.warning((stream.topic, e.reason), f"{stream.topic}: rejected {where}: {e.reason}: {e.detail}")
        except Exception as e:  # noqa: BLE001 - a converter bug must not kill the node; counted and logged
            health.on_reject(prefix + "internal")
            self.rlog.error(
                (stream.topic, "internal"), f"{stream.topic}: internal error {type(e).__name__}: {e} (message dropped)"
            )

    # --- synchronisation -------------------------------------------------------------
    def poll_sync(self) -> None:
        """Timer callback: emits bundles whose deadline passed or that the watchdog triggered."""
        if self.sync is None:
            return
        try:
            self._handle_bundles(self.sync.poll(self.get_clock().now().nanoseconds))
        except Exception as e:  # noqa: BLE001 - a timer must never take the node down
            self.rlog.error(("sync", "internal"), f"synchroniser poll failed: {type(e).__name__}: {e}")

    def _handle_bundles(self, bundles: list[Bundle]) -> None:
        for b in bundles:
            self.bundle_stats.add(b)
            line = describe_bundle(b)
            self.get_logger().debug(line)
            self.rlog.log("info", ("sync", "bundle"), line)
            if self._active:
                self.publish_empty_result(b.t_ns)

    # --- outputs -------------------------------------------------------------------
    def publish_empty_result(self, stamp_ns: int) -> None:
        """Empty obstacles + DELETEALL markers at the reference stamp (placeholder until the pipeline lands)."""
        assert self.params is not None and self._obs_to_cloud is not None and self._obs_to_markers is not None
        obs = Obstacles.empty(stamp_ns, self.params.output_frame)
        self._pub_obstacles.publish(self._obs_to_cloud(obs))
        self._pub_markers.publish(self._obs_to_markers(obs, self._classes, mode=FUSION_MODE))  # = one DELETEALL
        self.obstacles_published += 1

    def publish_diagnostics(self) -> None:
        try:
            now_ns = self.get_clock().now().nanoseconds
            snap = self.health.snapshot(now_ns)
            fusion = fusion_status(Level.WARN, f"mode {PIPELINE_MODE}", self.fusion_values(snap.modalities_usable()))
            self._pub_diag.publish(health_to_diagnostic_array(snap, now_ns, [fusion]))
        except Exception as e:  # noqa: BLE001 - diagnostics must never take the node down
            self.rlog.error(("/diagnostics", "internal"), f"cannot publish diagnostics: {type(e).__name__}: {e}")

    def fusion_values(self, usable: set[str]) -> dict[str, Any]:
        """Key/values of the `ros_fusion/fusion` status: mode, bundle statistics, synchroniser counters."""
        bs = self.bundle_stats.summary()
        values: dict[str, Any] = {
            "mode": PIPELINE_MODE,
            "bundles": bs["bundles"],
            "bundles.reference": bs["bundles_reference"],
            "bundles.watchdog": bs["bundles_watchdog"],
            "bundle_wait_ms_p50": bs["wait_ms_p50"],
            "bundle_wait_ms_p99": bs["wait_ms_p99"],
            "bundle_wait_ms_max": bs["wait_ms_max"],
            "reference_sensor": self.reference or "",
            "obstacles_published": self.obstacles_published,
            "usable_modalities": ",".join(sorted(usable)),
        }
        last = self.bundle_stats.last
        if last is not None:
            values["last_bundle.missing"] = ",".join(sorted(last.missing))
        for name, st in bs["sensors"].items():
            values[f"matched_pct.{name}"] = st["matched_pct"]
            if st["age_ms_p50"] is not None:
                values[f"age_ms_p50.{name}"] = st["age_ms_p50"]
        if self.ego is not None:
            es = self.ego.stats
            values["ego_motion.mode"] = self.ego.mode
            values["ego_motion.stationary"] = int(bool(self.ego.stationary))
            values["ego_motion.imu_accepted"] = es.imu_accepted
            values["ego_motion.odometry_accepted"] = es.odometry_accepted
            values["ego_motion.short_gaps"] = es.short_gaps
            values["ego_motion.long_gaps"] = es.long_gaps
            values["ego_motion.resets"] = es.resets
            for reason, n in sorted(es.imu_rejected.items()):
                values[f"ego_motion.imu_rejected.{reason}"] = n
            for reason, n in sorted(es.odometry_rejected.items()):
                values[f"ego_motion.odometry_rejected.{reason}"] = n
        if self.sync is not None:
            ss = self.sync.stats()
            values["sync_resets"] = ss["resets"]
            values["sync_reference_late"] = ss["reference_late"]
            for name, st in ss["streams"].items():
                for reason, n in sorted(st["rejected"].items()):
                    values[f"sync_rejected.{name}.{reason}"] = n
                for reason, n in sorted(st["dropped"].items()):
                    if reason != "unmatched":
                        values[f"sync_dropped.{name}.{reason}"] = n
        return values


def main(args: list[str] | None = None) -> int:
    """Entry point: `fusion_node` / `python -m ros_fusion.ros.fusion_node [--ros-args ...]`.

    Exit status: 0 after SIGINT/SIGTERM, 1 when configure/activate fails (bad
    rig or parameter; one FATAL line logged), 2 when a parameter override is
    invalid before the node exists.
    """
    rclpy.init(args=args)  # parses --ros-args (incl. --log-level); installs SIGINT/SIGTERM handlers
    node: FusionNode | None = None
    executor = SingleThreadedExecutor()
    try:
        try:
            node = FusionNode()
        except ConfigError as e:
            get_logger(NODE_NAME).fatal(describe_config_error(e))
            return 2
        executor.add_node(node)
        if node.initial_params.autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1  # the FATAL line is already logged by on_configure
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal(f"cannot activate {NODE_NAME}")
                return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
