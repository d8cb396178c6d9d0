"""Timing diagnosis of a recording: what `ros-fusion info BAG --sync` prints.

Why: the first thing to check on a new rig is whether its clocks and rates
are sane and what the synchroniser will make of them — before blaming the
network for bad detections. Per sensor: rate and jitter from header stamps,
gaps, stamp-vs-receive offset (log time − header.stamp: latency plus any clock
offset), stamps going backwards or repeating, frozen data (identical payloads
in a row), and then the `core.sync.Synchroniser` replayed over the bag with log
times as its clock: bundles, matched % and ages per sensor, added wait.

No ROS needed: stamps are read from the CDR header in place (`bag.info`), the
payload fingerprint is a CRC32 of all bytes after the
header (stamp excluded, so a frozen driver with fresh stamps is caught).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bag.info import has_header, header_stamp_ns
from ..bag.reader import BagReader
from ..core.rig import ConfigError, Rig, rig_from_yaml
from ..core.sync import BundleStats, StreamConfig, Synchroniser, default_reference, stream_configs_from_rig
from .sync_study import Event, run_sync

RIG_TOPIC = "/rig"
META_RIG = "rig_yaml"
NS = 1_000_000_000
#: A stamp interval longer than this many nominal periods is a gap.
GAP_FACTOR = 1.5
#: Identical payloads in a row (after the first) that count as frozen — `core.health`'s default.
FROZEN_REPEATS = 3


def payload_digest(cdr: bytes) -> bytes | None:
    """Fingerprint of a CDR message whose first field is a Header, without the header; None if too short."""
    if len(cdr) < 16:
        return None
    endian = "<" if cdr[1] & 1 else ">"
    (n_frame,) = struct.unpack_from(endian + "I", cdr, 12)
    body = memoryview(cdr)[16 + n_frame:]
    n = len(body)
    if n == 0:
        return None
    return struct.pack("<QI", n, zlib.crc32(body))


@dataclass
class SensorTiming:
    """Timing of one sensor's stream in a bag (times in ms unless named _s)."""

    sensor: str
    topic: str
    count: int
    nominal_rate_hz: float | None
    rate_hz: float
    jitter_ms: float  # std of header-stamp intervals (gaps excluded)
    recv_jitter_ms: float  # std of log-time intervals (gaps excluded): what the transport adds
    gaps: int
    max_gap_s: float
    gap_windows_s: list[tuple[float, float]] = field(default_factory=list)  # first few, bag-relative
    offset_ms_p50: float = 0.0  # log time − header.stamp
    offset_ms_p95: float = 0.0
    offset_ms_min: float = 0.0
    offset_ms_max: float = 0.0
    stamps_backwards: int = 0
    stamps_duplicate: int = 0
    frozen_messages: int = 0
    frozen_windows_s: list[tuple[float, float]] = field(default_factory=list)
    matched_pct: float = 0.0
    age_ms_p50: float | None = None
    age_ms_max: float | None = None
    sync_rejected: dict[str, int] = field(default_factory=dict)


@dataclass
class TimingReport:
    path: str
    reference: str
    rig_from: str  # "bag" (recorded /rig or metadata), "file" or "inferred"
    duration_s: float
    sensors: list[SensorTiming]
    bundles: int
    bundles_reference: int
    bundles_watchdog: int
    wait_ms_p50: float
    wait_ms_p99: float
    wait_ms_max: float
    sync_resets: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rig_of_bag(reader: BagReader) -> Rig | None:
    text: str | None = None
    if RIG_TOPIC in reader.topics:
        from ..bag.writer import typestore

        for _, msgtype, _, data in reader.messages([RIG_TOPIC]):
            try:
                text = typestore().deserialize_cdr(data, msgtype).data
            except Exception:  # noqa: BLE001 - an unreadable /rig falls back to the metadata
                text = None
            break
    if not text:
        text = reader.metadata.get(META_RIG)
    return rig_from_yaml(text, source=f"{reader.path}:{RIG_TOPIC}") if text else None


def _windows(times_s: list[float], step_s: float) -> list[tuple[float, float]]:
    """Merge sorted instants closer than `step_s` into (start, end) windows."""
    out: list[tuple[float, float]] = []
    for t in times_s:
        if out and t - out[-1][1] <= step_s:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def diagnose(path: str | Path, rig: Rig | None = None, *, reference: str | None = None,
             frozen_repeats: int = FROZEN_REPEATS) -> TimingReport:
    """Read the bag once and build the report. Raises `BagError` / `ConfigError` for unusable input."""
    reader = BagReader(path)
    rig_from = "file"
    if rig is None:
        rig = _rig_of_bag(reader)
        rig_from = "bag"
    if rig is not None:
        sensors = {s.topic: s.name for s in rig.sensors.values() if s.topic in reader.topics}
    else:
        rig_from = "inferred"
        sensors = {t: t for t, info in reader.topics.items() if has_header(info.msgtype) and t != "/diagnostics"}
    if not sensors:
        raise ConfigError("rig", f"{path}: no sensor topics with a header stamp to diagnose")
    stamps: dict[str, list[int]] = {n: [] for n in sensors.values()}
    recvs: dict[str, list[int]] = {n: [] for n in sensors.values()}
    digests: dict[str, list[bytes | None]] = {n: [] for n in sensors.values()}
    for topic, _, t, data in reader.messages(list(sensors)):
        s = header_stamp_ns(data)
        if s is None:
            continue
        name = sensors[topic]
        stamps[name].append(s)
        recvs[name].append(t)
        digests[name].append(payload_digest(data))
    start = reader.start_ns
    if rig is not None:
        configs = [c for c in stream_configs_from_rig(rig) if c.name in stamps and stamps[c.name]]
        nominal = {s.name: s.rate_hz for s in rig.sensors.values()}
    else:
        configs, nominal = [], {}
        for n, st in stamps.items():
            if len(st) >= 2:
                rate = (len(st) - 1) * NS / max(1, max(st) - min(st))
                lat = np.array(recvs[n]) - np.array(st)
                configs.append(StreamConfig.from_ms(n, rate, latency_ms=float(np.median(lat)) / 1e6,
                                                   jitter_ms=float(np.std(lat)) / 1e6))
    names = [c.name for c in configs]
    if reference is None:
        if rig is not None:
            reference = default_reference(rig)
        else:
            clouds = [n for n in names if "PointCloud2" in reader.topics[n].msgtype]
            reference = (clouds or names)[0]
    if reference not in names:
        raise ConfigError("reference", f"{reference!r} has no messages in {path} (sensors with data: {names})")
    sync = Synchroniser(configs, reference, max_age_ns=1 << 62, max_future_ns=1 << 62)
    events = sorted((Event(n, s, r) for n in names for s, r in zip(stamps[n], recvs[n], strict=True)),
                    key=lambda e: (e.recv_ns, e.stamp_ns, e.name))
    bundles = run_sync(events, sync)
    stats = BundleStats(names)
    for b in bundles:
        stats.add(b)
    bsum = stats.summary()
    ssum = sync.stats()
    out = []
    for topic, name in sensors.items():
        st = np.array(stamps[name], dtype=np.int64)
        rv = np.array(recvs[name], dtype=np.int64)
        n = len(st)
        nom = nominal.get(name)
        d = np.diff(st)
        fwd = d[d > 0]
        period = NS / nom if nom else (float(np.median(fwd)) if fwd.size else 0.0)
        is_gap = fwd > GAP_FACTOR * period if period else np.zeros(fwd.size, bool)
        gap_idx = np.nonzero((d > 0) & (d > GAP_FACTOR * period))[0] if period else np.zeros(0, int)
        regular = fwd[~is_gap]
        lat = (rv - st) / 1e6
        dg = digests[name]
        repeat = [i for i in range(1, n) if dg[i] is not None and dg[i] == dg[i - 1]]
        frozen_idx: list[int] = []
        run: list[int] = []
        for i in repeat:
            run = run + [i] if run and run[-1] == i - 1 else [i]
            if len(run) == frozen_repeats:
                frozen_idx += run
            elif len(run) > frozen_repeats:
                frozen_idx.append(i)
        frozen_t = [(rv[i] - start) / NS for i in frozen_idx]
        sensor_sync = bsum["sensors"].get(name, {})
        out.append(SensorTiming(
            sensor=name, topic=topic, count=n, nominal_rate_hz=nom,
            rate_hz=float((n - 1) * NS / (st.max() - st.min())) if n >= 2 and st.max() > st.min() else 0.0,
            jitter_ms=float(regular.std() / 1e6) if regular.size >= 2 else 0.0,
            recv_jitter_ms=_recv_jitter(rv, period),
            gaps=int(is_gap.sum()), max_gap_s=float(fwd.max() / NS) if fwd.size else 0.0,
            gap_windows_s=[(float((st[i] - start) / NS), float((st[i + 1] - start) / NS)) for i in gap_idx[:5]],
            offset_ms_p50=float(np.percentile(lat, 50)) if n else 0.0,
            offset_ms_p95=float(np.percentile(lat, 95)) if n else 0.0,
            offset_ms_min=float(lat.min()) if n else 0.0, offset_ms_max=float(lat.max()) if n else 0.0,
            stamps_backwards=int((d < 0).sum()), stamps_duplicate=int((d == 0).sum()),
            frozen_messages=len(frozen_idx),
            frozen_windows_s=_windows(frozen_t, 2.0 * period / NS if period else 0.5),
            matched_pct=float(sensor_sync.get("matched_pct", 0.0)),
            age_ms_p50=sensor_sync.get("age_ms_p50"), age_ms_max=sensor_sync.get("age_ms_max"),
            sync_rejected=dict(ssum["streams"].get(name, {}).get("rejected", {})),
        ))
    return TimingReport(
        path=str(reader.path), reference=reference, rig_from=rig_from, duration_s=reader.duration_ns / NS,
        sensors=out, bundles=bsum["bundles"], bundles_reference=bsum["bundles_reference"],
        bundles_watchdog=bsum["bundles_watchdog"], wait_ms_p50=bsum["wait_ms_p50"],
        wait_ms_p99=bsum["wait_ms_p99"], wait_ms_max=bsum["wait_ms_max"], sync_resets=ssum["resets"],
    )


def _recv_jitter(recv: np.ndarray, period: float) -> float:
    d = np.diff(np.sort(recv))
    if period:
        d = d[d <= GAP_FACTOR * period]
    return float(d.std() / 1e6) if d.size >= 2 else 0.0


def _span(windows: list[tuple[float, float]]) -> str:
    return ", ".join(f"{a:.1f}–{b:.1f}" for a, b in windows[:3]) + (" …" if len(windows) > 3 else "")


def render_timing(rep: TimingReport) -> Any:
    """A rich table + summary lines for the terminal."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"Timing of {rep.path} (rig from {rep.rig_from}; times in s from the bag start)",
              header_style="bold")
    cols = ("sensor", "Hz nominal", "Hz stamps", "jitter ms stamp/log", "gaps (max s)", "log−stamp ms p50/p95",
            "back/dup", "frozen", "matched %", "|age| ms p50/max")
    for c in cols:
        t.add_column(c, justify="left" if c == "sensor" else "right", overflow="fold")
    for s in rep.sensors:
        frozen = "-" if not s.frozen_messages else f"{s.frozen_messages} msgs {_span(s.frozen_windows_s)}"
        gaps = f"{s.gaps} ({s.max_gap_s:.2f})" if s.gaps else f"0 ({s.max_gap_s:.2f})"
        if s.gap_windows_s:
            gaps += f" at {_span(s.gap_windows_s)}"
        age = "-" if s.age_ms_p50 is None else f"{s.age_ms_p50:.1f} / {s.age_ms_max:.1f}"
        t.add_row(s.sensor + (" (ref)" if s.sensor == rep.reference else ""),
                  "-" if s.nominal_rate_hz is None else f"{s.nominal_rate_hz:g}", f"{s.rate_hz:.2f}",
                  f"{s.jitter_ms:.2f} / {s.recv_jitter_ms:.2f}", gaps, f"{s.offset_ms_p50:.1f} / {s.offset_ms_p95:.1f}",
                  f"{s.stamps_backwards}/{s.stamps_duplicate}", frozen, f"{s.matched_pct:.1f}", age)
    text = Text(
        f"synchroniser (reference {rep.reference}, log time as clock): {rep.bundles} bundles "
        f"({rep.bundles_reference} reference, {rep.bundles_watchdog} watchdog), added wait p50 "
        f"{rep.wait_ms_p50:.1f} ms, p99 {rep.wait_ms_p99:.1f} ms, max {rep.wait_ms_max:.1f} ms, "
        f"resets {rep.sync_resets}\n"
        "log−stamp: receive (log) time minus header.stamp = latency + clock offset; age: bundle time − stamp; "
        "back/dup: stamps going backwards / repeated; frozen: identical payloads in a row"
    )
    return Group(t, text)
