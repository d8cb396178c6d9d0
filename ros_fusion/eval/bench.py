"""Latency and throughput of the FusionPipeline per stage and end to end (`ros-fusion bench`, DESIGN §9).

Why a benchmark of its own, next to `eval --live`: deployment questions are
"how many cameras / how dense a LiDAR can this machine fuse at 10 Hz, and
which stage pays for it". Answering them needs the *same* pipeline object the
node runs, fed with realistic data, swept over rig sizes — without a bag per
rig and without the ROS graph's noise. So:

- **Data**: one simulated drive (`sim.drive.DriveSimulator`) gives real LiDAR
  sweeps (with per-point times, so deskewing does real work), camera images,
  radar scans and IMU samples. Each sweep is resampled to the requested point
  count (seeded choice with replacement, scan order kept) and its camera image
  reused for every camera of the scaled rig.
- **Rigs**: the default rig with its front camera cloned N times, yaw-rotated
  360/N degrees apart (``camera_0`` …), same intrinsics.
- **Bundles** are built directly (`core.sync.Bundle`), one per sweep at the
  sweep's stamp, with the nearest image/scan and every IMU sample published
  before the bundle could have been complete fed to `add_imu` first, so
  ego-motion compensation runs as on the vehicle.
- **Per configuration** (cameras × points × strategy): after a warm-up, K
  bundles through `FusionPipeline.process`; per-stage p50/p95/p99/max from
  `PipelineResult.timings_ms`, end to end (``total``), throughput, process CPU
  time per bundle, RSS, and whether p99 fits in the LiDAR period.
- **Real-time replay** (optional, costs wall time): a `FusionEngine` fed the
  drive at its real publish times from a feeder thread while a worker thread
  fuses — the node's threading model — giving latency from capture stamp to
  result and the bundles dropped when fusion falls behind.

Everything here is ROS-free; the CLI (`commands/bench.py`) only parses options
and renders what `run_bench` returns.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import os
import platform
import queue
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.events import SIM_EPOCH_NS
from ..core.rig import Rig, rig_from_dict
from ..core.sync import Bundle, Member
from ..core.transforms import make_transform, rot_z
from ..core.types import NS_PER_S, CameraInfo, Image, ImuSample, Modality, PointCloud

SCHEMA = "ros_fusion.bench/1"
MAX_CAMERAS = 6  # core.network_io.MAX_CAMERAS: the camera stage's limit
MAX_POINTS = 5_000_000  # a 128-beam LiDAR at 20 Hz is ~0.2 M points a sweep; far beyond is a typo
MAX_BUNDLES = 100_000
MAX_REALTIME_S = 600.0
STRATEGIES: tuple[str, ...] = ("intermediate", "late")
DEFAULT_CAMERAS: tuple[int, ...] = (1, 3, 6)
DEFAULT_POINTS: tuple[int, ...] = (30_000, 100_000, 250_000)
#: Sweeps simulated at most; longer runs cycle through them with stamps shifted forward (memory stays bounded).
MAX_POOL_SWEEPS = 100
#: Drive time simulated before the first benchmarked sweep, so the IMU history covers its points.
LEAD_IN_S = 0.4
#: Drive time simulated after the last sweep, so its nearest image/scan and later IMU samples exist.
TAIL_S = 0.3
#: Bundles waiting for the replay's fusion worker at most (ros/fusion_node.FUSION_QUEUE).
FUSION_QUEUE = 2
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))
#: Stage groups comparable across strategies (late runs each step once per modality): group → stage prefixes.
#: The IMU encoder (well under a millisecond) is counted with the fusion head it conditions.
STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "compensate": ("compensate", "late.compensate."),
    "preprocess": ("preprocess", "late.preprocess."),
    "encode.camera": ("encode.camera",),
    "encode.lidar": ("encode.lidar",),
    "encode.radar": ("encode.radar",),
    "fusion_head": ("fusion_head", "late.fusion_head.", "encode.imu"),
    "decode": ("decode", "late.decode.", "late.merge"),
}


def stage_group(stage: str) -> str:
    """The `STAGE_GROUPS` entry a pipeline stage belongs to (``other`` for a stage added later)."""
    for group, prefixes in STAGE_GROUPS.items():
        if any(stage == p or (p.endswith(".") and stage.startswith(p)) for p in prefixes):
            return group
    return "other"


# ----------------------------------------------------------------------------- settings
@dataclass
class BenchConfig:
    """What to measure; `check` rejects any value that cannot give a meaningful run."""

    cameras: tuple[int, ...] = DEFAULT_CAMERAS
    points: tuple[int, ...] = DEFAULT_POINTS
    strategies: tuple[str, ...] = STRATEGIES
    bundles: int = 30
    warmup: int = 3
    threads: int | None = 2
    backend: str = "onnxruntime"
    seed: int = 0
    scenario: str = "urban"
    realtime_s: float = 0.0

    def check(self) -> None:
        def positive_int(name: str, v: Any, lo: int, hi: int) -> None:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"{name}: must be an integer in [{lo}, {hi}], got {v!r}")

        for name, values in (("cameras", self.cameras), ("points", self.points), ("strategies", self.strategies)):
            if not values:
                raise ValueError(f"{name}: give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: duplicate values in {list(values)}")
        for n in self.cameras:
            positive_int("cameras", n, 1, MAX_CAMERAS)
        for n in self.points:
            positive_int("points", n, 1, MAX_POINTS)
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ValueError(f"strategies: {s!r} is not one of {', '.join(STRATEGIES)}")
        positive_int("bundles", self.bundles, 1, MAX_BUNDLES)
        positive_int("warmup", self.warmup, 0, 1000)
        if self.threads is not None:
            positive_int("threads", self.threads, 1, 256)
        positive_int("seed", self.seed, 0, 2**32 - 1)
        rt = self.realtime_s
        if isinstance(rt, bool) or not isinstance(rt, (int, float)) or not math.isfinite(rt) \
                or not 0.0 <= rt <= MAX_REALTIME_S:
            raise ValueError(f"realtime: must be a number of seconds in [0, {MAX_REALTIME_S:g}], got {rt!r}")
        from ..sim.scenarios import list_scenarios

        if self.scenario not in list_scenarios():
            raise ValueError(f"scenario: {self.scenario!r} is not one of {', '.join(list_scenarios())}")


def parse_int_list(text: str, what: str, lo: int, hi: int) -> tuple[int, ...]:
    """``"1,3,6"`` → (1, 3, 6); each value an integer in [lo, hi] (``_`` and ``k`` allowed: ``100k``)."""
    out: list[int] = []
    for part in str(text).split(","):
        p = part.strip().lower().replace("_", "")
        if not p:
            raise ValueError(f"{what}: empty value in {text!r}")
        scale = 1000 if p.endswith("k") else 1
        try:
            v = int(p[:-1] if scale > 1 else p) * scale
        except ValueError:
            raise ValueError(f"{what}: {part.strip()!r} is not an integer") from None
        if not lo <= v <= hi:
            raise ValueError(f"{what}: {v} is outside [{lo}, {hi}]")
        out.append(v)
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: duplicate values in {text!r}")
    return tuple(out)


def parse_strategies(text: str) -> tuple[str, ...]:
    out = tuple(s.strip() for s in str(text).split(","))
    for s in out:
        if s not in STRATEGIES:
            raise ValueError(f"strategies: {s!r} is not one of {', '.join(STRATEGIES)}")
    if len(set(out)) != len(out):
        raise ValueError(f"strategies: duplicate values in {text!r}")
    return out


# ----------------------------------------------------------------------------- rigs and data
def scaled_rig(base: Rig, n_cameras: int) -> Rig:
    """`base` with its cameras replaced by `n_cameras` clones of the first, yaw-rotated 360/N° apart.

    The clones keep the first camera's intrinsics, rate and mounting height; camera k is the
    first camera's mount turned by k·360/N about base_link's z axis (names ``camera_0`` …).
    """
    if isinstance(n_cameras, bool) or not isinstance(n_cameras, (int, np.integer)) \
            or not 1 <= n_cameras <= MAX_CAMERAS:
        raise ValueError(f"n_cameras must be an integer in [1, {MAX_CAMERAS}], got {n_cameras!r}")
    cams = base.of(Modality.CAMERA)
    if not cams:
        raise ValueError(f"rig {base.name} has no camera to clone")
    first = cams[0]
    if first.intrinsics is None:
        raise ValueError(f"rig {base.name}: camera {first.name} has no intrinsics to clone")
    raw = copy.deepcopy(base.raw)
    if not isinstance(raw.get("sensors"), dict) or first.name not in raw["sensors"]:
        raise ValueError(f"rig {base.name} carries no raw description of {first.name} to clone (load it from YAML)")
    sensors = {k: v for k, v in raw["sensors"].items() if base.sensors[k].modality != Modality.CAMERA}
    template = raw["sensors"][first.name]
    for k in range(int(n_cameras)):
        name = f"camera_{k}"
        d = copy.deepcopy(template)
        E = make_transform(rot_z(2.0 * math.pi * k / n_cameras)) @ np.asarray(first.extrinsic, np.float64)
        d["extrinsics"] = {"matrix": [[float(x) for x in row] for row in E]}
        d["topic"] = f"/sensors/{name}/image_raw"
        if d.get("info_topic"):
            d["info_topic"] = f"/sensors/{name}/camera_info"
        d["frame_id"] = f"{name}_optical"
        sensors[name] = d
    raw["sensors"] = sensors
    raw["rig"] = dict(raw.get("rig") or {}, name=f"{base.name}_{n_cameras}cam")
    return rig_from_dict(raw, f"{base.source or base.name} scaled to {n_cameras} cameras")


def resample_cloud(cloud: PointCloud, n_points: int, rng: np.random.Generator) -> PointCloud:
    """`n_points` points drawn from `cloud` with replacement, in the original scan order.

    Keeping scan order matters: a real driver delivers points in firing order, and the
    rasteriser's memory access (hence its time) depends on it.
    """
    if len(cloud) == 0:
        raise ValueError("cannot resample an empty cloud")
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}")
    idx = np.sort(rng.integers(0, len(cloud), int(n_points)))
    return PointCloud(stamp_ns=int(cloud.stamp_ns), frame_id=cloud.frame_id, points=cloud.points[idx],
                      height=1, is_dense=cloud.is_dense)


@dataclass
class Sweep:
    """One LiDAR sweep with the other sensors' data a bundle at its stamp would hold."""

    lidar: PointCloud
    lidar_recv_ns: int
    image: tuple[Image, int] | None  # (image, publish time) nearest the sweep stamp
    radar: tuple[PointCloud, int] | None
    ready_ns: int  # when the last member was published: the earliest the bundle could be complete


@dataclass
class SimulatedDrive:
    """The payloads of one simulated drive, arranged for building bundles (see `simulate_inputs`).

    IMU samples are split so the drive can be cycled without time going back: `imu_lead` (stamps
    before `loop_start_ns`) is fed once; `imu_loop` (stamps in [loop_start_ns, loop_start_ns +
    span_ns)) is fed once per cycle, shifted by span_ns each time, so cycles tile time exactly.
    """

    rig: Rig
    sweeps: list[Sweep]
    imu_lead: list[tuple[int, ImuSample]]  # (publish time, sample), publish order
    imu_loop: list[tuple[int, ImuSample]]
    loop_start_ns: int
    span_ns: int  # stamp shift per cycle when more bundles than sweeps are asked for
    lidar: str
    imu_sensor: str | None

    @property
    def source_points(self) -> float:
        return float(np.mean([len(s.lidar) for s in self.sweeps]))

    def imu_stream(self) -> Iterator[tuple[int, ImuSample]]:
        """(publish time, sample) forever: the lead-in, then the loop window shifted by one span per cycle."""
        yield from self.imu_lead
        if not self.imu_loop:
            return
        cycle = 0
        while True:
            d = cycle * self.span_ns
            for recv, s in self.imu_loop:
                yield recv + d, _shift(s, d)
            cycle += 1


def _nearest(items: list[tuple[int, Any, int]], t_ns: int) -> tuple[Any, int] | None:
    """(payload, publish time) of the item whose stamp is nearest `t_ns` (items sorted by stamp)."""
    if not items:
        return None
    stamps = [s for s, _, _ in items]
    k = bisect.bisect_left(stamps, t_ns)
    best = min((i for i in (k - 1, k) if 0 <= i < len(items)), key=lambda i: abs(stamps[i] - t_ns))
    return items[best][1], items[best][2]


def simulate_inputs(rig: Rig, n_sweeps: int, seed: int = 0, scenario: str = "urban") -> SimulatedDrive:
    """Simulate just enough of one drive for `n_sweeps` bundles (at most `MAX_POOL_SWEEPS`, then cycled)."""
    from ..sim.drive import DriveSimulator

    lidars = rig.of(Modality.LIDAR)
    if not lidars:
        raise ValueError(f"rig {rig.name} has no LiDAR: bundles are triggered by LiDAR sweeps")
    if isinstance(n_sweeps, bool) or not isinstance(n_sweeps, (int, np.integer)) or n_sweeps < 1:
        raise ValueError(f"n_sweeps must be a positive integer, got {n_sweeps!r}")
    lidar = lidars[0]
    cams, radars, imus = rig.of(Modality.CAMERA), rig.of(Modality.RADAR), rig.of(Modality.IMU)
    n = min(int(n_sweeps), MAX_POOL_SWEEPS)
    duration = LEAD_IN_S + (n + 1) / lidar.rate_hz + TAIL_S
    lead_ns = SIM_EPOCH_NS + int(LEAD_IN_S * NS_PER_S)
    clouds: list[tuple[PointCloud, int]] = []
    images: list[tuple[int, Any, int]] = []
    scans: list[tuple[int, Any, int]] = []
    imu: list[tuple[int, ImuSample]] = []
    cam_name = cams[0].name if cams else None
    radar_name = radars[0].name if radars else None
    imu_name = imus[0].name if imus else None
    for ev in DriveSimulator(rig, scenario, int(seed), duration).events():
        p = ev.payload
        if ev.sensor == lidar.name and isinstance(p, PointCloud) and p.stamp_ns >= lead_ns and len(p):
            clouds.append((p, ev.publish_ns))
        elif ev.sensor == cam_name and isinstance(p, Image):
            images.append((p.stamp_ns, p, ev.publish_ns))
        elif ev.sensor == radar_name and isinstance(p, PointCloud):
            scans.append((p.stamp_ns, p, ev.publish_ns))
        elif ev.sensor == imu_name and isinstance(p, ImuSample):
            imu.append((ev.publish_ns, p))
    images.sort(key=lambda x: x[0])
    scans.sort(key=lambda x: x[0])
    sweeps = []
    for cloud, recv in clouds[:n]:
        img = _nearest(images, cloud.stamp_ns)
        scan = _nearest(scans, cloud.stamp_ns)
        ready = max([recv] + [x[1] for x in (img, scan) if x is not None])
        sweeps.append(Sweep(cloud, recv, img, scan, ready))
    if not sweeps:
        raise RuntimeError(f"the simulated drive ({duration:.1f} s) produced no LiDAR sweep")
    period = int(round(NS_PER_S / lidar.rate_hz))
    span = int(sweeps[-1].lidar.stamp_ns - sweeps[0].lidar.stamp_ns + period)
    loop_start = int(sweeps[0].lidar.stamp_ns) - period  # the first sweep's points start about a period earlier
    lead = [x for x in imu if x[1].stamp_ns < loop_start]
    loop = [x for x in imu if loop_start <= x[1].stamp_ns < loop_start + span]
    return SimulatedDrive(rig, sweeps, lead, loop, loop_start, span, lidar.name, imu_name)


def _shift(obj: Any, d_ns: int) -> Any:
    """A shallow copy of a stamped payload `d_ns` later (arrays shared: nothing is written to them)."""
    if d_ns == 0:
        return obj
    out = copy.copy(obj)
    out.stamp_ns = int(obj.stamp_ns) + int(d_ns)
    return out


class BundleSource:
    """Bundles for one rig from a `SimulatedDrive`: sweep i → bundle i, IMU fed up to its completion time.

    After the last simulated sweep it starts over with every stamp shifted by the drive's span,
    so time keeps moving forward (the pose history and mode policy see one continuous drive).
    """

    def __init__(self, drive: SimulatedDrive, rig: Rig, n_points: int, seed: int) -> None:
        self.drive = drive
        self.rig = rig
        self.n_points = int(n_points)
        self.seed = int(seed)
        self.cameras = [s.name for s in rig.of(Modality.CAMERA)]
        self.radars = [s.name for s in rig.of(Modality.RADAR)]
        self.lidar = drive.lidar if drive.lidar in rig.sensors else rig.of(Modality.LIDAR)[0].name
        self.imu_name = drive.imu_sensor if drive.imu_sensor in rig.sensors else None
        self._i = 0
        self._imu = drive.imu_stream()
        self._imu_next = next(self._imu, None)
        self._imu_last: tuple[int, ImuSample] | None = None

    def next(self, add_imu: Callable[[ImuSample], Any]) -> Bundle:
        """The next bundle, after feeding every IMU sample published before it was complete to `add_imu`."""
        d = self.drive
        cycle, k = divmod(self._i, len(d.sweeps))
        shift = cycle * d.span_ns
        sw = d.sweeps[k]
        ready = sw.ready_ns + shift
        while self._imu_next is not None and self._imu_next[0] <= ready:
            add_imu(self._imu_next[1])
            self._imu_last = self._imu_next
            self._imu_next = next(self._imu, None)
        rng = np.random.default_rng([self.seed, self.n_points, k])
        cloud = _shift(resample_cloud(sw.lidar, self.n_points, rng), shift)
        T = int(cloud.stamp_ns)
        members = {self.lidar: Member(T, sw.lidar_recv_ns + shift, cloud, 0)}
        if sw.image is not None:
            img, recv = sw.image
            img = _shift(img, shift)
            for name in self.cameras:
                members[name] = Member(int(img.stamp_ns), recv + shift, img, T - int(img.stamp_ns))
        if sw.radar is not None:
            scan, recv = sw.radar
            scan = _shift(scan, shift)
            for name in self.radars:
                members[name] = Member(int(scan.stamp_ns), recv + shift, scan, T - int(scan.stamp_ns))
        if self.imu_name is not None and self._imu_last is not None:
            recv, s = self._imu_last
            members[self.imu_name] = Member(int(s.stamp_ns), recv, s, T - int(s.stamp_ns))
        missing = frozenset(n for n in self.rig.sensors if n not in members)
        self._i += 1
        return Bundle(t_ns=T, trigger="reference", members=members, missing=missing, wait_ns=0, emitted_ns=ready)


# ----------------------------------------------------------------------------- statistics
def stats_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean (ms) of `values` (linear-interpolated percentiles: p50 ≤ p95 ≤ p99 ≤ max)."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    out = {name: float(np.percentile(a, q)) for name, q in PERCENTILES}
    out["max"] = float(a.max())
    out["mean"] = float(a.mean())
    out["min"] = float(a.min())
    return out


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (/proc/self/statm; getrusage ru_maxrss)."""
    peak_kib = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if platform.system() == "Darwin":  # bytes there, KiB on Linux
        peak_kib /= 1024.0
    current = float("nan")
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return current, peak_kib / 1024.0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(backend: Any, threads: int | None) -> dict[str, Any]:
    """Where the numbers were measured: they mean nothing without the machine and the runtime."""
    from .. import __version__

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count() or 0,
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ros_fusion": __version__,
        "backend": str(backend.describe()),
        "threads": threads,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    except ImportError:
        info["onnxruntime"] = None
    return info


# ----------------------------------------------------------------------------- one configuration
@dataclass
class ConfigResult:
    """What K bundles of one (cameras, points, strategy) took."""

    cameras: int
    points: int
    strategy: str
    bundles: int
    warmup: int
    stages: dict[str, dict[str, float]]  # stage → stats_ms (``total`` excluded: see end_to_end)
    groups: dict[str, dict[str, float]]  # STAGE_GROUPS → stats_ms of the per-bundle sum of its stages
    end_to_end: dict[str, float]  # stats_ms of timings_ms["total"]
    throughput_hz: float
    cpu_ms_per_bundle: float
    cpu_percent: float  # of one core; above 100 when inference threads run in parallel
    wall_s: float
    rss_mib: float
    rss_peak_mib: float  # process-wide peak so far (includes earlier configurations)
    lidar_period_ms: float
    realtime: bool  # end-to-end p99 < LiDAR period
    modes: dict[str, int]
    detections_mean: float
    counters: dict[str, int]  # pipeline counters (e.g. ego_unavailable.*: compensation fell back to static)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cameras": self.cameras, "points": self.points, "strategy": self.strategy,
            "bundles": self.bundles, "warmup": self.warmup, "stages_ms": self.stages, "stage_groups_ms": self.groups,
            "end_to_end_ms": self.end_to_end, "throughput_hz": self.throughput_hz,
            "cpu_ms_per_bundle": self.cpu_ms_per_bundle, "cpu_percent": self.cpu_percent,
            "wall_s": self.wall_s, "rss_mib": self.rss_mib, "rss_peak_mib": self.rss_peak_mib,
            "lidar_period_ms": self.lidar_period_ms, "realtime": self.realtime, "modes": self.modes,
            "detections_mean": self.detections_mean, "counters": self.counters,
        }


def make_pipeline(rig: Rig, model: Any, backend: Any, strategy: str) -> Any:
    from ..runtime.pipeline import FusionPipeline, PipelineConfig

    cfg = PipelineConfig.from_manifest(getattr(model, "raw", None), strategy=strategy)
    return FusionPipeline(rig, model, backend, cfg)


def bench_configuration(drive: SimulatedDrive, model: Any, backend: Any, n_cameras: int, n_points: int,
                        strategy: str, bundles: int, warmup: int = 3, seed: int = 0,
                        base_rig: Rig | None = None) -> ConfigResult:
    """Time `bundles` bundles of one configuration through a fresh pipeline (after `warmup` untimed ones)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if isinstance(bundles, bool) or not isinstance(bundles, int) or bundles < 1:
        raise ValueError(f"bundles must be a positive integer, got {bundles!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    rig = scaled_rig(base_rig or drive.rig, n_cameras)
    check_rig = getattr(model, "check_rig", None)
    if check_rig is not None:  # e.g. a model exported for a fixed camera count
        check_rig(rig)
    pipeline = make_pipeline(rig, model, backend, strategy)
    source = BundleSource(drive, rig, n_points, seed)
    for _ in range(warmup):
        pipeline.process(source.next(pipeline.add_imu))
    pipeline.counters.clear()
    timings: list[dict[str, float]] = []
    modes: Counter[str] = Counter()
    detections = 0
    cpu = wall = 0.0
    for _ in range(bundles):
        b = source.next(pipeline.add_imu)  # data preparation and IMU feeding stay outside the clocks
        c0, w0 = time.process_time(), time.perf_counter()
        res = pipeline.process(b)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        timings.append(dict(res.timings_ms))
        modes[res.mode] += 1
        detections += len(res.obstacles)
    names = sorted({k for t in timings for k in t} - {"total"})
    stages = {n: stats_ms([t[n] for t in timings if n in t]) for n in names}
    sums: dict[str, list[float]] = {}
    for t in timings:
        per: dict[str, float] = {}
        for n in names:
            if n in t:
                per[stage_group(n)] = per.get(stage_group(n), 0.0) + t[n]
        for g, v in per.items():
            sums.setdefault(g, []).append(v)
    order = [*STAGE_GROUPS, "other"]
    groups = {g: stats_ms(sums[g]) for g in order if g in sums}
    total = stats_ms([t["total"] for t in timings])
    current, peak = rss_mib()
    period_ms = 1e3 / rig.sensors[source.lidar].rate_hz
    return ConfigResult(
        cameras=int(n_cameras), points=int(n_points), strategy=strategy, bundles=int(bundles), warmup=int(warmup),
        stages=stages, groups=groups, end_to_end=total, throughput_hz=1e3 / total["mean"],
        cpu_ms_per_bundle=cpu / bundles * 1e3,
        cpu_percent=100.0 * cpu / wall if wall > 0 else 0.0, wall_s=wall, rss_mib=current, rss_peak_mib=peak,
        lidar_period_ms=period_ms, realtime=bool(total["p99"] < period_ms), modes=dict(sorted(modes.items())),
        detections_mean=detections / bundles, counters=dict(sorted(pipeline.counters.items())),
    )


# ----------------------------------------------------------------------------- real-time replay
@dataclass
class RealtimeResult:
    """The engine fed a drive at its real publish times (feeder thread) while a worker thread fuses."""

    seconds: float
    messages: int
    bundles_emitted: int
    bundles_processed: int
    bundles_dropped: int  # waiting bundles thrown away because fusion was behind (the node's policy)
    bundles_failed: int
    latency: dict[str, float] | None  # capture stamp → result, ms
    sync_wait: dict[str, float] | None  # how long bundles waited in the synchroniser (part of latency), ms
    stages: dict[str, dict[str, float]]
    feed_lag_ms: dict[str, float] | None  # how late messages were handed over vs their publish time
    modes: dict[str, int]
    counters: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds, "messages": self.messages, "bundles_emitted": self.bundles_emitted,
            "bundles_processed": self.bundles_processed, "bundles_dropped": self.bundles_dropped,
            "bundles_failed": self.bundles_failed, "latency_ms": self.latency, "sync_wait_ms": self.sync_wait,
            "stages_ms": self.stages,
            "feed_lag_ms": self.feed_lag_ms, "modes": self.modes, "counters": self.counters,
        }


def realtime_replay(rig: Rig, model: Any, backend: Any, seconds: float, seed: int = 0, scenario: str = "urban",
                    events: Sequence[Any] | None = None) -> RealtimeResult:
    """Replay `seconds` of simulated drive into a `FusionEngine` in wall-clock time (see module docstring).

    The drive is simulated first (simulation is not what is measured); then a feeder sleeps
    until each message's publish time, hands it to the engine with the replay clock as "now"
    and polls the synchroniser (also on the node's timer ticks); bundles go through a queue of
    `FUSION_QUEUE` to a worker thread, the oldest dropped when full — as `fusion_node` does.
    Latency = the replay clock when the result is ready − the bundle's capture stamp.
    """
    from ..runtime.engine import FusionEngine
    from ..runtime.pipeline import FusionPipeline, PipelineConfig
    from ..sim.drive import simulate_drive
    from .bag_eval import POLL_PER_PERIOD, payload_digest

    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or not 0 < seconds <= MAX_REALTIME_S:
        raise ValueError(f"seconds must be in (0, {MAX_REALTIME_S:g}], got {seconds!r}")
    if events is None:
        events = [e for e in simulate_drive(rig, scenario, int(seed), float(seconds)) if e.sensor in rig.sensors]
    if not events:
        raise ValueError("no events to replay")
    pipeline = FusionPipeline(rig, model, backend, PipelineConfig.from_manifest(getattr(model, "raw", None)))
    engine = FusionEngine(rig, pipeline)
    tick_ns = max(int(NS_PER_S / rig.sensors[engine.reference].rate_hz / POLL_PER_PERIOD), 1)
    work: queue.Queue = queue.Queue(maxsize=FUSION_QUEUE)
    stop = threading.Event()
    sim0 = int(events[0].publish_ns)
    wall0 = time.perf_counter_ns() + 20_000_000  # a little head start so the first message is not already late

    def now_sim() -> int:
        return sim0 + (time.perf_counter_ns() - wall0)

    latencies: list[float] = []
    waits: list[float] = []
    timings: list[dict[str, float]] = []
    modes: Counter[str] = Counter()
    counts = Counter[str]()

    def worker() -> None:
        while not stop.is_set() or not work.empty():
            try:
                b, usable = work.get(timeout=0.05)
            except queue.Empty:
                continue
            out = engine.process(b, usable, now_sim())
            done = now_sim()
            if out.result is None:
                counts["failed"] += 1
                continue
            latencies.append((done - int(b.t_ns)) / 1e6)
            waits.append(int(b.wait_ns) / 1e6)
            timings.append(dict(out.result.timings_ms))
            modes[out.result.mode] += 1

    def dispatch(ready: list[tuple[Bundle, set[str]]]) -> None:
        for item in ready:
            counts["emitted"] += 1
            while True:
                try:
                    work.put_nowait(item)
                    break
                except queue.Full:
                    try:
                        work.get_nowait()
                        counts["dropped"] += 1
                    except queue.Empty:
                        pass

    def sleep_until(t_sim: int) -> None:
        d = t_sim - now_sim()
        if d > 0:
            time.sleep(d / NS_PER_S)

    info_topics = {s.info_topic: s.name for s in rig.sensors.values() if s.info_topic}
    lags: list[float] = []
    th = threading.Thread(target=worker, name="bench_fusion_worker", daemon=True)
    th.start()
    next_tick = sim0
    try:
        for ev in events:
            while next_tick < ev.publish_ns:  # the node's poll timer between messages
                sleep_until(next_tick)
                dispatch(engine.poll_bundles(now_sim()))
                next_tick += tick_ns
            sleep_until(int(ev.publish_ns))
            now = now_sim()
            lags.append((now - int(ev.publish_ns)) / 1e6)
            if isinstance(ev.payload, CameraInfo):
                if ev.topic in info_topics:
                    engine.camera_info(info_topics[ev.topic], ev.payload)
                continue
            engine.accept(ev.sensor, ev.payload, now, payload_digest(ev.payload))
            dispatch(engine.poll_bundles(now))
        end = int(events[-1].publish_ns) + 2 * int(NS_PER_S / rig.sensors[engine.reference].rate_hz)
        while next_tick < end:  # let the last bundles reach their deadlines
            sleep_until(next_tick)
            dispatch(engine.poll_bundles(now_sim()))
            next_tick += tick_ns
    finally:
        stop.set()
        th.join(timeout=60.0)
    names = sorted({k for t in timings for k in t} - {"total"})
    return RealtimeResult(
        seconds=float(seconds), messages=len(events), bundles_emitted=counts["emitted"],
        bundles_processed=len(latencies), bundles_dropped=counts["dropped"], bundles_failed=counts["failed"],
        latency=stats_ms(latencies) if latencies else None, sync_wait=stats_ms(waits) if waits else None,
        stages={n: stats_ms([t[n] for t in timings if n in t]) for n in names},
        feed_lag_ms=stats_ms(lags) if lags else None, modes=dict(sorted(modes.items())),
        counters=dict(sorted((dict(engine.counters) | {f"pipeline.{k}": v for k, v in pipeline.counters.items()}
                             ).items())),
    )


# ----------------------------------------------------------------------------- the whole run
@dataclass
class BenchReport:
    config: BenchConfig
    machine: dict[str, Any]
    results: list[ConfigResult] = field(default_factory=list)
    realtime: RealtimeResult | None = None
    source_points_mean: float = 0.0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "schema": SCHEMA,
            "machine": self.machine,
            "settings": {
                "cameras": list(c.cameras), "points": list(c.points), "strategies": list(c.strategies),
                "bundles": c.bundles, "warmup": c.warmup, "threads": c.threads, "backend": c.backend,
                "seed": c.seed, "scenario": c.scenario, "realtime_s": c.realtime_s,
                "source_points_mean": self.source_points_mean,
            },
            "configurations": [r.to_dict() for r in self.results],
            "realtime": self.realtime.to_dict() if self.realtime is not None else None,
            "wall_s": self.wall_s,
        }


def configurations(cfg: BenchConfig) -> list[tuple[int, int, str]]:
    """(cameras, points, strategy) in the order they run."""
    return [(c, p, s) for c in cfg.cameras for p in cfg.points for s in cfg.strategies]


def run_bench(cfg: BenchConfig, model: Any, backend: Any, base_rig: Rig,
              progress: Callable[[str], None] | None = None) -> BenchReport:
    """Every configuration of `cfg` (and the real-time replay when `cfg.realtime_s` > 0).

    `progress(label)` is called when a step starts ("simulate", "1cam 100000pts intermediate",
    "realtime") so a caller can show where the run is.
    """
    cfg.check()
    t0 = time.perf_counter()
    report = BenchReport(cfg, machine_info(backend, cfg.threads))
    if progress:
        progress("simulate")
    drive = simulate_inputs(base_rig, cfg.warmup + cfg.bundles, cfg.seed, cfg.scenario)
    report.source_points_mean = drive.source_points
    for cams, pts, strategy in configurations(cfg):
        if progress:
            progress(f"{cams}cam {pts}pts {strategy}")
        report.results.append(bench_configuration(drive, model, backend, cams, pts, strategy, cfg.bundles,
                                                  cfg.warmup, cfg.seed, base_rig))
    if cfg.realtime_s > 0:
        if progress:
            progress("realtime")
        report.realtime = realtime_replay(base_rig, model, backend, cfg.realtime_s, cfg.seed, cfg.scenario)
    report.wall_s = time.perf_counter() - t0
    return report


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: they become null (a reader must not get a file `json.loads` rejects)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def report_json(report: BenchReport) -> str:
    """The report as JSON text with sorted keys (same run → same key order; diffs stay readable)."""
    return json.dumps(_finite(report.to_dict()), sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_report(report: BenchReport, path: str | Path) -> Path:
    p = Path(path)
    if p.exists() and p.is_dir():
        raise ValueError(f"{p} is a directory: give a file name for the JSON report")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(report_json(report))
    return p


__all__ = [
    "STAGE_GROUPS", "BenchConfig", "BenchReport", "BundleSource", "ConfigResult", "RealtimeResult", "SimulatedDrive",
    "bench_configuration", "configurations", "machine_info", "parse_int_list", "parse_strategies", "realtime_replay",
    "report_json", "resample_cloud", "rss_mib", "run_bench", "scaled_rig", "simulate_inputs", "stage_group", "stats_ms",
    "write_report",
]
