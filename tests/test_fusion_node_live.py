"""Live: a sensor publisher process and fusion_node in separate processes, observed over DDS.

Checks what only a running system shows: measured rates in /diagnostics match
what was published (±20 %), a truncated cloud sent mid-stream is counted under
`rejected.truncated` while the node keeps running, a sensor never published is
MISSING, and `~/obstacles` arrives at the LiDAR rate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from ros_fusion.core.types import OBSTACLE_FIELDS  # noqa: E402
from ros_fusion.ros.diagnostics import DiagnosticsListener  # noqa: E402
from ros_fusion.ros.qos import output_qos  # noqa: E402
from ros_fusion.ros.stamps import stamp_to_ns  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOMAIN_ID = 52
RATES = {"lidar_top": 10.0, "camera_front": 15.0, "radar_front": 13.0, "imu": 100.0}
TRUNCATED_SENT = 3

PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Imu, PointCloud2
    from ros_fusion.ros.pointcloud import make_pointcloud2
    from ros_fusion.ros.qos import sensor_qos
    from ros_fusion.ros.stamps import header

    rclpy.init()
    node = rclpy.create_node("fake_sensors")
    clock = node.get_clock()
    rng = np.random.default_rng(0)
    pubs = {
        "lidar": node.create_publisher(PointCloud2, "/sensors/lidar_top/points", sensor_qos()),
        "radar": node.create_publisher(PointCloud2, "/sensors/radar_front/points", sensor_qos()),
        "camera": node.create_publisher(CompressedImage, "/sensors/camera_front/image_raw/compressed", sensor_qos()),
        "imu": node.create_publisher(Imu, "/sensors/imu", sensor_qos()),
    }
    lidar_pts = np.zeros(4000, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for k in ("x", "y", "z"):
        lidar_pts[k] = rng.uniform(-30, 30, len(lidar_pts))
    radar_pts = np.zeros(64, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("rcs", "<f4")])
    radar_pts["x"] = rng.uniform(1, 80, 64)
    import cv2
    # a few different frames in turn: real sensors never repeat a payload (fusion_node flags that as frozen)
    jpegs = [cv2.imencode(".jpg", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))[1].tobytes()
             for _ in range(3)]
    count = {"lidar": 0, "radar": 0, "camera": 0, "imu": 0}
    start = time.monotonic()
    truncated_left = int(sys.argv[1])
    subscribed_at = None

    def now_ns():
        return clock.now().nanoseconds

    def lidar():
        global truncated_left
        count["lidar"] += 1
        lidar_pts["intensity"][0] = count["lidar"]
        msg = make_pointcloud2(now_ns(), "lidar_top", lidar_pts)
        global subscribed_at
        if subscribed_at is None and pubs["lidar"].get_subscription_count() > 0:
            subscribed_at = time.monotonic()  # cut sweeps only once fusion_node listens: its start-up time varies
        if subscribed_at is not None and time.monotonic() - subscribed_at > 2.0 and truncated_left > 0:
            truncated_left -= 1
            msg.data = bytes(msg.data)[: len(msg.data) // 2]  # a cut-off sweep
        pubs["lidar"].publish(msg)

    def radar():
        count["radar"] += 1
        radar_pts["rcs"][0] = count["radar"] % 50  # a plausible dBsm that changes each scan
        pubs["radar"].publish(make_pointcloud2(now_ns(), "radar_front", radar_pts))

    def camera():
        msg = CompressedImage(header=header(now_ns(), "camera_front_optical"), format="jpeg")
        count["camera"] += 1
        msg.data = jpegs[count["camera"] % len(jpegs)]
        pubs["camera"].publish(msg)

    def imu():
        msg = Imu(header=header(now_ns(), "imu_link"))
        count["imu"] += 1
        msg.linear_acceleration.z = 9.81 + 1e-6 * count["imu"]
        pubs["imu"].publish(msg)

    for fn, hz in ((lidar, 10.0), (radar, 13.0), (camera, 15.0), (imu, 100.0)):
        node.create_timer(1.0 / hz, fn)
    print("publishing", flush=True)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        ex.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AMENT_PREFIX_PATH=env.get("AMENT_PREFIX_PATH", sys.prefix),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds.xml"),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    return env


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    return proc.returncode, out


@pytest.fixture
def observer(monkeypatch):
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds.xml"))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    node = rclpy.create_node("live_test_observer", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    yield node, ex
    ex.shutdown()
    node.destroy_node()
    ctx.try_shutdown()


@pytest.mark.live
def test_live_rates_rejects_and_obstacles(observer, tmp_path: Path) -> None:
    node, ex = observer
    diag = DiagnosticsListener(node)
    obstacle_arrivals: list[tuple[float, PointCloud2]] = []
    node.create_subscription(
        PointCloud2, "/fusion_node/obstacles", lambda m: obstacle_arrivals.append((time.monotonic(), m)), output_qos()
    )
    markers: list[MarkerArray] = []
    node.create_subscription(MarkerArray, "/fusion_node/markers", markers.append, output_qos())
    script = tmp_path / "fake_sensors.py"
    script.write_text(PUBLISHER)
    fusion = subprocess.Popen(
        [sys.executable, "-m", "ros_fusion.ros.fusion_node", "--ros-args",
         "-p", "diagnostics_period_s:=0.5", "-p", "rate_window_s:=2.0"],
        env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    sensors = subprocess.Popen(
        [sys.executable, str(script), str(TRUNCATED_SENT)],
        env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # Spin until the truncated clouds were sent (t > 2 s) and the 2 s rate window is refilled after them.
        deadline = time.monotonic() + 20.0
        good: dict | None = None
        t_start = time.monotonic()
        while time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
            assert fusion.poll() is None, f"fusion_node died:\n{_stop(fusion)[1]}"
            assert sensors.poll() is None, f"publisher died:\n{_stop(sensors)[1]}"
            latest = diag.latest
            lidar = latest.get("ros_fusion/lidar_top")
            if (
                time.monotonic() - t_start > 6.0
                and lidar is not None
                and lidar["values"].get("rejected.truncated", 0) >= 1
                and all(
                    (st := latest.get(f"ros_fusion/{s}")) is not None and st["values"]["state"] == "OK"
                    for s in RATES
                )
            ):
                good = latest
                break
        assert good is not None, f"diagnostics never showed all sensors OK after the reject: {diag.latest}"
        obstacles_seen = len(obstacle_arrivals)
        # Keep spinning: the node must still be publishing after the rejects (9 more outputs are 0.9 s
        # at 10 Hz), and long enough that the arrival rate below spans ≥ 3 s after start-up (the node warms
        # up before it publishes, so on a loaded CI machine its first outputs come late). Up to 8 s allowed.
        def enough() -> bool:
            return (
                len(obstacle_arrivals) > obstacles_seen + 8
                and len(obstacle_arrivals) > 10
                and obstacle_arrivals[-1][0] - obstacle_arrivals[10][0] >= 3.0
            )

        t_more = time.monotonic()
        while time.monotonic() - t_more < 8.0 and not enough():
            ex.spin_once(timeout_sec=0.05)
        assert fusion.poll() is None
        assert len(obstacle_arrivals) > obstacles_seen + 8
        # Drop counters are cumulative: two more diagnostics (0.5 s period) cover every output received so far.
        arrays_then = diag.arrays_received
        t_diag = time.monotonic()
        while time.monotonic() - t_diag < 3.0 and diag.arrays_received < arrays_then + 2:
            ex.spin_once(timeout_sec=0.05)
        final_fusion = diag.latest["ros_fusion/fusion"]["values"]
        final_lidar = diag.latest["ros_fusion/lidar_top"]["values"]
    finally:
        rc_sensors, out_sensors = _stop(sensors)
        rc_fusion, out_fusion = _stop(fusion)

    for sensor, rate in RATES.items():
        values = good[f"ros_fusion/{sensor}"]["values"]
        assert values["rate_hz"] == pytest.approx(rate, rel=0.2), (sensor, values)
        assert values["nominal_rate_hz"] == pytest.approx(rate)
        assert values["received"] > 0 and values["age_ms_max"] >= 0.0
        assert good[f"ros_fusion/{sensor}"]["level"] == 0
        assert good[f"ros_fusion/{sensor}"]["message"].startswith("OK ")
    lidar = good["ros_fusion/lidar_top"]
    assert 1 <= lidar["values"]["rejected.truncated"] <= TRUNCATED_SENT
    assert lidar["values"]["rejected"] == lidar["values"]["rejected.truncated"]
    assert lidar["hardware_id"] == "lidar_top"
    # Never published → MISSING at ERROR level.
    odom = good["ros_fusion/odometry"]
    assert odom["values"]["state"] == "MISSING" and odom["level"] == 2
    fusion_values = good["ros_fusion/fusion"]["values"]
    assert fusion_values["bundles"] > 0 and fusion_values["bundles.reference"] > 0
    # one bundle per sweep; a cut (rejected) sweep leaves its watchdog bundle without LiDAR, and so may the first
    n_bundles, cut = fusion_values["bundles"], lidar["values"]["rejected.truncated"]
    assert fusion_values["matched_pct.lidar_top"] >= 100.0 * (n_bundles - cut - 1) / n_bundles
    assert fusion_values["matched_pct.odometry"] == 0.0  # never published: in no bundle
    # All fused sensors fresh: one gated-fusion forward per bundle (docs/DESIGN.md §8), nothing failed or dropped.
    assert fusion_values["mode"] == "intermediate", fusion_values
    assert fusion_values["bundles_fused"] > 0 and fusion_values["bundles_failed"] == 0, out_fusion
    assert fusion_values["latency_ms_p50.total"] > 0.0 and fusion_values["latency_ms_p99.end_to_end"] > 0.0

    # ~/obstacles: clouds with the obstacle layout (the fake sensors show no objects; rows may be few), one per
    # LiDAR sweep. A machine too slow for the 100 ms period drops the oldest waiting bundle, and must count it:
    # every LiDAR period missing from the output stamps is a `bundles_dropped_busy` or a rejected sweep in the
    # last diagnostics (a node that warms up fast outputs ten bundles before the cut sweeps arrive).
    msgs = [m for _, m in obstacle_arrivals]
    assert [f.name for f in msgs[-1].fields] == list(OBSTACLE_FIELDS)
    assert all(m.header.frame_id == "base_link" for m in msgs)
    dropped_busy = final_fusion["bundles_dropped_busy"]
    stamps = np.array([stamp_to_ns(m.header.stamp) for _, m in obstacle_arrivals[10:]], dtype=np.int64)
    periods = np.diff(stamps) / 1e8  # in LiDAR periods (100 ms)
    assert np.all(periods > 0.5), "outputs out of order or duplicated"
    assert np.allclose(periods, np.round(periods), atol=0.25), periods  # each stamp is a sweep's stamp
    missing = int(np.round(periods).sum()) + 1 - len(stamps)
    rejected = final_lidar["rejected"]
    assert 0 <= missing <= dropped_busy + rejected, (missing, dropped_busy, rejected, periods, final_fusion)
    # Arrivals keep pace with the sensor clock (≥ 2.5 s after start-up): the stamps advance at real time; one
    # catch-up burst of a worker that stalled on a loaded machine must not read as a faster rate (CI, once).
    times = np.array([t for t, _ in obstacle_arrivals[10:]])
    assert times[-1] - times[0] >= 2.5, len(obstacle_arrivals)
    assert (stamps[-1] - stamps[0]) / 1e9 / (times[-1] - times[0]) == pytest.approx(1.0, rel=0.2)
    assert (len(times) - 1 + missing) / (times[-1] - times[0]) == pytest.approx(10.0, rel=0.2)

    # ~/markers: a DELETEALL first (then one box/label/arrow set per obstacle), stamped like the obstacles.
    assert len(markers) >= 10
    assert markers[-1].markers[0].action == Marker.DELETEALL
    assert stamp_to_ns(markers[-1].markers[0].header.stamp) in {stamp_to_ns(m.header.stamp) for m in msgs}

    # Both processes shut down cleanly on SIGINT; the reject was logged as one clear line.
    assert rc_fusion == 0, out_fusion
    assert rc_sensors == 0, out_sensors
    assert "/sensors/lidar_top/points: rejected data: truncated" in out_fusion
    assert "Traceback" not in out_fusion
