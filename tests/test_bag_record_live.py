"""`record` captures a live replay (late publisher, latched /rig) into a complete, readable bag.

ROS_DOMAIN_ID 44; the replay runs in a subprocess that starts after the recorder.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_replay_live import ROOT, make_bag  # tests/ is on sys.path (pytest rootdir insertion)

from ros_fusion.bag.reader import BagReader
from ros_fusion.ros.serialization import deserialize

DOMAIN = "44"


def test_record_picks_up_late_publishers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", DOMAIN)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))
    import os

    from ros_fusion.ros.record import record

    src = tmp_path / "src.mcap"
    written = make_bag(src)
    out = tmp_path / "rec.mcap"
    stop = threading.Event()
    result: dict[str, object] = {}

    def run_recorder() -> None:
        result["stats"] = record(out, ["/imu", "/rig", "/never"], duration_s=20, stop=stop, discovery_period_s=0.2)

    th = threading.Thread(target=run_recorder)
    th.start()
    # the publisher appears ~1 s after the recorder started: discovery must find it later. The replayer
    # waits until the recorder subscribed (no race with discovery on a loaded 2-core machine).
    cmd = [
        sys.executable, "-m", "ros_fusion.commands", "replay", str(src), "-q", "--topics", "/imu", "/rig",
        "--wait-subscribers", "15", "--delay", "0.3",
    ]
    proc = subprocess.run(
        ["bash", "-c", 'sleep 1; exec "$@"', "_", *cmd], env=dict(os.environ), cwd=ROOT, capture_output=True,
        text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    stop.set()
    th.join(timeout=10)
    assert not th.is_alive()
    stats = result["stats"]
    assert stats.missing == ["/never"]  # type: ignore[attr-defined]

    r = BagReader(out)
    assert set(r.topics) == {"/imu", "/rig"}
    assert r.topics["/imu"].count == 100 and r.topics["/rig"].count == 1
    assert "transient_local" in r.topics["/rig"].offered_qos
    imu = [deserialize(d, t) for _, t, _, d in r.messages(["/imu"])]
    sent = [deserialize(d, "sensor_msgs/msg/Imu") for _, d in written["/imu"]]
    assert [m.linear_acceleration.z for m in imu] == [m.linear_acceleration.z for m in sent]
    assert [m.header.stamp for m in imu] == [m.header.stamp for m in sent]
    times = [t for _, _, t, _ in r.messages()]
    assert times == sorted(times) and 0.8e9 < times[-1] - times[0] < 3e9
