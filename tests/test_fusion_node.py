"""fusion_node in-process: lifecycle, stream planning, and callbacks that count instead of crashing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before rclpy.init: keep DDS on this host
rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, PointCloud2  # noqa: E402

from ros_fusion.core.health import Level, SensorState  # noqa: E402
from ros_fusion.core.rig import load_rig  # noqa: E402
from ros_fusion.paths import default_rig_path, share_dir  # noqa: E402
from ros_fusion.ros.diagnostics import health_to_diagnostic_array, parse_diagnostic_array  # noqa: E402
from ros_fusion.ros.fusion_node import FusionNode, _decoders, plan_streams  # noqa: E402
from ros_fusion.ros.pointcloud import make_pointcloud2  # noqa: E402
from ros_fusion.runtime.model_bundle import BundleError  # noqa: E402


@pytest.fixture
def node():
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", "max_points:=1000"], context=ctx, domain_id=53)
    n = FusionNode(context=ctx)
    assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
    yield n
    n.destroy_node()
    ctx.try_shutdown()


def _cloud(stamp_ns: int, n: int = 100) -> PointCloud2:
    pts = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    pts["x"] = np.arange(n)
    return make_pointcloud2(stamp_ns, "lidar_top", pts)


def _lidar_stream(node: FusionNode):
    return next(s for s in node._streams if s.sensor.name == "lidar_top")


def test_streams_cover_the_rig(node: FusionNode) -> None:
    topics = {s.topic: s.msg_type for s in node._streams}
    rig = load_rig(default_rig_path())
    for spec in rig.sensors.values():
        assert spec.topic in topics
    assert topics["/sensors/camera_front/image_raw/compressed"] is CompressedImage
    assert "/sensors/camera_front/camera_info" in topics
    assert topics["/sensors/lidar_top/points"] is PointCloud2
    assert node.reference == "lidar_top"
    subscribed = {name for name, _ in node.get_topic_names_and_types()} | set(topics)
    assert "/sensors/imu" in subscribed


def test_sensor_queues_hold_half_a_second_of_each_stream(node: FusionNode) -> None:
    """A full best-effort queue drops silently: depth 5 was only 50 ms of the 100 Hz IMU."""
    from ros_fusion.ros.qos import SENSOR_DEPTH, sensor_depth

    assert [sensor_depth(r) for r in (100.0, 50.0, 15.0, 10.0, 1.0, 0.0, float("nan"))] == [50, 25, 8, 5, 5, 5, 5]
    depth = {sub.topic_name: sub.qos_profile.depth for sub in node._subs}
    rig = load_rig(default_rig_path())
    for spec in rig.sensors.values():
        assert depth[spec.topic] == max(SENSOR_DEPTH, int(np.ceil(spec.rate_hz * 0.5))), spec.topic
    assert depth["/sensors/imu"] >= 50 and depth["/sensors/lidar_top/points"] == SENSOR_DEPTH


def test_raw_topic_gets_raw_image(tmp_path: Path) -> None:
    d = yaml.safe_load(default_rig_path().read_text())
    d["sensors"]["camera_front"]["topic"] = "/sensors/camera_front/image_raw"
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(d))
    streams = plan_streams(load_rig(path), _decoders(10))
    cam = [s for s in streams if s.sensor.name == "camera_front" and not s.is_info]
    assert [s.msg_type for s in cam] == [Image]


def test_callbacks_count_rejects_and_never_raise(node: FusionNode) -> None:
    st = _lidar_stream(node)
    now = node.get_clock().now().nanoseconds
    node.handle_message(st, _cloud(now - 50_000_000))
    node.handle_message(st, _cloud(now - 50_000_000))  # duplicate stamp
    node.handle_message(st, _cloud(0))  # unset stamp
    node.handle_message(st, _cloud(now + 3_600_000_000_000))  # an hour ahead
    node.handle_message(st, _cloud(now, n=5000))  # > max_points=1000
    bad = _cloud(now)
    bad.data = bytes(bad.data)[:10]
    node.handle_message(st, bad)  # truncated
    # A converter bug (not a RejectedInput) is counted as `internal`, not raised.
    st_broken = type(st)(st.sensor, st.topic, st.msg_type, lambda msg: 1 / 0)
    node.handle_message(st_broken, _cloud(now))
    node.handle_message(st, _cloud(now - 10_000_000))  # still works afterwards
    h = node.health["lidar_top"]
    assert h.received == 2
    assert dict(h.rejected) == {
        "stamp_duplicate": 1, "stamp_zero": 1, "stamp_future": 1, "too_large": 1, "truncated": 1, "internal": 1,
    }
    assert isinstance(node.latest["lidar_top"].points, np.ndarray)


def test_nonfinite_points_are_dropped_and_counted(node: FusionNode) -> None:
    st = _lidar_stream(node)
    now = node.get_clock().now().nanoseconds
    msg = _cloud(now - 20_000_000, n=10)
    pts = np.frombuffer(bytes(msg.data), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")]).copy()
    pts["y"][[1, 4, 7]] = [np.nan, np.inf, -np.inf]
    msg = make_pointcloud2(now - 20_000_000, "lidar_top", pts)
    node.handle_message(st, msg)
    h = node.health["lidar_top"]
    assert h.received == 1
    assert len(node.latest["lidar_top"]) == 7
    assert dict(h.points_dropped) == {"nonfinite": 3}
    diag = parse_diagnostic_array(health_to_diagnostic_array(node.health.snapshot(now), now))
    assert diag["ros_fusion/lidar_top"]["values"]["points_dropped.nonfinite"] == 3
    assert diag["ros_fusion/lidar_top"]["values"]["transitions"] == f"OK@{now}"  # MISSING → OK at this snapshot


def test_imu_feeds_ego_motion_and_its_health_is_reported(node: FusionNode) -> None:
    from sensor_msgs.msg import Imu

    from ros_fusion.ros.stamps import header

    st = next(s for s in node._streams if s.sensor.name == "imu")
    now = node.get_clock().now().nanoseconds
    t0 = now - 2_000_000_000
    for i in range(100):  # 1 s at 100 Hz, standing still
        m = Imu(header=header(t0 + i * 10_000_000, "imu_link"))
        m.linear_acceleration.z = 9.81
        if i == 50:
            m.angular_velocity.z = 40.0  # a one-sample spike: implausible next to its neighbours
        node.handle_message(st, m)
    assert node.health["imu"].received == 100
    values = node.fusion_values(set())
    assert values["ego_motion.mode"] == "imu"
    assert values["ego_motion.imu_accepted"] == 99
    assert sum(v for k, v in values.items() if k.startswith("ego_motion.imu_rejected.")) == 1
    # the spike did not turn the vehicle: 1 s of standing still stays (almost) the identity
    rel = node.ego.relative_pose(t0 + 100_000_000, t0 + 990_000_000)
    assert np.allclose(rel, np.eye(4), atol=1e-3)


def test_activate_publishes_and_diagnostics_roundtrip(node: FusionNode) -> None:
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    st = _lidar_stream(node)
    now = node.get_clock().now().nanoseconds
    node.handle_message(st, _cloud(now - 1_000_000))
    # The bundle waits (start-up grace) for sensors not seen yet, then goes out at their deadline.
    assert node.obstacles_published == 0
    node._dispatch(node.engine.poll_bundles(now + 500_000_000))
    deadline = time.monotonic() + 20.0  # the fusion worker thread runs the network, then publishes
    while node.obstacles_published < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.obstacles_published == 1
    assert node.engine.mode == "degraded"  # LiDAR alone
    assert node.engine.counters["bundles_fused"] == 1
    assert node.bundle_stats.total == 1 and node.bundle_stats.last.missing == {"camera_front", "radar_front", "imu",
                                                                               "odometry"}
    snap = node.health.snapshot(node.get_clock().now().nanoseconds)
    assert snap.sensors["lidar_top"].state is SensorState.OK
    assert snap.sensors["imu"].state is SensorState.MISSING
    parsed = parse_diagnostic_array(health_to_diagnostic_array(snap, now))
    assert parsed["ros_fusion/lidar_top"]["values"]["received"] == 1
    assert parsed["ros_fusion/imu"]["level"] == 2
    assert parsed["ros_fusion/imu"]["message"] == "MISSING: never received"
    assert isinstance(health_to_diagnostic_array(snap, now), DiagnosticArray)
    node.publish_diagnostics()  # must not raise while active
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    node.handle_message(st, _cloud(now))
    assert node.obstacles_published == 1  # inactive: no outputs
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node._subs == [] and node.params is None


def _imu_stream(node: FusionNode):
    return next(s for s in node._streams if s.sensor.name == "imu")


def test_frozen_cloud_is_flagged_stale_and_recovers_with_hysteresis(node: FusionNode) -> None:
    st = _lidar_stream(node)
    now = node.get_clock().now().nanoseconds
    period = 100_000_000
    t = now - 5_000_000_000
    for i in range(5):  # healthy, changing data
        node.handle_message(st, _cloud(t + i * period, n=100 + i))
    h = node.health["lidar_top"]
    assert h.update(t + 4 * period) is SensorState.OK
    for i in range(5, 9):  # the driver re-sends its last buffer with fresh stamps
        node.handle_message(st, _cloud(t + i * period, n=104))
    snap = h.snapshot(t + 8 * period)
    assert snap.frozen and snap.state is SensorState.STALE and snap.message.startswith("STALE: frozen data")
    assert snap.frozen_episodes == 1 and snap.frozen_messages == 4
    diag = parse_diagnostic_array(health_to_diagnostic_array(node.health.snapshot(t + 8 * period), t + 8 * period))
    assert diag["ros_fusion/lidar_top"]["values"]["frozen"] == 1
    assert diag["ros_fusion/lidar_top"]["values"]["frozen_episodes"] == 1
    node.handle_message(st, _cloud(t + 9 * period, n=50))  # data moves again: recovering, not yet OK
    assert h.update(t + 9 * period) is SensorState.STALE and h.recovering
    for i in range(10, 12):
        node.handle_message(st, _cloud(t + i * period, n=50 + i))
    assert h.update(t + 11 * period) is SensorState.OK  # recover_count = 3 healthy messages


def test_bundles_feed_diagnostics_values(node: FusionNode) -> None:
    lidar, imu = _lidar_stream(node), _imu_stream(node)
    from sensor_msgs.msg import Imu

    from ros_fusion.ros.stamps import header

    now = node.get_clock().now().nanoseconds
    t0 = now - 2_000_000_000
    for k in range(100):  # 1 s of IMU at 100 Hz and LiDAR at 10 Hz, messages handed in time order
        ts = t0 + k * 10_000_000
        msg = Imu(header=header(ts, "imu_link"))
        msg.linear_acceleration.z = 9.81 + 1e-3 * k
        node.handle_message(imu, msg)
        if k % 10 == 5:
            node.handle_message(lidar, _cloud(ts, n=100 + k))
    node._dispatch(node.engine.poll_bundles(now + 1_000_000_000))
    values = node.fusion_values(set())
    assert values["bundles"] == 10 and values["bundles.reference"] == 10
    assert values["matched_pct.lidar_top"] == 100.0
    assert values["matched_pct.imu"] == 100.0  # an IMU sample within 5 ms of every sweep
    assert values["age_ms_p50.imu"] == 0.0  # sample stamps coincide with the sweep stamps
    assert "camera_front" in values["last_bundle.missing"]
    diag = parse_diagnostic_array(health_to_diagnostic_array(node.health.snapshot(now), now))
    assert diag["ros_fusion/imu"]["values"]["received"] == 100


def test_unknown_sync_reference_fails_configure() -> None:
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", "sync_reference:=lidar_roof"], context=ctx, domain_id=53)
    n = FusionNode(context=ctx)
    try:
        assert n.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert n.config_error is not None and n.config_error.key == "sync_reference"
        assert "lidar_roof" in str(n.config_error) and n.params is None
    finally:
        n.destroy_node()
        ctx.try_shutdown()


def test_configure_warms_up_every_stage_before_active(node: FusionNode) -> None:
    """The fixture's node configured with the default warm_up_rounds: the warm-up ran and is reported."""
    assert node.warm_up_ms is not None and node.warm_up_ms > 0
    assert node.fusion_values(set())["warm_up_ms"] == round(node.warm_up_ms, 1)
    # ... and left nothing behind: no bundle fused, no mode switch, no pipeline counter.
    assert node.engine is not None and node.engine.counters.get("bundles_fused", 0) == 0
    assert not node.engine.pipeline.policy.switches and not node.engine.pipeline.counters


def test_warm_up_rounds_zero_skips_the_warm_up() -> None:
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", "warm_up_rounds:=0"], context=ctx, domain_id=53)
    n = FusionNode(context=ctx)
    try:
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert n.warm_up_ms is None
        assert "warm_up_ms" not in n.fusion_values(set())
    finally:
        n.destroy_node()
        ctx.try_shutdown()


def _publish_one_bundle(node: FusionNode, stamp_ns: int) -> None:
    published = node.obstacles_published
    node.handle_message(_lidar_stream(node), _cloud(stamp_ns, n=100 + published))
    node._dispatch(node.engine.poll_bundles(stamp_ns + 500_000_000))
    deadline = time.monotonic() + 20.0  # the fusion worker thread runs the network, then publishes
    while node.obstacles_published <= published and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.obstacles_published == published + 1


def test_markers_are_built_only_while_someone_subscribes(node: FusionNode) -> None:
    from visualization_msgs.msg import MarkerArray

    from ros_fusion.ros.qos import output_qos

    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    now = node.get_clock().now().nanoseconds
    _publish_one_bundle(node, now - 1_000_000_000)
    assert node.views_skipped["markers"] == 1  # nobody listening: ~/obstacles only
    assert node.fusion_values(set())["markers_skipped_no_subscriber"] == 1

    viewer = rclpy.create_node("marker_viewer", context=node.context)
    try:
        viewer.create_subscription(MarkerArray, "/fusion_node/markers", lambda m: None, output_qos())
        deadline = time.monotonic() + 10.0
        while node._pub_markers.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node._pub_markers.get_subscription_count() == 1
        _publish_one_bundle(node, now - 500_000_000)
        assert node.views_skipped["markers"] == 1  # built and published for the viewer
    finally:
        viewer.destroy_node()


# --- detectors: network, geometric, and the fallback when no model fits -------------------------------
DOMAIN_ID = 53  # this file's nodes (the fixture above too)
FALLBACK_LINE = "falling back to the geometric detector"


@contextmanager
def _node_with(*params: str) -> Iterator[FusionNode]:
    """A FusionNode (not configured) with `-p` overrides, in its own context."""
    ctx = rclpy.Context()
    args = ["--ros-args"] + [a for p in params for a in ("-p", p)]
    rclpy.init(args=args, context=ctx, domain_id=DOMAIN_ID)
    n = FusionNode(context=ctx)
    try:
        yield n
    finally:
        n.destroy_node()
        ctx.try_shutdown()


def _fusion_status(node: FusionNode) -> dict:
    return parse_diagnostic_array(node.diagnostics(node.get_clock().now().nanoseconds))["ros_fusion/fusion"]


def _copied_models(tmp_path: Path) -> Path:
    dst = tmp_path / "models"
    shutil.copytree(share_dir() / "models", dst)
    return dst


def _swap_stage_files(models: Path, a: str, b: str) -> None:
    """Point stage `a` at stage `b`'s ONNX file and back, hashes included: a manifest that loads and
    passes every check, with encoders that take the other stage's inputs (fails only when run)."""
    manifest = models / "manifest.yaml"
    raw = yaml.safe_load(manifest.read_text())
    st = raw["stages"]
    for key in ("file", "sha256", "bytes"):
        st[a][key], st[b][key] = st[b][key], st[a][key]
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))


def _sim_sweep_and_truth(stamp_ns: int) -> tuple[PointCloud2, np.ndarray]:
    """The first simulated LiDAR sweep of an urban drive as a message stamped `stamp_ns`, and the
    ground-truth boxes of the cars at its capture time."""
    from ros_fusion.ros.messages import to_message
    from ros_fusion.sim.drive import simulate_drive

    rig = load_rig(default_rig_path())
    sweep = truth = None
    for e in simulate_drive(rig, "urban", 7, 0.05):
        if e.topic == "/sensors/lidar_top/points" and sweep is None:
            sweep = e.payload
        if e.topic == "/ground_truth/obstacles" and truth is None:
            truth = e.payload
    assert sweep is not None and truth is not None and truth.stamp_ns == sweep.stamp_ns
    cars = truth.boxes[truth.labels == 0]  # class 0 = car (DEFAULT_CLASSES)
    return to_message(dataclasses.replace(sweep, stamp_ns=stamp_ns), "/sensors/lidar_top/points"), cars


def test_detectors_geometric_configures_without_a_model(tmp_path: Path) -> None:
    """detectors geometric loads no model: a models_dir without one is no error and no fallback."""
    with _node_with("detectors:=geometric", f"models_dir:={tmp_path}") as n:
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        pipe = n.engine.pipeline
        assert pipe.model is None and pipe.stages is None and pipe.config.detectors == ("geometric",)
        assert n.detector_fallback is None and n.warm_up_ms is not None  # warmed up without a model
        assert n._classes == pipe.classes and "car" in n._classes
        values = _fusion_status(n)["values"]
        assert values["detectors"] == "geometric" and "detector_fallback" not in values


def test_detectors_geometric_needs_a_lidar_or_radar(tmp_path: Path) -> None:
    d = yaml.safe_load(default_rig_path().read_text())
    for name in ("lidar_top", "radar_front"):
        del d["sensors"][name]
    rig = tmp_path / "camera_only.yaml"
    rig.write_text(yaml.safe_dump(d))
    with _node_with("detectors:=geometric", f"rig_file:={rig}", "sync_reference:=camera_front") as n:
        assert n.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert n.config_error.key == "detectors" and "LiDAR or radar" in str(n.config_error)


def test_no_model_falls_back_to_the_geometric_detector(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """An empty models_dir: one WARN line naming the folder and why, WARN + the reason in /diagnostics, and
    the geometric detector finds the simulated cars in the obstacles the node publishes."""
    from ros_fusion.ros.obstacles import pointcloud2_to_obstacles
    from ros_fusion.ros.qos import output_qos

    empty = tmp_path / "no_models"
    empty.mkdir()
    with _node_with(f"models_dir:={empty}") as n:
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        err = capfd.readouterr().err
        warn = [ln for ln in err.splitlines() if "[WARN]" in ln]
        assert len(warn) == 1 and FALLBACK_LINE in warn[0], err
        assert f"no model in {empty} fits rig 'sim_default'" in warn[0] and "manifest.yaml not found" in warn[0]
        assert n.engine.pipeline.model is None and n.engine.pipeline.config.detectors == ("geometric",)
        assert n.detector_fallback is not None and n.detector_fallback.requested == ("network",)
        status = _fusion_status(n)
        assert status["level"] >= Level.WARN and "geometric detector only" in status["message"]
        assert "manifest.yaml not found" in status["values"]["detector_fallback"]

        got = []
        viewer = rclpy.create_node("obstacle_viewer", context=n.context)
        try:
            viewer.create_subscription(PointCloud2, "/fusion_node/obstacles", got.append, output_qos())
            assert n.trigger_activate() == TransitionCallbackReturn.SUCCESS
            deadline = time.monotonic() + 10.0
            while n._pub_obstacles.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            now = n.get_clock().now().nanoseconds
            msg, cars = _sim_sweep_and_truth(now - 1_000_000)
            n.handle_message(_lidar_stream(n), msg)
            n._dispatch(n.engine.poll_bundles(now + 500_000_000))
            executor = rclpy.executors.SingleThreadedExecutor(context=n.context)
            executor.add_node(viewer)
            deadline = time.monotonic() + 20.0
            while not got and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            executor.shutdown()
        finally:
            viewer.destroy_node()
        assert n.obstacles_published == 1 and len(got) == 1
        assert n.engine.mode == "degraded"  # LiDAR alone, through the geometric detector
        obs = pointcloud2_to_obstacles(got[0])
        found = obs.boxes[obs.labels == n._classes.index("car")]
        near = cars[np.hypot(cars[:, 0], cars[:, 1]) < 20.0]
        assert len(near) and len(found)
        for car in near:  # every car within 20 m has a published car box within 2 m of its centre
            assert np.min(np.hypot(found[:, 0] - car[0], found[:, 1] - car[1])) < 2.0, (car, found[:, :2])
        status = _fusion_status(n)  # reported for as long as the node runs
        assert status["level"] == Level.WARN and "detector_fallback" in status["values"]
        assert n.trigger_deactivate() == TransitionCallbackReturn.SUCCESS


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("tampered", "sha256"),  # a model file changed after export: refused by its hash
        ("swapped", "does not run on this rig's data"),  # loads and checks out, fails in the warm-up
    ],
)
def test_a_refused_or_failing_model_falls_back(tmp_path: Path, case: str, needle: str) -> None:
    models = _copied_models(tmp_path)
    if case == "tampered":
        with (models / "radar.onnx").open("ab") as f:
            f.write(b"\0")
    else:
        _swap_stage_files(models, "lidar", "radar")
    with _node_with(f"models_dir:={models}") as n:
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert n.detector_fallback is not None and needle in n.detector_fallback.reason
        assert n.engine.pipeline.model is None
        assert needle in _fusion_status(n)["values"]["detector_fallback"]


def test_geometric_fallback_false_fails_configure(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with _node_with(f"models_dir:={tmp_path}", "geometric_fallback:=false") as n:
        assert n.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert isinstance(n.config_error, BundleError) and n.config_error.key == "manifest"
        assert n.params is None and n.engine is None
    err = capfd.readouterr().err
    fatal = [ln for ln in err.splitlines() if "[FATAL]" in ln]
    assert len(fatal) == 1 and "no usable model" in fatal[0] and "models_dir" in fatal[0], err
    assert FALLBACK_LINE not in err


def test_default_model_runs_the_network_without_fallback(node: FusionNode) -> None:
    values = node.fusion_values(set())
    assert values["detectors"] == "network" and "detector_fallback" not in values
    assert node.detector_fallback is None and node.engine.pipeline.model is not None


def test_an_output_encoder_failing_in_the_warm_up_fails_configure(monkeypatch: pytest.MonkeyPatch,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """A broken install (an encoder that raises on clean detections) is one FATAL line, not a traceback."""
    import ros_fusion.ros.fusion_node as fn

    cloud, markers = fn._obstacle_encoders()

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("no such field")

    monkeypatch.setattr(fn, "_obstacle_encoders", lambda: (cloud, broken))
    with _node_with("detectors:=geometric") as n:
        assert n.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert n.config_error is not None and n.config_error.key == "ros_fusion.ros"
    err = capfd.readouterr().err
    assert any("[FATAL]" in ln and "output encoder failed" in ln for ln in err.splitlines()), err
    assert "Traceback" not in err


def test_a_frame_id_the_rig_does_not_name_is_a_counted_warning(node: FusionNode) -> None:
    """The rig's extrinsic is applied by topic; a header in another frame is used, counted and reported."""
    st = _lidar_stream(node)
    now = node.get_clock().now().nanoseconds
    pts = np.zeros(100, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    pts["x"] = np.arange(100)
    node.handle_message(st, make_pointcloud2(now - 30_000_000, "velodyne", pts))
    h = node.health["lidar_top"]
    assert h.received == 1 and dict(h.warned) == {"frame_id": 1}
    diag = parse_diagnostic_array(health_to_diagnostic_array(node.health.snapshot(now), now))["ros_fusion/lidar_top"]
    assert diag["level"] == Level.WARN and "'velodyne'" in diag["message"] and "sensors.lidar_top.frame_id" in \
        diag["message"]
    assert diag["values"]["warned.frame_id"] == 1
    node.handle_message(st, make_pointcloud2(now - 20_000_000, "lidar_top", pts))  # the rig's frame: cleared
    assert h.input_warning is None and dict(h.warned) == {"frame_id": 1}
    node.handle_message(st, make_pointcloud2(now - 10_000_000, "", pts))  # unset frame_id: not judged
    assert h.input_warning is None and h.received == 3


def test_an_empty_sweep_and_a_cloud_without_intensity_are_counted_warnings(node: FusionNode) -> None:
    st = _lidar_stream(node)
    now = node.get_clock().now().nanoseconds
    node.handle_message(st, _cloud(now - 30_000_000, n=0))
    h = node.health["lidar_top"]
    assert h.received == 1 and h.warned["empty"] == 1 and "empty sweep" in h.input_warning
    node.handle_message(st, _cloud(now - 20_000_000))  # x y z only
    assert h.warned["intensity_field"] == 1 and "no intensity field" in h.input_warning
    assert "empty" not in h.input_warning  # points again: that warning cleared
    pts = np.zeros(10, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    node.handle_message(st, make_pointcloud2(now - 10_000_000, "lidar_top", pts))
    assert h.input_warning is None and h.received == 3
    diag = parse_diagnostic_array(health_to_diagnostic_array(node.health.snapshot(now), now))["ros_fusion/lidar_top"]
    assert diag["values"]["warned.empty"] == 1 and diag["values"]["warned.intensity_field"] == 1
