"""Write rosbag2 bags with MCAP storage, byte-for-byte reproducibly.

Layout (the `-o out.mcap` decision):

* a path ending in ``.mcap`` gives **one self-contained MCAP file**. rosbags
  writes a rosbag2 directory ``<tmp>/out/out.mcap`` + ``metadata.yaml``; we move
  only the ``.mcap`` into place. The file already embeds the full rosbag2
  metadata (a ``rosbag2`` metadata record whose ``relative_file_paths`` is
  ``[out.mcap]``, matching the final name), the ros2msg schemas and the
  ``ros2`` profile, so it reads with ``mcap``/``mcap-ros2-support``, with
  `BagReader`, and with ``ros2 bag info/play out.mcap`` (rosbag2 opens a single
  storage file without ``metadata.yaml``).
* any other path gives a classic **rosbag2 directory** ``out/`` holding
  ``out.mcap`` and ``metadata.yaml`` (``ros2 bag play out/``, rosbags).

Reproducibility (with ``canonical=True``): the bytes depend only on the messages, topics, types, QoS,
custom metadata, the rosbags version and the *file name* (rosbag2 stores it in
its metadata). Nothing reads the wall clock, a random id, the pid or the
directory: the temporary directory is private and never recorded, schemas and
channels are numbered in the order `add_topic` is called, and message
definitions come from a fixed rosbags typestore (Kilted), not from whatever
happens to be installed, and CDR padding bytes, which rclpy leaves
uninitialised, are zeroed (`canonical_cdr`). Two runs with the same inputs and the same output
file name therefore produce identical files (tested).

The file is assembled in a hidden temporary directory next to the target and
moved into place on a clean exit, so an interrupted write never leaves a
half-written bag under the requested name.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from .errors import BagError

#: Message definitions are taken from this store so bags do not depend on the host.
TYPESTORE_NAME = Stores.ROS2_KILTED
ROSBAG2_VERSION = 9

_TOPIC_RE = re.compile(r"^/[A-Za-z0-9_~{}/]*[A-Za-z0-9_}]$|^/[A-Za-z0-9_]$")
_ZERO = QosTime(0, 0)


def make_qos(*, reliable: bool = True, depth: int = 10, transient_local: bool = False) -> Qos:
    """The offered-QoS record stored per topic (what `ros2 bag play` republishes with)."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=_ZERO,
        lifespan=_ZERO,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_ZERO,
        avoid_ros_namespace_conventions=False,
    )


DEFAULT_QOS = make_qos()
LATCHED_QOS = make_qos(depth=1, transient_local=True)

_STORE: Typestore | None = None


def typestore() -> Typestore:
    """The shared rosbags typestore (Kilted definitions), created once."""
    global _STORE
    if _STORE is None:
        _STORE = get_typestore(TYPESTORE_NAME)
    return _STORE


def _register_from_share(store: Typestore, msgtype: str) -> bool:
    """Teach the store a type it lacks from ``share/<pkg>/msg/<Name>.msg`` on AMENT_PREFIX_PATH."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return False
    pkg, _, name = parts
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        f = Path(prefix) / "share" / pkg / "msg" / f"{name}.msg"
        if f.is_file():
            try:
                store.register(get_types_from_msg(f.read_text(), msgtype))
            except Exception:  # noqa: BLE001 - rosbags raises several parser errors; we report one
                return False
            return msgtype in store.fielddefs
    return False


def canonical_cdr(data: bytes | memoryview, msgtype: str) -> bytes:
    """The same message with every CDR alignment-padding byte zeroed.

    rclpy's serializer (Fast CDR) leaves padding bytes uninitialised, so two
    serialisations of equal messages differ in a few bytes (measured: the
    padding after ``header.frame_id`` in Imu, PointCloud2, Image...). A
    round trip through rosbags' serializer, which writes zeros, makes the bytes
    a function of the message alone. Same length, same values; ~0.5 ms per
    message. Types the store does not know, or bytes it cannot parse, are
    returned unchanged.
    """
    store = typestore()
    if msgtype not in store.fielddefs:
        return bytes(data)
    try:
        out = bytes(store.serialize_cdr(store.deserialize_cdr(bytes(data), msgtype), msgtype))
    except Exception:  # noqa: BLE001 - canonicalisation is best effort; the original bytes are valid CDR
        return bytes(data)
    return out if len(out) == len(data) else bytes(data)


def is_single_file(path: str | Path) -> bool:
    """True when `path` names one MCAP file rather than a rosbag2 directory."""
    return Path(path).suffix.lower() == ".mcap"


class BagWriter:
    """Context manager writing pre-serialized CDR messages into an MCAP bag.

    >>> with BagWriter("drive.mcap") as bag:           # doctest: +SKIP
    ...     bag.add_topic("/rig", "std_msgs/msg/String", qos=LATCHED_QOS)
    ...     bag.write("/rig", 1_700_000_000_000_000_000, cdr_bytes)

    With `canonical=True` every message's CDR padding is zeroed (`canonical_cdr`),
    so equal messages give equal bytes even when the serializer leaves padding
    uninitialised - needed for reproducible simulated bags; recordings keep
    the bytes exactly as received (default).

    Messages should be written in log-time order (readers sort anyway, but the
    chunk index is tighter). `set_metadata` stores string key/values in the
    rosbag2 ``custom_data`` (visible in ``ros2 bag info`` and `BagReader.metadata`).
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, canonical: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.canonical = canonical
        self._writer: Writer | None = None
        self._tmp: Path | None = None
        self._connections: dict[str, Connection] = {}
        self._custom: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> BagWriter:
        if self._writer is not None:
            raise BagError(f"{self.path}: bag already open")
        if self.path.exists() or self.path.is_symlink():
            if not self.overwrite:
                raise BagError(f"{self.path}: already exists (use overwrite / --force to replace it)")
        parent = self.path.parent
        if not parent.is_dir():
            raise BagError(f"{self.path}: directory {parent} does not exist")
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent))
        except OSError as e:
            raise BagError(f"{self.path}: cannot create a temporary directory in {parent}: {e.strerror}") from None
        name = self.path.stem if is_single_file(self.path) else self.path.name
        self._writer = Writer(self._tmp / name, version=ROSBAG2_VERSION, storage_plugin=StoragePlugin.MCAP)
        try:
            self._writer.open()
        except (WriterError, OSError) as e:
            self._cleanup()
            raise BagError(f"{self.path}: cannot open for writing: {e}") from None
        return self

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def close(self) -> Path:
        """Finish the bag and move it to `path`; returns the path written."""
        w = self._require()
        for key in sorted(self._custom):
            w.set_custom_data(key, self._custom[key])
        try:
            w.close()
        except (WriterError, OSError) as e:
            self.abort()
            raise BagError(f"{self.path}: cannot finish bag: {e}") from None
        self._writer = None
        assert self._tmp is not None
        bag_dir = self._tmp / (self.path.stem if is_single_file(self.path) else self.path.name)
        try:
            self._remove_existing()
            if is_single_file(self.path):
                os.replace(bag_dir / f"{self.path.stem}.mcap", self.path)
            else:
                os.replace(bag_dir, self.path)
        except OSError as e:
            raise BagError(f"{self.path}: cannot move finished bag into place: {e}") from None
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target path is left untouched."""
        if self._writer is not None:
            try:
                self._writer.abort()
            except Exception:  # noqa: BLE001 - already failing; the temp dir is removed below
                pass
            self._writer = None
        self._cleanup()

    # -- content -------------------------------------------------------------------
    def add_topic(
        self,
        topic: str,
        msgtype: str,
        qos: Qos | None = None,
        *,
        msgdef: str | None = None,
        rihs01: str | None = None,
    ) -> None:
        """Declare a topic before writing to it. One type per topic.

        The message definition comes from the Kilted typestore (or ``share/``
        .msg files for types it lacks), unless `msgdef` + `rihs01` are given.
        """
        w = self._require()
        if not isinstance(topic, str) or not _TOPIC_RE.match(topic) or "//" in topic:
            raise BagError(f"{self.path}: invalid topic name {topic!r} (must be absolute, e.g. /sensors/imu)")
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise BagError(
                    f"{self.path}: topic {topic} already has type {self._connections[topic].msgtype}, not {msgtype}"
                )
            return
        kwargs: dict[str, Any] = {"offered_qos_profiles": [qos or DEFAULT_QOS]}
        if msgdef is not None and rihs01 is not None:
            kwargs.update(msgdef=msgdef, rihs01=rihs01)
        else:
            store = typestore()
            if msgtype not in store.fielddefs and not _register_from_share(store, msgtype):
                raise BagError(
                    f"{self.path}: unknown message type {msgtype!r} for {topic} "
                    "(not in the Kilted typestore and no share/<pkg>/msg/<Name>.msg on AMENT_PREFIX_PATH)"
                )
            kwargs["typestore"] = store
        try:
            self._connections[topic] = w.add_connection(topic, msgtype, **kwargs)
        except WriterError as e:
            raise BagError(f"{self.path}: cannot add topic {topic}: {e}") from None
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def write(self, topic: str, log_time_ns: int, data: bytes | memoryview) -> None:
        """Append one serialized (CDR) message logged at `log_time_ns` (int ns since epoch)."""
        w = self._require()
        conn = self._connections.get(topic)
        if conn is None:
            raise BagError(f"{self.path}: write to undeclared topic {topic} (call add_topic first)")
        if isinstance(log_time_ns, bool) or not isinstance(log_time_ns, int) or not 0 <= log_time_ns < 2**63:
            raise BagError(f"{self.path}: log time for {topic} must be an int ns in [0, 2^63), got {log_time_ns!r}")
        if self.canonical:
            data = canonical_cdr(data, conn.msgtype)
        w.write(conn, int(log_time_ns), data)
        self.counts[topic] += 1

    def set_metadata(self, key: str, value: Any) -> None:
        """Store ``key: str(value)`` in the bag's rosbag2 custom_data."""
        if not isinstance(key, str) or not key:
            raise BagError(f"{self.path}: metadata key must be a non-empty string, got {key!r}")
        self._custom[key] = value if isinstance(value, str) else str(value)

    def update_metadata(self, items: Mapping[str, Any]) -> None:
        for k, v in items.items():
            self.set_metadata(k, v)

    # -- internals -----------------------------------------------------------------
    def _require(self) -> Writer:
        if self._writer is None:
            raise BagError(f"{self.path}: bag is not open (use 'with BagWriter(...) as bag')")
        return self._writer

    def _remove_existing(self) -> None:
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if self.path.is_dir() and not self.path.is_symlink():
            if not (self.path / "metadata.yaml").is_file():
                raise BagError(f"{self.path}: refusing to replace a directory that is not a rosbag2 bag")
            shutil.rmtree(self.path)
        else:
            self.path.unlink()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
