"""Read rosbag2 bags (a single ``.mcap`` file or a rosbag2 directory) as raw CDR.

Two back ends behind one class, chosen by what the path is:

* a ``.mcap`` file (ours, `ros2 bag record -s mcap` storage files, Foxglove
  exports): the `mcap` library, reading the summary section for topics and
  counts and the chunk indexes for time-ordered iteration;
* a directory with ``metadata.yaml`` (rosbag2 layout, MCAP or sqlite3 storage,
  split files, file compression): rosbags' rosbag2 `Reader`;
* a directory without ``metadata.yaml`` but with exactly one ``.mcap``: that file.

Everything that can go wrong with an untrusted file (missing, not MCAP,
truncated so the summary is gone, garbage chunks) surfaces as one `BagError`
line naming the path and the problem, never a library traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mcap.exceptions import EndOfFile, McapError
from mcap.reader import make_reader
from rosbags.rosbag2 import Reader as Rosbag2Reader
from rosbags.rosbag2.metadata import dump_qos_v9

from .errors import BagError

MCAP_MAGIC = b"\x89MCAP0\r\n"

#: (topic, msgtype, log_time_ns, raw CDR bytes)
RawMessage = tuple[str, str, int, bytes]


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its type, message count and the offered QoS text stored with it."""

    name: str
    msgtype: str
    count: int
    serialization_format: str = "cdr"
    offered_qos: str = ""


class BagReader:
    """Metadata of a bag, read eagerly, plus a time-ordered raw message iterator.

    `topics` maps name → `TopicInfo`; `start_ns`/`end_ns` are the first/last log
    times (0/0 for an empty bag); `metadata` is rosbag2 ``custom_data``.
    """

    path: Path
    storage: str  # "mcap-file" | "rosbag2"
    topics: dict[str, TopicInfo]
    start_ns: int
    end_ns: int
    message_count: int
    metadata: dict[str, str]
    size_bytes: int

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.topics = {}
        self.metadata = {}
        self.start_ns = self.end_ns = self.message_count = 0
        self._mcap_file: Path | None = None
        self.storage = ""
        self.size_bytes = 0
        p = self.path
        if not p.exists():
            raise BagError(f"{p}: no such bag (expected a .mcap file or a rosbag2 directory)")
        if p.is_dir():
            if (p / "metadata.yaml").is_file():
                self.storage = "rosbag2"
                self._open_rosbag2()
                self.size_bytes = sum(f.stat().st_size for f in p.iterdir() if f.is_file())
                return
            mcaps = sorted(p.glob("*.mcap"))
            if len(mcaps) != 1:
                raise BagError(
                    f"{p}: not a bag directory (no metadata.yaml and {len(mcaps)} .mcap files; expected exactly one)"
                )
            p = mcaps[0]
        self.storage = "mcap-file"
        self._mcap_file = p
        self.size_bytes = p.stat().st_size
        self._open_mcap(p)

    # -- context manager for symmetry with BagWriter (nothing is held open) ---------
    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    # -- MCAP file -------------------------------------------------------------------
    def _open_mcap(self, p: Path) -> None:
        try:
            with p.open("rb") as f:
                magic = f.read(len(MCAP_MAGIC))
                if magic != MCAP_MAGIC:
                    raise BagError(f"{p}: not an MCAP file (bad magic bytes {magic[:8]!r})")
                f.seek(0)
                reader = make_reader(f)
                header = reader.get_header()
                if header.profile != "ros2":
                    raise BagError(f"{p}: MCAP profile is {header.profile!r}, expected 'ros2' (not a ROS 2 bag)")
                summary = reader.get_summary()
                if summary is None or summary.statistics is None:
                    raise BagError(
                        f"{p}: truncated or unfinished MCAP (no summary section); "
                        "the recording was probably interrupted - try 'mcap recover'"
                    )
                stats = summary.statistics
                for cid, ch in sorted(summary.channels.items()):
                    schema = summary.schemas.get(ch.schema_id)
                    if schema is None:
                        raise BagError(f"{p}: channel {ch.topic} refers to missing schema {ch.schema_id}")
                    prev = self.topics.get(ch.topic)
                    count = stats.channel_message_counts.get(cid, 0) + (prev.count if prev else 0)
                    if prev and prev.msgtype != schema.name:
                        raise BagError(f"{p}: topic {ch.topic} has two types ({prev.msgtype}, {schema.name})")
                    self.topics[ch.topic] = TopicInfo(
                        ch.topic, schema.name, count, ch.message_encoding, ch.metadata.get("offered_qos_profiles", "")
                    )
                self.message_count = stats.message_count
                if stats.message_count:
                    self.start_ns, self.end_ns = stats.message_start_time, stats.message_end_time
                for rec in reader.iter_metadata():
                    if rec.name == "rosbag2":
                        self.metadata = _custom_data(rec.metadata.get("serialized_metadata", ""))
        except BagError:
            raise
        except EndOfFile:
            raise BagError(
                f"{p}: truncated MCAP (file ends early at {p.stat().st_size} bytes); "
                "the recording was probably interrupted - try 'mcap recover'"
            ) from None
        except (McapError, OSError, ValueError, KeyError, IndexError, EOFError) as e:
            raise BagError(f"{p}: corrupt or truncated MCAP: {type(e).__name__}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the mcap parser raises struct/unicode errors on garbage
            raise BagError(f"{p}: unreadable MCAP: {type(e).__name__}: {e}") from None

    def _iter_mcap(self, topics: list[str] | None, start_ns: int | None, end_ns: int | None) -> Iterator[RawMessage]:
        assert self._mcap_file is not None
        n = 0
        try:
            with self._mcap_file.open("rb") as f:
                reader = make_reader(f)
                for schema, channel, msg in reader.iter_messages(
                    topics=topics, starting_at=start_ns, ending_before=end_ns, log_time_order=True
                ):
                    n += 1
                    yield channel.topic, schema.name if schema else "", msg.log_time, msg.data
        except Exception as e:  # noqa: BLE001 - any parser failure mid-file becomes one BagError
            raise BagError(f"{self._mcap_file}: corrupt data after {n} messages: {type(e).__name__}: {e}") from None

    # -- rosbag2 directory -----------------------------------------------------------
    def _open_rosbag2(self) -> None:
        try:
            with Rosbag2Reader(self.path) as r:
                for c in r.connections:
                    prev = self.topics.get(c.topic)
                    qos = getattr(c.ext, "offered_qos_profiles", "")
                    self.topics[c.topic] = TopicInfo(
                        c.topic,
                        c.msgtype,
                        c.msgcount + (prev.count if prev else 0),
                        getattr(c.ext, "serialization_format", "cdr"),
                        qos if isinstance(qos, str) else _qos_text(qos),
                    )
                self.message_count = r.message_count
                if r.message_count:
                    self.start_ns, self.end_ns = r.start_time, r.end_time - 1  # rosbags end is exclusive
                custom = getattr(getattr(r.storage, "metadata", None), "custom", None) or {}
                self.metadata = {str(k): str(v) for k, v in custom.items()}
        except Exception as e:  # noqa: BLE001 - rosbags raises ReaderError and storage-specific errors
            raise BagError(f"{self.path}: unreadable rosbag2 bag: {type(e).__name__}: {e}") from None

    def _iter_rosbag2(
        self, topics: list[str] | None, start_ns: int | None, end_ns: int | None
    ) -> Iterator[RawMessage]:
        n = 0
        try:
            with Rosbag2Reader(self.path) as r:
                conns = [c for c in r.connections if topics is None or c.topic in topics]
                if not conns:
                    return
                for conn, t, raw in r.messages(connections=conns, start=start_ns, stop=end_ns):
                    n += 1
                    yield conn.topic, conn.msgtype, t, bytes(raw)
        except Exception as e:  # noqa: BLE001 - see _open_rosbag2
            raise BagError(f"{self.path}: corrupt data after {n} messages: {type(e).__name__}: {e}") from None

    # -- public ----------------------------------------------------------------------
    def messages(
        self, topics: Iterable[str] | None = None, start_ns: int | None = None, end_ns: int | None = None
    ) -> Iterator[RawMessage]:
        """Yield ``(topic, msgtype, log_time_ns, cdr_bytes)`` in log-time order.

        `topics` filters (unknown names are simply absent); the window is
        ``start_ns <= log_time < end_ns`` (either bound optional).
        """
        wanted = None if topics is None else [t for t in topics if t in self.topics]
        if wanted is not None and not wanted:
            return iter(())
        if self.storage == "rosbag2":
            return self._iter_rosbag2(wanted, start_ns, end_ns)
        return self._iter_mcap(wanted, start_ns, end_ns)


def _qos_text(profiles: Any) -> str:
    """rosbags' parsed QoS list back to the YAML text an MCAP channel stores."""
    try:
        return yaml.safe_dump(dump_qos_v9(list(profiles)), sort_keys=True).strip()
    except Exception:  # noqa: BLE001 - cosmetic only; an odd QoS record must not make a bag unreadable
        return ""


def _custom_data(serialized: str) -> dict[str, str]:
    """custom_data out of the rosbag2 metadata YAML embedded in an MCAP file."""
    try:
        doc: Any = yaml.safe_load(serialized) if serialized else None
    except yaml.YAMLError:
        return {}
    if isinstance(doc, dict) and "rosbag2_bagfile_information" in doc:
        doc = doc["rosbag2_bagfile_information"]
    custom = doc.get("custom_data") if isinstance(doc, dict) else None
    if not isinstance(custom, dict):
        return {}
    return {str(k): str(v) for k, v in custom.items()}
