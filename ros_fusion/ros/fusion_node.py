"""fusion_node: the lifecycle node that runs the fusion engine on live topics (DESIGN §5, §8).

A thin shell (DESIGN §3, §11): it subscribes to every sensor of the rig,
converts messages with the `ros/` converters and hands them to
`runtime.engine.FusionEngine` — stamp checks, sensor health (frozen data from
a cheap digest of each message's bytes), ego-motion, synchronisation — which
is the same object the offline evaluator feeds from bags. Bundles are polled
on every message and on a timer (4× the reference's nominal rate, so
deadlines and the watchdog fire on time without data) and queued to one
fusion worker thread, so subscriptions keep draining (IMU at 100+ Hz) while
the network runs. The worker runs `FusionPipeline` and publishes
``~/obstacles`` (PointCloud2 rows), ``~/markers`` (boxes, labels, velocity
arrows, tinted by fusion mode), ``~/detections`` (vision_msgs, only where
vision_msgs is installed) and keeps latency statistics for /diagnostics
(mode, switches, per-stage and end-to-end p50/p99, dropped bundles).

Queue policy: at most `FUSION_QUEUE` bundles wait; when fusion falls behind
the oldest waiting bundle is dropped and counted (`bundles_dropped_busy`) —
fresh data beats complete data for obstacle avoidance.

Lifecycle: configure = read parameters, rig and model (hash-checked), create
subscriptions and (inactive) publishers; activate = start the worker and
publishing; deactivate/cleanup undo that. With `autostart` (default) `main`
drives configure + activate itself, so no lifecycle manager is needed. A bad
parameter, rig or model file ends the process with one FATAL line and a
non-zero exit status; bad *messages* never do. One exception: when
`detectors` includes the network but no model fits the rig (missing or
refused manifest, a rig the model cannot serve, a model that fails in the
warm-up), the node runs the training-free geometric detector alone, says so
in one WARN line and in every /diagnostics message (`detector_fallback`),
unless `geometric_fallback` is false.

    python -m ros_fusion.ros.fusion_node --ros-args -p rig_file:=my_rig.yaml
"""

from __future__ import annotations

import gc
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from ..core.ego_motion import PoseHistory
from ..core.health import HealthMonitor, Level, SensorHealth
from ..core.rig import ConfigError, Rig, SensorSpec
from ..core.sync import Bundle, BundleStats, Synchroniser, default_reference, describe_bundle
from ..core.types import DEFAULT_CLASSES, Modality, Obstacles, RejectedInput
from ..runtime.engine import EngineOutput, EngineSettings, FusionEngine
from ..runtime.model_bundle import BundleError
from ..runtime.pipeline import parse_detectors
from .diagnostics import DIAGNOSTICS_TOPIC, fusion_status, health_to_diagnostic_array
from .params import PARAM_SPECS, FusionNodeParams, declare_params, read_params, validate_params
from .pointcloud import DecodedCloud
from .qos import output_qos, sensor_depth, sensor_qos
from .ratelimit import RateLimitedLogger

NODE_NAME = "fusion_node"
#: Seconds between two log lines for the same (topic, reason).
LOG_PERIOD_S = 5.0
#: Bundles waiting for the fusion worker at most; older ones are dropped (counted) when it falls behind.
FUSION_QUEUE = 2
#: Diagnostic level of each fusion mode (DESIGN §8: `none` is an ERROR).
MODE_LEVEL = {"intermediate": Level.OK, "late": Level.WARN, "degraded": Level.WARN, "none": Level.ERROR}
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


def models_folder(params: FusionNodeParams) -> Path:
    """The folder `models_dir` names, or the package's models/ when it is empty."""
    from ..paths import share_dir

    return Path(params.models_dir).expanduser() if params.models_dir else share_dir() / "models"


def load_pipeline(params: FusionNodeParams, rig: Rig, detectors: tuple[str, ...] | None = None) -> Any:
    """The FusionPipeline for `rig` running `detectors` (default: the `detectors` parameter).

    With the network: the model from the configured folder (hash-checked, checked against the rig) and
    backend. A problem of the model itself is a `BundleError` (what `build_pipeline` may fall back on); a
    bad parameter or a missing backend package is a plain `ConfigError`. The geometric detector alone
    loads no model at all, so a folder without one is no error then.
    """
    from ..runtime.backends import BackendUnavailable, create_backend
    from ..runtime.model_bundle import load_bundle
    from ..runtime.pipeline import FusionPipeline, PipelineConfig

    detectors = parse_detectors(params.detectors) if detectors is None else detectors
    settings: dict[str, Any] = {"strategy": params.strategy, "frame_id": params.output_frame, "detectors": detectors}
    if params.score_threshold >= 0.0:
        settings["score_threshold"] = params.score_threshold
    if "network" not in detectors:
        if not _has_geometric_input(rig):
            raise ConfigError("detectors", f"the geometric detector needs a LiDAR or radar and rig '{rig.name}' has "
                                           "none (use detectors network)")
        return FusionPipeline(rig, None, None, PipelineConfig.from_manifest(None, **settings))
    if params.backend == "torch":
        raise ConfigError("backend", "torch is a development backend (needs a checkpoint); use onnxruntime or "
                                     "tensorrt in the node")
    model = load_bundle(models_folder(params))  # BundleError naming the manifest key or file
    model.check_rig(rig)  # BundleError: a rig this model cannot serve
    options: dict[str, Any] = {}
    if params.backend == "onnxruntime":
        options = {"providers": "auto", "threads": params.inference_threads}
    try:
        backend = create_backend(params.backend, model, **options)
    except BackendUnavailable as e:
        raise ConfigError("backend", str(e)) from None
    except Exception as e:  # noqa: BLE001 - the package is there but refuses the model's files (opset, format)
        raise BundleError("models_dir", f"backend {params.backend} cannot load the model in {model.root}: "
                                        f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None
    cfg = PipelineConfig.from_manifest(model.raw, **settings)
    if params.score_threshold < 0.0 and cfg.operating_threshold is not None:
        cfg.score_threshold = cfg.operating_threshold  # the model's published operating point
    return FusionPipeline(rig, model, backend, cfg)


def _has_geometric_input(rig: Rig) -> bool:
    return bool(rig.of(Modality.LIDAR) or rig.of(Modality.RADAR))


@dataclass(frozen=True)
class DetectorFallback:
    """Why the node runs the geometric detector alone although `detectors` asked for the network.

    Kept for as long as the node runs: /diagnostics says so in every message (level WARN, key
    `detector_fallback`), not only the start-up log, so a monitor that connects later still sees
    that the obstacles come from LiDAR/radar clusters and not from the trained model.
    """

    requested: tuple[str, ...]
    models_dir: Path
    reason: str  # the model's BundleError, as text

    def log_line(self, rig_name: str) -> str:
        return (f"no model in {self.models_dir} fits rig '{rig_name}': {self.reason}; falling back to the geometric "
                "detector (LiDAR clusters + moving radar detections, late fusion; set geometric_fallback false to "
                "fail instead)")


def build_pipeline(params: FusionNodeParams, rig: Rig, warm: Callable[[Any], Any]
                   ) -> tuple[Any, Any, DetectorFallback | None]:
    """(pipeline, what `warm(pipeline)` returned, fallback or None) for the `detectors` parameter.

    When the network is asked for but no trained model fits the rig — the manifest is missing or
    refused, the rig is one the model cannot serve, or the model fails on the rig's data in the
    warm-up (all `BundleError`s) — and `geometric_fallback` is on, the pipeline is the geometric
    detector alone and the fallback says why. Why not fail: a vehicle with a LiDAR or radar still
    needs obstacles while its model folder is wrong, and a training-free detector is better than
    none. Everything else (a bad parameter, a missing backend package, a broken install, a rig
    without LiDAR and radar) is still a `ConfigError` that ends the node.
    """
    detectors = parse_detectors(params.detectors)
    try:
        pipeline = load_pipeline(params, rig, detectors)
        return pipeline, warm(pipeline), None
    except BundleError as e:
        if "network" not in detectors or not params.geometric_fallback or not _has_geometric_input(rig):
            raise
        fallback = DetectorFallback(detectors, models_folder(params), str(e))
    pipeline = load_pipeline(params, rig, ("geometric",))
    return pipeline, warm(pipeline), fallback


def warm_start(pipeline: Any, streams: list[_Stream], obs_to_cloud: Callable[[Obstacles], PointCloud2],
               obs_to_markers: Callable[..., MarkerArray], obs_to_detections: Callable[..., Any] | None,
               rounds: int) -> Any:
    """Run every stage once before the first real message: the pipeline (`runtime.warmup`), then this
    node's own work on the same synthetic data — each stream's message decoder and the output encoders.

    Why here: configure is where the node may take its time; a first bundle that pays for ONNX
    Runtime's first run, OpenCV's first JPEG decode and numpy's first allocations is late and makes
    the next ones late too (dropped as "behind real time"). A model that cannot run on this rig
    fails here, as a `BundleError` (what `build_pipeline` may fall back on), instead of on every
    bundle.
    """
    from ..runtime.warmup import warm_up
    from .messages import to_message

    try:
        report = warm_up(pipeline, rounds)
    except Exception as e:  # noqa: BLE001 - whatever the backend raises, it is a model/rig mismatch here
        if pipeline.model is None:  # the geometric detector alone: no model to blame, a bug to report
            raise ConfigError("detectors", f"the geometric detector fails on this rig's data: {type(e).__name__}: "
                                           f"{e}") from None
        raise BundleError("models_dir", f"the model in {pipeline.model.root} does not run on this rig's data: "
                                        f"{type(e).__name__}: {e}") from None
    t0 = time.perf_counter()
    members = report.bundle.members if report.bundle is not None else {}
    for st in streams:
        if st.is_info or st.sensor.name not in members:
            continue
        try:
            st.decode(to_message(members[st.sensor.name].payload, st.topic))
        except RejectedInput:  # a limit of this node (e.g. max_points) refused it: the decoder still ran
            pass
        except Exception as e:  # noqa: BLE001 - a converter that fails on clean data is a broken install
            raise ConfigError("ros_fusion.ros", f"{st.topic}: decoder failed on a synthetic message: {e}") from None
    if report.obstacles is not None:
        # the geometric detector alone always merges late: warm the markers' colours of the mode it runs
        mode = "late" if "network" not in pipeline.config.detectors else "intermediate"
        try:
            obs_to_cloud(report.obstacles)
            obs_to_markers(report.obstacles, pipeline.classes, mode=mode)
            if obs_to_detections is not None:
                obs_to_detections(report.obstacles, pipeline.classes)
        except Exception as e:  # noqa: BLE001 - an output encoder failing on clean data is a broken install
            raise ConfigError("ros_fusion.ros", f"output encoder failed on the warm-up detections: "
                                                f"{type(e).__name__}: {e}") from None
    report.runs_ms["messages"] = [(time.perf_counter() - t0) * 1e3]
    report.total_ms += report.runs_ms["messages"][0]
    return report


def _detections_encoder() -> Callable[..., Any] | None:
    """Obstacles → vision_msgs/Detection3DArray where vision_msgs is installed (ROS mode), else None."""
    try:
        from .detections import obstacles_to_detection3d_array
    except ImportError:
        return None
    return obstacles_to_detection3d_array


def mode_line(res: Any) -> str:
    """``~/fusion_mode`` text of one result: ``<stamp_ns> <mode> <modalities,...>`` (what live evaluation reads)."""
    return f"{int(res.stamp_ns)} {res.mode} {','.join(res.modalities) or '-'}"


def parse_mode_line(text: str) -> tuple[int, str, tuple[str, ...]]:
    stamp, mode, mods = text.split(" ", 2)
    return int(stamp), mode, tuple(m for m in mods.split(",") if m and m != "-")


def describe_config_error(e: ConfigError) -> str:
    """The one FATAL line for a bad parameter, rig or model: what is wrong and where to fix it."""
    if isinstance(e, BundleError):  # its source is the manifest (or the rig it cannot serve)
        return (f"cannot configure {NODE_NAME}: no usable model: {e} (point models_dir at a model for this rig, "
                "or set detectors to geometric)")
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
        self.engine: FusionEngine | None = None
        self._sync_timer: Any = None
        self.obstacles_published = 0
        self.bundles_dropped_busy = 0
        # Outputs not built because nobody subscribed (views of ~/obstacles, not data: nothing is lost).
        self.views_skipped = {"markers": 0, "detections": 0}
        self.e2e_ms: deque[float] = deque(maxlen=600)  # bundle time → publish, node clock
        self.warm_up_ms: float | None = None  # configure's warm start (every stage once), for diagnostics
        # Set while the geometric detector stands in for a network no model could serve (diagnostics say so).
        self.detector_fallback: DetectorFallback | None = None
        # Work for the fusion worker: reference sweeps to pre-process (pipelining) and bundles to fuse.
        self._cv = threading.Condition()
        self._prefetch_jobs: deque[tuple[str, Any]] = deque(maxlen=2)
        self._bundle_jobs: deque[tuple[Bundle, set[str]]] = deque()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._pub_detections: Any = None
        self._pub_mode: Any = None
        self._obs_to_detections: Callable[..., Any] | None = None
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

        def warm_pipeline(pipeline: Any) -> Any:
            if params.warm_up_rounds == 0:
                return None
            return warm_start(pipeline, streams, obs_to_cloud, obs_to_markers, _detections_encoder(),
                              params.warm_up_rounds)

        try:
            pipeline, warm, fallback = build_pipeline(params, rig, warm_pipeline)
        except ConfigError as e:
            self.config_error = e
            self.get_logger().fatal(describe_config_error(e))
            return TransitionCallbackReturn.FAILURE
        if fallback is not None:
            self.get_logger().warning(fallback.log_line(rig.name))
        self.detector_fallback = fallback
        self.warm_up_ms = warm.total_ms if warm is not None else None
        self.get_logger().info(warm.describe() if warm is not None else "warm-up off (warm_up_rounds 0)")
        self.params, self.rig, self._streams = params, rig, streams
        self._obs_to_cloud, self._obs_to_markers = obs_to_cloud, obs_to_markers
        self._classes = tuple(pipeline.classes)
        self.reference = reference
        settings = EngineSettings.from_params(params)
        settings.reference = reference
        self.engine = FusionEngine(rig, pipeline, settings)
        # The node's views of the engine's state (diagnostics and tests read them).
        self.health, self.sync, self.ego = self.engine.health, self.engine.sync, self.engine.ego
        self.bundle_stats = self.engine.bundle_stats
        if not rig.of(Modality.LIDAR):
            self.get_logger().warning(f"rig has no LiDAR: bundles are triggered by {reference}")
        for st in streams:
            self._subs.append(
                self.create_subscription(st.msg_type, st.topic, self._callback(st),
                                         sensor_qos(sensor_depth(st.sensor.rate_hz)))
            )
        self._pub_obstacles = self.create_lifecycle_publisher(PointCloud2, "~/obstacles", output_qos())
        self._pub_markers = self.create_lifecycle_publisher(MarkerArray, "~/markers", output_qos())
        self._pub_diag = self.create_lifecycle_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, output_qos())
        self._pub_mode = self.create_lifecycle_publisher(String, "~/fusion_mode", output_qos())
        self._obs_to_detections = _detections_encoder()
        if self._obs_to_detections is not None:
            from vision_msgs.msg import Detection3DArray

            self._pub_detections = self.create_lifecycle_publisher(Detection3DArray, "~/detections", output_qos())
        model = (f"model {pipeline.model.root} ({pipeline.stages.describe()})" if pipeline.model is not None
                 else "no model")
        self.get_logger().info(
            f"configured: rig '{rig.name}' ({rig.source}), {len(rig.sensors)} sensors, "
            f"{len(streams)} subscriptions, reference {self.reference}; detectors "
            f"{'+'.join(pipeline.config.detectors)}, {model}, strategy {params.strategy}"
            + ("" if self._obs_to_detections else "; vision_msgs not installed: no ~/detections")
        )
        # Everything built so far (modules, model sessions, the warm-up's leftovers) lives as long as the node:
        # collect once and move it out of the collector's view, so a full collection during the drive scans
        # only what the drive allocated (the startup heap alone takes a full collection ~30 ms here).
        gc.collect()
        gc.freeze()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.params is not None
        self._active = True
        self._stop.clear()
        self._worker = threading.Thread(target=self._fusion_worker, name="fusion_worker", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics)
        if self.sync is not None:
            period_s = 1.0 / self.sync.streams[self.sync.reference].cfg.rate_hz
            self._sync_timer = self.create_timer(period_s / POLL_PER_PERIOD, self.poll_sync)
        self.get_logger().info("active")
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()
        self._destroy_timer()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Join the fusion worker before the node goes: on SIGINT no lifecycle transition runs, and
        a worker still inside ONNX Runtime while the interpreter exits aborts the process
        ("terminate called without an active exception", exit -6, seen once in CI)."""
        if hasattr(self, "_stop"):  # not when __init__ failed part-way (rclpy destroys the node then)
            self._active = False
            self._stop_worker()
        super().destroy_node()

    def _destroy_timer(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._sync_timer is not None:
            self.destroy_timer(self._sync_timer)
            self._sync_timer = None

    def _stop_worker(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    def _teardown(self) -> None:
        self._stop_worker()
        self._destroy_timer()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs.clear()
        for name in ("_pub_obstacles", "_pub_markers", "_pub_diag", "_pub_detections", "_pub_mode"):
            pub = getattr(self, name)
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
                setattr(self, name, None)
        self._streams = []
        self.params = None
        self.detector_fallback = None
        self.sync = None
        self.ego = None
        self.engine = None

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
        """Convert and hand to the engine; never raises (a node never dies on input)."""
        name = stream.sensor.name
        health: SensorHealth = self.health[name]
        prefix = "camera_info_" if stream.is_info else ""
        try:
            engine = self.engine
            if self.params is None or engine is None:
                return
            now_ns = self.get_clock().now().nanoseconds
            obj = stream.decode(msg)
            if isinstance(obj, DecodedCloud):  # NaN/Inf points were removed: count them
                health.on_points_dropped("nonfinite", obj.n_nonfinite)
                obj = obj.cloud
            if stream.is_info:
                self.latest[name + "/info"] = obj
                engine.camera_info(name, obj)
                return
            reason = engine.accept(name, obj, now_ns, message_digest(msg))  # counted by the engine
            if reason is not None and not reason.startswith("sync_"):
                self.rlog.warning(
                    (stream.topic, reason),
                    f"{stream.topic}: rejected message (header.stamp): {reason}: stamp {obj.stamp_ns} ns, "
                    f"clock {now_ns} ns",
                )
                return
            self.latest[name] = obj
            if self._active and engine.wants_prefetch(name):
                with self._cv:
                    self._prefetch_jobs.append((name, obj))
                    self._cv.notify()
            self._dispatch(engine.poll_bundles(now_ns))
        except RejectedInput as e:
            health.on_reject(prefix + e.reason)
            where = e.field or "message"
            self.rlog.warning((stream.topic, e.reason), f"{stream.topic}: rejected {where}: {e.reason}: {e.detail}")
        except Exception as e:  # noqa: BLE001 - a converter bug must not kill the node; counted and logged
            health.on_reject(prefix + "internal")
            self.rlog.error(
                (stream.topic, "internal"), f"{stream.topic}: internal error {type(e).__name__}: {e} (message dropped)"
            )

    # --- synchronisation and fusion ---------------------------------------------------
    def poll_sync(self) -> None:
        """Timer callback: emits bundles whose deadline passed or that the watchdog triggered."""
        if self.engine is None:
            return
        try:
            self._dispatch(self.engine.poll_bundles(self.get_clock().now().nanoseconds))
        except Exception as e:  # noqa: BLE001 - a timer must never take the node down
            self.rlog.error(("sync", "internal"), f"synchroniser poll failed: {type(e).__name__}: {e}")

    def _dispatch(self, bundles: list[tuple[Bundle, set[str]]]) -> None:
        """Queue bundles for the fusion worker; when it is behind, the oldest waiting one is dropped (counted)."""
        for b, usable in bundles:
            line = describe_bundle(b)
            self.get_logger().debug(line)
            self.rlog.log("info", ("sync", "bundle"), line)
            if not self._active:
                continue
            with self._cv:
                while len(self._bundle_jobs) >= FUSION_QUEUE:
                    self._bundle_jobs.popleft()
                    self.bundles_dropped_busy += 1
                    self.rlog.warning(("fusion", "busy"), "fusion is behind real time: dropped the oldest waiting "
                                                          "bundle (counted in bundles_dropped_busy)")
                self._bundle_jobs.append((b, usable))
                self._cv.notify()

    def _fusion_worker(self) -> None:
        """Worker thread: pre-process arriving reference sweeps, fuse queued bundles, publish; never raises."""
        while not self._stop.is_set():
            with self._cv:
                self._cv.wait_for(lambda: self._stop.is_set() or self._prefetch_jobs or self._bundle_jobs,
                                  timeout=0.1)
                job = self._prefetch_jobs.popleft() if self._prefetch_jobs else (
                    self._bundle_jobs.popleft() if self._bundle_jobs else None)
            if job is None:
                continue
            try:
                engine = self.engine
                if engine is None:
                    continue
                if isinstance(job[0], str):  # (sensor, sweep): pipelining
                    engine.prefetch(job[0], job[1])
                    continue
                b, usable = job
                out = engine.process(b, usable, self.get_clock().now().nanoseconds)
                if out.result is None:
                    self.rlog.error(("fusion", "failed"), f"fusion failed on bundle t={b.t_ns}: {out.error} "
                                                          "(counted in bundles_failed)")
                    continue
                self.publish_result(out)
            except Exception as e:  # noqa: BLE001 - the worker must survive a publishing error
                self.rlog.error(("fusion", "internal"), f"fusion worker: {type(e).__name__}: {e}")

    # --- outputs -------------------------------------------------------------------
    def publish_result(self, out: EngineOutput) -> None:
        """Obstacles, markers (tinted by mode) and vision_msgs detections of one fused bundle."""
        assert self.params is not None and self._obs_to_cloud is not None and self._obs_to_markers is not None
        res = out.result
        assert res is not None
        if not self._active:
            return
        obs = res.obstacles
        self._pub_obstacles.publish(self._obs_to_cloud(obs))
        # Markers and detections are views of the obstacles, built only while someone subscribes (as
        # image_transport does): a MarkerArray is ~40 Python message objects per box, ~10 % of a bundle's
        # time on a 2-core machine, spent for nobody when no RViz or Foxglove is connected.
        if self._pub_markers.get_subscription_count() > 0:
            self._pub_markers.publish(self._obs_to_markers(obs, self._classes, mode=res.mode))
        else:
            self.views_skipped["markers"] += 1
        if self._pub_detections is not None and self._obs_to_detections is not None:
            if self._pub_detections.get_subscription_count() > 0:
                self._pub_detections.publish(self._obs_to_detections(obs, self._classes))
            else:
                self.views_skipped["detections"] += 1
        self._pub_mode.publish(String(data=mode_line(res)))
        self.obstacles_published += 1
        self.e2e_ms.append((self.get_clock().now().nanoseconds - int(res.stamp_ns)) / 1e6)
        if res.switch is not None:
            sw = res.switch
            self.get_logger().warning(f"fusion mode {sw.old} -> {sw.new}: {sw.reason}")

    def publish_diagnostics(self) -> None:
        try:
            self._pub_diag.publish(self.diagnostics(self.get_clock().now().nanoseconds))
        except Exception as e:  # noqa: BLE001 - diagnostics must never take the node down
            self.rlog.error(("/diagnostics", "internal"), f"cannot publish diagnostics: {type(e).__name__}: {e}")

    def diagnostics(self, now_ns: int) -> DiagnosticArray:
        """The /diagnostics message at `now_ns`: every sensor's status and `ros_fusion/fusion`.

        The fusion status's level is the mode's (DESIGN §8), and at least WARN while the geometric
        detector stands in for the network (`detector_fallback` holds why).
        """
        snap = self.health.snapshot(now_ns)
        mode = self.engine.mode if self.engine is not None else "none"
        level = MODE_LEVEL.get(mode, Level.WARN)
        message = f"mode {mode}" + (" (no usable sensor)" if mode == "none" else "")
        if self.detector_fallback is not None:
            level = max(level, Level.WARN)
            message += "; geometric detector only: no model fits the rig (see detector_fallback)"
        fusion = fusion_status(level, message, self.fusion_values(snap.modalities_usable()))
        return health_to_diagnostic_array(snap, now_ns, [fusion])

    def fusion_values(self, usable: set[str]) -> dict[str, Any]:
        """Key/values of the `ros_fusion/fusion` status: mode, bundle statistics, synchroniser counters."""
        bs = self.bundle_stats.summary()
        values: dict[str, Any] = {
            "mode": self.engine.mode if self.engine is not None else "none",
            "detectors": ("+".join(self.engine.pipeline.config.detectors)
                          if self.engine is not None and self.engine.pipeline is not None else ""),
            "bundles": bs["bundles"],
            "bundles.reference": bs["bundles_reference"],
            "bundles.watchdog": bs["bundles_watchdog"],
            "bundle_wait_ms_p50": bs["wait_ms_p50"],
            "bundle_wait_ms_p99": bs["wait_ms_p99"],
            "bundle_wait_ms_max": bs["wait_ms_max"],
            "reference_sensor": self.reference or "",
            "obstacles_published": self.obstacles_published,
            "bundles_dropped_busy": self.bundles_dropped_busy,
            "markers_skipped_no_subscriber": self.views_skipped["markers"],
            "usable_modalities": ",".join(sorted(usable)),
        }
        if self.detector_fallback is not None:
            values["detector_fallback"] = self.detector_fallback.reason
        if self.warm_up_ms is not None:
            values["warm_up_ms"] = round(self.warm_up_ms, 1)
        last = self.bundle_stats.last
        if last is not None:
            values["last_bundle.missing"] = ",".join(sorted(last.missing))
        for name, st in bs["sensors"].items():
            values[f"matched_pct.{name}"] = st["matched_pct"]
            if st["age_ms_p50"] is not None:
                values[f"age_ms_p50.{name}"] = st["age_ms_p50"]
        if self.engine is not None:
            eng = self.engine
            values["bundles_fused"] = eng.counters.get("bundles_fused", 0)
            values["bundles_failed"] = eng.counters.get("bundles_failed", 0)
            if eng.pipeline is not None:
                pol = eng.pipeline.policy
                values["mode_switches"] = len(pol.switches)
                if pol.switches:
                    sw = pol.switches[-1]
                    values["last_switch"] = f"{sw.old}->{sw.new} at {sw.t_ns} ns: {sw.reason}"
                for mode, n in sorted(pol.counts.items()):
                    values[f"bundles_mode.{mode}"] = n
                for k, n in sorted(eng.pipeline.counters.items()):
                    values[f"pipeline.{k}"] = n
            for stage, q in eng.stage_stats.percentiles().items():
                values[f"latency_ms_p50.{stage}"] = round(q["p50"], 2)
                values[f"latency_ms_p99.{stage}"] = round(q["p99"], 2)
            if self.e2e_ms:
                e2e = np.asarray(self.e2e_ms)
                values["latency_ms_p50.end_to_end"] = round(float(np.percentile(e2e, 50)), 2)
                values["latency_ms_p99.end_to_end"] = round(float(np.percentile(e2e, 99)), 2)
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
