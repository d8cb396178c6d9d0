"""Warm start: run every stage of a FusionPipeline once on synthetic sensor data before real data comes.

Why: the first inference of an ONNX Runtime session grows its memory arena and
picks kernels, numpy and OpenCV allocate their buffers, and the late-fusion
and decoding paths import and JIT nothing until first called. Done on the
first real bundles, that costs hundreds of milliseconds and drops bundles
while a car is already moving. The node calls `warm_up` while configuring, so
that when it reports `active` every stage has run at least once.

The synthetic bundle is built from the rig alone (no simulator, no files):
points spread over the BEV grid with intensities, a radar scan with Doppler
and RCS, a mid-grey image of each camera's size. Its content is meaningless;
it only has the shapes and dtypes real data has. It runs inside
`FusionPipeline.scratch`, so it leaves no trace in diagnostics, in the mode
policy or in the "previous sweep" of the first real bundle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.sync import Bundle, Member
from ..core.types import Image, Modality, Obstacles, PointCloud
from .pipeline import FusionPipeline, ModePolicy

#: Points of the synthetic LiDAR sweep: a 32-beam sensor at 0.4° gives ~29k returns.
LIDAR_POINTS = 30_000
#: Detections of the synthetic radar scan (an ARS 408 reports up to a few hundred).
RADAR_POINTS = 200
#: Intermediate-fusion rounds: ONNX Runtime's second run is still slower than the steady state.
ROUNDS = 3
#: Stamp of the synthetic bundle [ns]; far from any real clock, and the run state is restored anyway.
WARMUP_T_NS = 1_000_000_000


@dataclass
class WarmUpReport:
    """What the warm-up ran and how long each run took (ms), for the node's log line and diagnostics."""

    runs_ms: dict[str, list[float]] = field(default_factory=dict)  # path → wall time per run
    total_ms: float = 0.0
    bundle: Bundle | None = None  # the synthetic bundle (the node also runs its message converters on it)
    obstacles: Obstacles | None = None  # what the last run detected (the node warms its output encoders)

    def describe(self) -> str:
        parts = [f"{path} {', '.join(f'{v:.0f}' for v in ms)} ms" for path, ms in self.runs_ms.items()]
        return f"warm-up {self.total_ms:.0f} ms ({'; '.join(parts)})"


def _cloud(frame_id: str, t_ns: int, n: int, rng: np.random.Generator, fields: tuple[str, ...]) -> PointCloud:
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + [(f, "<f4") for f in fields])
    pts = np.zeros(n, dtype)
    r = rng.uniform(2.0, 50.0, n)
    a = rng.uniform(-np.pi, np.pi, n)
    pts["x"], pts["y"], pts["z"] = r * np.cos(a), r * np.sin(a), rng.uniform(-1.8, 1.0, n)
    for f in fields:
        pts[f] = rng.uniform(0.0, 1.0, n) if f == "intensity" else rng.normal(0.0, 5.0, n)
    return PointCloud(t_ns, frame_id, pts)


def synthetic_bundle(pipeline: FusionPipeline, t_ns: int = WARMUP_T_NS, seed: int = 0) -> Bundle:
    """A bundle with one message of every fused sensor of the pipeline's rig, all stamped `t_ns`."""
    rng = np.random.default_rng(seed)
    members: dict[str, Member] = {}
    for spec in pipeline.rig.sensors.values():
        payload: Any
        if spec.modality is Modality.LIDAR:
            payload = _cloud(spec.frame_id, t_ns, LIDAR_POINTS, rng, ("intensity",))
        elif spec.modality is Modality.RADAR:
            payload = _cloud(spec.frame_id, t_ns, RADAR_POINTS, rng, ("v_r", "rcs"))
        elif spec.modality is Modality.CAMERA:
            K = pipeline.intrinsics.get(spec.name)
            if K is None:
                continue
            payload = Image(t_ns, spec.frame_id, np.full((K.height, K.width, 3), 128, np.uint8), "rgb8")
        else:
            continue
        members[spec.name] = Member(t_ns, t_ns, payload, 0)
    return Bundle(t_ns, "warmup", members, frozenset(), 0, t_ns)


def warm_up(pipeline: FusionPipeline, rounds: int = ROUNDS) -> WarmUpReport:
    """Run the intermediate path `rounds` times, then late fusion and pipelining once, leaving no trace.

    Raises what the pipeline raises: a model that cannot run on this rig should fail at configure,
    with the real error, rather than on the first bundle.
    """
    report = WarmUpReport()
    t_start = time.perf_counter()

    def timed(path: str, fn: Any) -> None:
        t0 = time.perf_counter()
        res = fn()
        report.runs_ms.setdefault(path, []).append((time.perf_counter() - t0) * 1e3)
        if hasattr(res, "obstacles"):
            report.obstacles = res.obstacles

    bundle = report.bundle = synthetic_bundle(pipeline)
    lidars = pipeline.rig.of(Modality.LIDAR)
    with pipeline.scratch():
        for _ in range(max(1, rounds)):
            timed("intermediate", lambda: pipeline.run(pipeline.prepare(bundle), strategy="intermediate",
                                                       policy=ModePolicy(pipeline.config)))
        timed("late", lambda: pipeline.run(pipeline.prepare(bundle), strategy="late",
                                           policy=ModePolicy(pipeline.config)))
        if len(lidars) == 1:
            timed("prefetch", lambda: pipeline.prefetch(lidars[0].name, bundle.members[lidars[0].name].payload))
    report.total_ms = (time.perf_counter() - t_start) * 1e3
    return report
