"""Live replay: a bag replayed by `ros-fusion replay` in a subprocess arrives complete, exact and on time.

Uses ROS_DOMAIN_ID 43 and the package's shared-memory Fast DDS profile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

DOMAIN = "43"
T0 = 1_700_000_000 * 1_000_000_000
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "ROS_DOMAIN_ID": DOMAIN,
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(ROOT / "config" / "fastdds.xml"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ROS_PYTHON_CHECK_FIELDS", raising=False)
    return dict(os.environ)


def make_bag(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """/rig once, /imu at 100 Hz and 200 kB /lidar clouds at 10 Hz for 1 s; returns what was written."""
    from sensor_msgs.msg import Imu, PointCloud2, PointField
    from std_msgs.msg import String

    from ros_fusion.bag.writer import LATCHED_QOS, BagWriter
    from ros_fusion.ros.serialization import serialize
    from ros_fusion.ros.stamps import ns_to_stamp

    written: dict[str, list[tuple[int, bytes]]] = {"/rig": [], "/imu": [], "/lidar": []}
    rng = np.random.default_rng(0)
    with BagWriter(path) as bag:
        bag.add_topic("/rig", "std_msgs/msg/String", LATCHED_QOS)
        bag.add_topic("/imu", "sensor_msgs/msg/Imu")
        bag.add_topic("/lidar", "sensor_msgs/msg/PointCloud2")
        items: list[tuple[int, str, bytes]] = [(T0, "/rig", serialize(String(data="rig: {name: live}")))]
        for i in range(100):
            m = Imu()
            m.header.stamp = ns_to_stamp(T0 + i * 10_000_000)
            m.header.frame_id = "imu_link"
            m.linear_acceleration.z = 9.81 + i
            items.append((T0 + i * 10_000_000 + 2_000_000, "/imu", serialize(m)))
        for i in range(10):
            c = PointCloud2()
            c.header.stamp = ns_to_stamp(T0 + i * 100_000_000)
            c.header.frame_id = "lidar_top"
            c.height, c.width, c.point_step = 1, 12_500, 16
            c.row_step = c.width * 16
            c.fields = [PointField(name=n, offset=4 * k, datatype=7, count=1) for k, n in enumerate("xyzi")]
            c.data = rng.standard_normal(12_500 * 4).astype(np.float32).tobytes()
            items.append((T0 + i * 100_000_000 + 12_000_000, "/lidar", serialize(c)))
        for t, topic, data in sorted(items, key=lambda x: x[0]):
            bag.write(topic, t, data)
            written[topic].append((t, data))
    return written


def test_replay_subprocess_delivers_every_message_with_pacing(tmp_path: Path, ros_env: dict[str, str]) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Imu, PointCloud2
    from std_msgs.msg import String

    from ros_fusion.ros.serialization import deserialize

    bag = tmp_path / "live.mcap"
    written = make_bag(bag)
    rate = 2.0
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("replay_test_sink", context=ctx)
    got: dict[str, list[tuple[int, bytes]]] = {"/rig": [], "/imu": [], "/lidar_remapped": [], "/clock": []}

    def sink(topic: str) -> Callable[[bytes], None]:
        return lambda data: got[topic].append((time.perf_counter_ns(), data))

    qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, "/rig", sink("/rig"), latched, raw=True)
    node.create_subscription(Imu, "/imu", sink("/imu"), qos, raw=True)
    node.create_subscription(PointCloud2, "/lidar_remapped", sink("/lidar_remapped"), qos, raw=True)
    node.create_subscription(Clock, "/clock", sink("/clock"), qos, raw=True)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    cmd = [
        sys.executable, "-m", "ros_fusion.commands", "replay", str(bag), "--rate", str(rate),
        "--remap", "/lidar:=/lidar_remapped", "--clock", "--wait-subscribers", "15",
    ]
    proc = subprocess.Popen(cmd, env=ros_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.005)
            if proc.poll() is not None and len(got["/imu"]) >= 100 and len(got["/lidar_remapped"]) >= 10:
                break
        for _ in range(50):  # drain what is still in flight
            executor.spin_once(timeout_sec=0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate(timeout=10)[0]
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert proc.returncode == 0, out
    assert "lateness p50" in out, out

    # every message, byte-exact, in order (DDS may pad the sample to a multiple of 4 bytes with zeros)
    def same(received: list[tuple[int, bytes]], sent: list[tuple[int, bytes]]) -> bool:
        return len(received) == len(sent) and all(
            r[: len(s)] == s and len(r) - len(s) < 4 and not any(r[len(s) :])
            for (_, r), (_, s) in zip(received, sent, strict=True)
        )

    assert same(got["/rig"], written["/rig"])
    assert same(got["/imu"], written["/imu"])
    assert same(got["/lidar_remapped"], written["/lidar"])
    assert deserialize(got["/imu"][7][1], "sensor_msgs/msg/Imu").linear_acceleration.z == pytest.approx(16.81)

    # pacing: arrival offsets follow log-time offsets / rate
    recv = np.array([r for r, _ in got["/imu"]], dtype=np.int64)
    logt = np.array([t for t, _ in written["/imu"]], dtype=np.int64)
    # Anchored on the median offset, not on the first message: discovery can deliver the first sample a few
    # ms late, which would shift every other error by the same amount (seen under CI load).
    offset_ms = ((recv - recv[0]) - (logt - logt[0]) / rate) / 1e6
    err_ms = offset_ms - np.median(offset_ms)
    assert np.median(np.abs(err_ms)) < 5.0, err_ms
    assert np.percentile(np.abs(err_ms), 95) < 25.0, err_ms
    span_s = (recv[-1] - recv[0]) / 1e9
    assert span_s == pytest.approx(0.99 / rate, abs=0.05)

    # /clock follows the bag's log time, monotonically
    clocks = [deserialize(d, "rosgraph_msgs/msg/Clock").clock for _, d in got["/clock"]]
    ns = np.array([c.sec * 10**9 + c.nanosec for c in clocks])
    assert len(ns) >= 100 and np.all(np.diff(ns) >= 0)
    assert ns[0] >= T0 and ns[-1] == logt[-1]


def test_replay_bag_in_process_start_topics_and_loops(tmp_path: Path, ros_env: dict[str, str]) -> None:
    """start offset skips early messages, the topic filter applies, loops repeat, lateness stats are filled."""
    from ros_fusion.ros.replay import replay_bag

    bag = tmp_path / "live.mcap"
    written = make_bag(bag)
    stats = replay_bag(bag, rate=4.0, start_s=0.5, topics=["/imu", "/rig"], loop=True, max_loops=2)
    n_imu = sum(1 for t, _ in written["/imu"] if t >= T0 + 500_000_000)
    assert stats.per_topic == {"/rig": 1, "/imu": 2 * n_imu}
    assert stats.loops == 2
    assert stats.wall_s == pytest.approx(2 * 0.49 / 4.0, abs=0.15)
    assert 0 <= stats.lateness_p50_ms <= stats.lateness_p99_ms <= stats.lateness_max_ms < 50


def test_stamp_now_shifts_stamps_but_keeps_recorded_latency(tmp_path: Path, ros_env: dict[str, str]) -> None:
    """--stamp-now moves the epoch only: stamp spacing is exact and receive − stamp ≈ the recorded latency."""
    import threading

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Imu

    from ros_fusion.ros.replay import replay_bag
    from ros_fusion.ros.stamps import stamp_to_ns

    bag = tmp_path / "live.mcap"
    written = make_bag(bag)
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("stamp_now_sink", context=ctx)
    got: list[tuple[int, int]] = []
    node.create_subscription(
        Imu, "/imu", lambda m: got.append((time.time_ns(), stamp_to_ns(m.header.stamp))),
        QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE),
    )
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    result = {}
    th = threading.Thread(
        target=lambda: result.update(stats=replay_bag(bag, topics=["/imu"], stamp_now=True, wait_subscribers_s=10))
    )
    th.start()
    try:
        deadline = time.monotonic() + 20
        while (th.is_alive() or len(got) < 100) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.005)
    finally:
        th.join(timeout=10)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert len(got) == len(written["/imu"]) == 100
    stamps = np.array([s for _, s in got], dtype=np.int64)
    recv = np.array([r for r, _ in got], dtype=np.int64)
    orig = np.array([10_000_000 * i for i in range(100)], dtype=np.int64)
    assert np.all(np.abs((stamps - stamps[0]) - orig) <= 1)  # spacing preserved to the ns
    age_ms = (recv - stamps) / 1e6
    assert abs(stamps[0] - time.time_ns()) < 30 * 10**9  # on the wall clock now, not 2023
    assert 2.0 <= np.median(age_ms) < 12.0, age_ms  # recorded latency is 2 ms, plus transport
