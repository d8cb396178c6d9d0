"""BagWriter -> BagReader round trips, determinism, and independent readers (mcap, rosbags)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages
from rosbags.rosbag2 import Reader as RosbagsReader
from sensor_msgs.msg import Imu, PointCloud2, PointField
from std_msgs.msg import String

from ros_fusion.bag.errors import BagError
from ros_fusion.bag.info import bag_summary, header_stamp_ns
from ros_fusion.bag.reader import BagReader
from ros_fusion.bag.writer import LATCHED_QOS, BagWriter, canonical_cdr
from ros_fusion.core.types import RejectedInput
from ros_fusion.ros.serialization import deserialize, message_class, msgtype_of, serialize
from ros_fusion.ros.stamps import ns_to_stamp

T0 = 1_700_000_000 * 1_000_000_000


def _cloud(i: int) -> PointCloud2:
    pts = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    pts["x"] = np.arange(4) + i
    pts["intensity"] = 7.0
    m = PointCloud2()
    m.header.stamp = ns_to_stamp(T0 + i * 100_000_000)
    m.header.frame_id = "lidar_top"
    m.height, m.width = 1, 4
    m.fields = [PointField(name=n, offset=4 * k, datatype=PointField.FLOAT32, count=1) for k, n in enumerate("xyz")]
    m.fields.append(PointField(name="intensity", offset=12, datatype=PointField.FLOAT32, count=1))
    m.point_step, m.row_step, m.is_dense = 16, 64, True
    m.data = pts.tobytes()
    return m


def _imu(i: int) -> Imu:
    m = Imu()
    m.header.stamp = ns_to_stamp(T0 + i * 10_000_000)
    m.header.frame_id = "imu_link"
    m.angular_velocity.z = 0.01 * i
    return m


def _messages() -> list[tuple[str, int, object]]:
    """(topic, log time, msg): IMU at 100 Hz and clouds at 10 Hz for 1 s, interleaved out of order."""
    out: list[tuple[str, int, object]] = [("/rig", T0, String(data="rig: {name: test}"))]
    out += [("/imu", T0 + i * 10_000_000 + 2_000_000, _imu(i)) for i in range(100)]
    out += [("/lidar", T0 + i * 100_000_000 + 12_000_000, _cloud(i)) for i in range(10)]
    return out


def _write(
    path: Path, msgs: list[tuple[str, int, object]], *, canonical: bool = False, **meta: str
) -> dict[tuple[str, int], bytes]:
    written: dict[tuple[str, int], bytes] = {}
    with BagWriter(path, canonical=canonical) as bag:
        for k, v in meta.items():
            bag.set_metadata(k, v)
        for topic, t, msg in msgs:
            bag.add_topic(topic, msgtype_of(msg), LATCHED_QOS if topic == "/rig" else None)
            data = serialize(msg)
            bag.write(topic, t, data)
            written[(topic, t)] = canonical_cdr(data, msgtype_of(msg)) if canonical else data
    return written


@pytest.mark.parametrize("name", ["drive.mcap", "drive_dir"])
def test_round_trip_bytes_equal_and_time_ordered(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    written = _write(path, _messages(), scenario="unit", seed="3")
    r = BagReader(path)
    assert r.storage == ("mcap-file" if name.endswith(".mcap") else "rosbag2")
    assert {t: i.count for t, i in r.topics.items()} == {"/rig": 1, "/imu": 100, "/lidar": 10}
    assert r.topics["/lidar"].msgtype == "sensor_msgs/msg/PointCloud2"
    assert r.metadata == {"scenario": "unit", "seed": "3"}
    got = list(r.messages())
    times = [t for _, _, t, _ in got]
    assert times == sorted(times)
    assert {(topic, t): data for topic, _, t, data in got} == written
    assert r.start_ns == T0 and r.end_ns == max(t for _, t in written)
    # filtering by topic and window [start, end)
    window = list(r.messages(["/lidar"], start_ns=T0 + 112_000_000, end_ns=T0 + 312_000_000))
    assert [t for _, _, t, _ in window] == [T0 + 112_000_000, T0 + 212_000_000]
    assert list(r.messages(["/nope"])) == []


def test_same_inputs_identical_bytes_in_different_directories(tmp_path: Path) -> None:
    digests = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        _write(tmp_path / sub / "x.mcap", _messages(), canonical=True, seed="1")
        digests.append(hashlib.sha256((tmp_path / sub / "x.mcap").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    # and the content matters: one changed byte of payload changes the file
    msgs = _messages()
    msgs[5] = ("/imu", msgs[5][1], _imu(99))
    (tmp_path / "c").mkdir()
    _write(tmp_path / "c" / "x.mcap", msgs, canonical=True, seed="1")
    assert hashlib.sha256((tmp_path / "c" / "x.mcap").read_bytes()).hexdigest() != digests[0]


def test_single_file_readable_by_mcap_ros2_and_rosbags(tmp_path: Path) -> None:
    path = tmp_path / "drive.mcap"
    _write(path, _messages())
    clouds = [m.ros_msg for m in read_ros2_messages(str(path), topics=["/lidar"])]
    assert len(clouds) == 10
    c = clouds[3]
    assert [f.name for f in c.fields] == ["x", "y", "z", "intensity"]
    pts = np.frombuffer(bytes(c.data), dtype=np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(pts[:, 0], np.arange(4) + 3)
    assert c.header.frame_id == "lidar_top"
    with RosbagsReader(path) as rb:
        assert {c.topic: c.msgcount for c in rb.connections} == {"/rig": 1, "/imu": 100, "/lidar": 10}
    assert not list(tmp_path.glob(".drive.mcap.*")), "temporary directory left behind"


def test_writer_refuses_existing_and_undeclared(tmp_path: Path) -> None:
    path = tmp_path / "x.mcap"
    _write(path, _messages()[:3])
    with pytest.raises(BagError, match="already exists"):
        BagWriter(path).open()
    with BagWriter(path, overwrite=True) as bag:
        with pytest.raises(BagError, match="undeclared topic"):
            bag.write("/imu", T0, b"\0\1\0\0")
        with pytest.raises(BagError, match="invalid topic"):
            bag.add_topic("relative", "std_msgs/msg/String")
        with pytest.raises(BagError, match="unknown message type"):
            bag.add_topic("/x", "nope_msgs/msg/Nope")
        bag.add_topic("/s", "std_msgs/msg/String")
        with pytest.raises(BagError, match="log time"):
            bag.write("/s", -1, serialize(String()))
        bag.write("/s", T0, serialize(String(data="new")))
    assert [d for *_, d in BagReader(path).messages()] == [serialize(String(data="new"))]


def test_aborted_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.mcap"
    with pytest.raises(RuntimeError):
        with BagWriter(path) as bag:
            bag.add_topic("/s", "std_msgs/msg/String")
            bag.write("/s", T0, serialize(String(data="a")))
            raise RuntimeError("simulated failure")
    assert list(tmp_path.iterdir()) == []


def test_canonical_cdr_zeroes_padding_only() -> None:
    msgs = [_imu(i) for i in range(20)] + [_cloud(i) for i in range(5)]
    for m in msgs:
        raw = serialize(m)
        canon = canonical_cdr(raw, msgtype_of(m))
        assert len(canon) == len(raw)
        diff = [i for i in range(len(raw)) if raw[i] != canon[i]]
        assert all(canon[i] == 0 for i in diff)  # only padding changed, to zero
        again = deserialize(canon, msgtype_of(m))
        assert again.header.stamp == m.header.stamp and bytes(getattr(again, "data", b"")) == bytes(
            getattr(m, "data", b"")
        )
    assert canonical_cdr(b"\0\1\0\0garbage", "std_msgs/msg/Header") == b"\0\1\0\0garbage"


def test_serialization_helpers() -> None:
    m = _cloud(2)
    assert msgtype_of(m) == "sensor_msgs/msg/PointCloud2"
    assert message_class("sensor_msgs/PointCloud2") is PointCloud2
    back = deserialize(serialize(m), "sensor_msgs/msg/PointCloud2")
    assert bytes(back.data) == bytes(m.data) and back.header.frame_id == "lidar_top"
    with pytest.raises(RejectedInput, match="deserialize") as e:
        deserialize(serialize(m)[:20], "sensor_msgs/msg/PointCloud2")
    assert e.value.reason == "deserialize"
    with pytest.raises(RejectedInput, match="pip install ros-foo-msgs"):
        message_class("foo_msgs/msg/Bar")
    with pytest.raises(RejectedInput, match="not a ROS 2 type name"):
        message_class("../etc/passwd")


def test_info_counts_rates_and_stamps(tmp_path: Path) -> None:
    path = tmp_path / "drive.mcap"
    _write(path, _messages(), scenario="unit")
    s = bag_summary(path)
    imu, lidar, rig = s.topic("/imu"), s.topic("/lidar"), s.topic("/rig")
    assert (imu.count, lidar.count, rig.count) == (100, 10, 1)
    assert imu.rate_hz == pytest.approx(100.0) and imu.stamp_rate_hz == pytest.approx(100.0)
    assert lidar.rate_hz == pytest.approx(10.0) and lidar.stamp_rate_hz == pytest.approx(10.0)
    assert lidar.first_stamp_ns == T0 and lidar.first_ns == T0 + 12_000_000
    assert rig.stamp_rate_hz is None
    assert imu.max_gap_s == pytest.approx(0.01)
    assert s.duration_s == pytest.approx(0.992)  # /rig at T0 .. last IMU at T0 + 0.99 s + 2 ms latency
    assert s.metadata["scenario"] == "unit"
    assert header_stamp_ns(serialize(_imu(5))) == T0 + 50_000_000
    fast = bag_summary(path, stamps=False)
    assert fast.topic("/imu").count == 100 and fast.topic("/imu").stamp_rate_hz is None
