"""Missing, truncated, garbage and corrupt bags give one BagError line, and the CLI exits 2."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest
from std_msgs.msg import String

from ros_fusion.bag.errors import BagError
from ros_fusion.bag.reader import BagReader
from ros_fusion.bag.writer import BagWriter
from ros_fusion.commands import info as info_cmd
from ros_fusion.commands import record as record_cmd
from ros_fusion.commands import replay as replay_cmd
from ros_fusion.ros.serialization import serialize

T0 = 1_700_000_000 * 1_000_000_000


@pytest.fixture()
def good_bag(tmp_path: Path) -> Path:
    path = tmp_path / "good.mcap"
    with BagWriter(path) as bag:
        bag.add_topic("/s", "std_msgs/msg/String")
        for i in range(2000):  # > 1 MiB so the file has several chunks
            bag.write("/s", T0 + i * 1_000_000, serialize(String(data=f"{i:04d}" + "x" * 600)))
    return path


def test_missing_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such bag"):
        BagReader(tmp_path / "nope.mcap")


def test_garbage_bytes(tmp_path: Path) -> None:
    p = tmp_path / "garbage.mcap"
    p.write_bytes(b"this is not a bag at all" * 100)
    with pytest.raises(BagError, match="not an MCAP file"):
        BagReader(p)


def test_magic_then_garbage(tmp_path: Path) -> None:
    p = tmp_path / "evil.mcap"
    p.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 20)
    with pytest.raises(BagError) as e:
        BagReader(p)
    assert str(e.value).startswith(str(p))


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file(good_bag: Path, keep: float) -> None:
    data = good_bag.read_bytes()
    cut = good_bag.with_name("cut.mcap")
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(BagError, match="truncated|corrupt"):
        BagReader(cut)


def test_corrupt_chunk_detected_while_iterating(good_bag: Path) -> None:
    data = bytearray(good_bag.read_bytes())
    r = BagReader(good_bag)
    assert r.topics["/s"].count == 2000
    # overwrite the middle of the first chunk's payload; the summary at the end stays intact
    data[5000:9000] = b"\xff" * 4000  # spans several message records, headers included
    bad = good_bag.with_name("bad.mcap")
    bad.write_bytes(bytes(data))
    reader = BagReader(bad)
    with pytest.raises(BagError, match="corrupt data after"):
        for _ in reader.messages():
            pass


def test_directory_without_metadata(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(BagError, match="not a bag directory"):
        BagReader(tmp_path / "d")


def test_broken_rosbag2_metadata(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9, storage_identifier: mcap}\n")
    with pytest.raises(BagError, match="unreadable rosbag2"):
        BagReader(d)


def _run(module: ModuleType, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ros-fusion")
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, good_bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "g.mcap"
    garbage.write_bytes(b"nope")
    cases = [
        (info_cmd, ["info", str(tmp_path / "missing.mcap")], "no such bag"),
        (info_cmd, ["info", str(garbage)], "not an MCAP file"),
        (replay_cmd, ["replay", str(tmp_path / "missing.mcap")], "no such bag"),
        (replay_cmd, ["replay", str(good_bag), "--rate", "0"], "--rate"),
        (replay_cmd, ["replay", str(good_bag), "--remap", "nocolon"], ":="),
        (replay_cmd, ["replay", str(good_bag), "--topics", "/absent"], "not in bag"),
        (record_cmd, ["record", "-o", str(good_bag)], "already exists"),
        (record_cmd, ["record", "-o", str(tmp_path / "no" / "dir.mcap")], "does not exist"),
        (record_cmd, ["record", "-o", str(tmp_path / "r.mcap"), "relative"], "absolute"),
    ]
    for module, argv, expect in cases:
        assert _run(module, argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith(f"ros-fusion {argv[0]}: error:") and expect in err, err


def test_info_json(good_bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert _run(info_cmd, ["info", str(good_bag), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["topics"][0]["topic"] == "/s" and doc["topics"][0]["count"] == 2000
    assert doc["topics"][0]["rate_hz"] == pytest.approx(1000.0)
    assert doc["message_count"] == 2000
