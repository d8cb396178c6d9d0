"""Offline evaluation of recorded drives: bag messages → FusionEngine → scored detections (docs/DESIGN.md §9).

ROS-free: the caller decodes the bag (`ros.bag_io.read_payloads`) and hands
over ``(topic, log_time_ns, payload)`` in log-time order. Each message is fed
to the same `FusionEngine` the live node runs, with the recorded log time as
"now", and the synchroniser is polled at the node's timer rate between
messages — so the offline run takes the decisions the node would have taken
on that recording, deterministically (same bag, same config → same numbers).

Scored per bundle: the main run (the chosen strategy, with whatever the
recording and `--drop` windows left available) and, on the same prepared
bundle, every availability pattern × strategy of the robustness matrix
(`PATTERNS` × intermediate/late/auto; encoders and pre-processing are cached,
so the matrix costs fusion heads, not re-encoding). Each cell is also scored
inside the BEV coverage of the sensors it keeps, against the all-sensor
detections of the same strategy on that region (`regions`).

Ground truth (`/ground_truth/obstacles`) is matched to a bundle at its exact
stamp, else the nearest one within half a reference period, moved to the
bundle time with ego-motion and each box's velocity (watchdog bundles during
a LiDAR outage do not fall on GT stamps).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.late_fusion import move_to_time
from ..core.network_io import FUSED_MODALITIES
from ..core.rig import Rig
from ..core.types import NS_PER_S, CameraInfo, Image, ImuSample, Modality, Obstacles, Odometry, PointCloud
from ..runtime.engine import EngineOutput, EngineSettings, FusionEngine
from ..runtime.pipeline import FusionPipeline, ModePolicy, PipelineResult
from .detection_metrics import EvalConfig, evaluate
from .network_eval import PATTERNS, inside_coverage

GROUND_TRUTH_TOPIC = "/ground_truth/obstacles"
EVAL_STRATEGIES: tuple[str, ...] = ("intermediate", "late", "auto")
#: The node polls the synchroniser this many times per reference period (ros/fusion_node.POLL_PER_PERIOD).
POLL_PER_PERIOD = 4


def payload_digest(obj: Any) -> bytes | None:
    """Fingerprint of a decoded payload for frozen-data detection (the node hashes raw message bytes instead)."""
    if isinstance(obj, PointCloud):
        data = np.ascontiguousarray(obj.points).view(np.uint8)
    elif isinstance(obj, Image):
        data = np.ascontiguousarray(obj.data).view(np.uint8)
    elif isinstance(obj, ImuSample):
        data = np.concatenate([obj.angular_velocity, obj.linear_acceleration]).astype(np.float64)
    elif isinstance(obj, Odometry):
        data = np.concatenate([obj.position, obj.orientation, obj.linear_velocity, obj.angular_velocity])
    else:
        return None
    raw = memoryview(np.ascontiguousarray(data)).cast("B")
    if len(raw) == 0:
        return None
    return len(raw).to_bytes(8, "little") + zlib.crc32(raw).to_bytes(4, "little")


@dataclass(frozen=True)
class DropSpec:
    """Sensors withheld from fusion during [t0_s, t1_s) of drive time (``camera,radar@5-8``; no window = whole bag)."""

    sensors: tuple[str, ...]
    t0_s: float = -math.inf
    t1_s: float = math.inf

    def active(self, t_s: float) -> bool:
        return self.t0_s <= t_s < self.t1_s

    def __str__(self) -> str:
        win = "" if math.isinf(self.t0_s) and math.isinf(self.t1_s) else f"@{self.t0_s:g}-{self.t1_s:g}"
        return ",".join(self.sensors) + win


def parse_drop(text: str, rig: Rig) -> DropSpec:
    """``NAMES[@T0-T1]``: NAMES are modalities (camera, lidar, radar, imu, odometry) or sensor names of `rig`."""
    names_text, _, window = text.strip().partition("@")
    names = [n.strip() for n in names_text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--drop {text!r}: no sensor or modality named (e.g. camera@5-8)")
    sensors: list[str] = []
    modalities = {m.value for m in Modality}
    for n in names:
        if n in rig.sensors:
            sensors.append(n)
        elif n in modalities:
            found = [s.name for s in rig.of(Modality(n))]
            if not found:
                raise ValueError(f"--drop {text!r}: rig '{rig.name}' has no {n} sensor")
            sensors.extend(found)
        else:
            raise ValueError(f"--drop {text!r}: {n!r} is neither a modality ({', '.join(sorted(modalities))}) "
                             f"nor a sensor of rig '{rig.name}' ({', '.join(rig.sensors)})")
    if not window:
        return DropSpec(tuple(dict.fromkeys(sensors)))
    lo, sep, hi = window.partition("-")
    try:
        t0, t1 = float(lo), float(hi)
    except ValueError:
        raise ValueError(f"--drop {text!r}: window {window!r} is not START-END in seconds") from None
    if not sep or not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0 or t0 < 0:
        raise ValueError(f"--drop {text!r}: window must be START-END with 0 <= START < END")
    return DropSpec(tuple(dict.fromkeys(sensors)), t0, t1)


@dataclass
class BagEvalConfig:
    strategy: str = "auto"
    drops: Sequence[DropSpec] = ()
    robustness: bool = True
    patterns: Sequence[str] = tuple(PATTERNS)
    strategies: Sequence[str] = EVAL_STRATEGIES
    metrics: EvalConfig = field(default_factory=EvalConfig)
    max_bundles: int | None = None
    settings: EngineSettings = field(default_factory=EngineSettings)
    collect_single: bool = False  # keep each modality's own detections (for fitting score calibration)


@dataclass
class FrameRecord:
    """One bundle of the main run."""

    t_ns: int
    drive_s: float
    gt: Obstacles | None
    pred: Obstacles | None  # None: the pipeline failed on this bundle (counted)
    mode: str
    modalities: tuple[str, ...]
    timings_ms: dict[str, float]
    error: str = ""


@dataclass
class BagRun:
    """Everything one bag produced."""

    bag: str
    start_ns: int
    records: list[FrameRecord] = field(default_factory=list)
    variants: dict[tuple[str, str], list[tuple[Obstacles, Obstacles]]] = field(default_factory=dict)
    # (pattern, strategy) → (gt, pred, all-sensor pred) inside the kept sensors' coverage
    regions: dict[tuple[str, str], list[tuple[Obstacles, Obstacles, Obstacles]]] = field(default_factory=dict)
    switches: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped_by_request: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    wall_s: float = 0.0
    lidar_points: np.ndarray | None = None  # deskewed points of the showcase frame (for the BEV picture)
    showcase: FrameRecord | None = None
    singles: list[tuple[str, Obstacles, Obstacles]] = field(default_factory=list)  # (modality, gt, own detections)


def _nearest_gt(gts: dict[int, Obstacles], stamps: list[int], t_ns: int, tol_ns: int) -> Obstacles | None:
    if t_ns in gts:
        return gts[t_ns]
    if not stamps:
        return None
    k = int(np.searchsorted(stamps, t_ns))
    best = min((s for s in stamps[max(k - 1, 0):k + 1]), key=lambda s: abs(s - t_ns))
    return gts[best] if abs(best - t_ns) <= tol_ns else None


class _Feeder:
    """Feeds one bag's messages to an engine the way the node's callbacks and poll timer would.

    `poll` is what the poll timer calls (default `engine.poll`: bundles run through the
    pipeline); `eval/bag_dataset.py` passes `engine.poll_bundles` to get the bundles only.
    """

    def __init__(self, engine: FusionEngine, rig: Rig, on_output: Callable[[Any], None],
                 poll: Callable[[int], Iterable[Any]] | None = None) -> None:
        self.engine = engine
        self.on_output = on_output
        self.poll = poll if poll is not None else engine.poll
        self.topic_sensor: dict[str, str] = {}
        self.info_topic: dict[str, str] = {}
        for s in rig.sensors.values():
            self.topic_sensor[s.topic] = s.name
            if s.info_topic:
                self.info_topic[s.info_topic] = s.name
        ref = rig.sensors[engine.reference]
        self.tick_ns = max(int(NS_PER_S / ref.rate_hz / POLL_PER_PERIOD), 1)
        self.next_tick: int | None = None

    def advance(self, now_ns: int) -> None:
        """Timer ticks up to `now_ns` (exclusive), as the node's poll timer would have fired."""
        if self.next_tick is None:
            self.next_tick = now_ns
        if now_ns - self.next_tick > 10 * NS_PER_S:  # a gap or a jump: do not replay every tick
            self.next_tick = now_ns
        while self.next_tick < now_ns:
            for out in self.poll(self.next_tick):
                self.on_output(out)
            self.next_tick += self.tick_ns

    def message(self, topic: str, now_ns: int, payload: Any) -> str | None:
        if topic in self.info_topic and isinstance(payload, CameraInfo):
            self.engine.camera_info(self.info_topic[topic], payload)
            return None
        sensor = self.topic_sensor.get(topic)
        if sensor is None:
            return "unknown_topic"
        reason = self.engine.accept(sensor, payload, now_ns, payload_digest(payload))
        if reason is None:
            self.engine.prefetch(sensor, payload)  # what the node's worker does on arrival (pipelining)
        for out in self.poll(now_ns):
            self.on_output(out)
        return reason


def evaluate_bag(messages: Iterable[tuple[str, int, Any]], rig: Rig, pipeline: FusionPipeline,
                 config: BagEvalConfig, *, name: str = "", start_ns: int | None = None,
                 progress: Callable[[int], None] | None = None) -> BagRun:
    """Run one recording through a fresh engine around `pipeline` (see module docstring)."""
    engine = FusionEngine(rig, pipeline, config.settings)
    engine.keep_prepared = config.robustness or config.collect_single
    policies = ({(p, s): ModePolicy(pipeline.config) for p in config.patterns for s in config.strategies}
                if config.robustness else {})
    gts: dict[int, Obstacles] = {}
    gt_stamps: list[int] = []
    pending: list[EngineOutput] = []
    run = BagRun(name, int(start_ns) if start_ns is not None else 0)
    ref_period_ns = int(NS_PER_S / rig.sensors[engine.reference].rate_hz)
    t_wall = time.perf_counter()
    best_showcase = -1

    def score(out: EngineOutput, gt: Obstacles | None) -> None:
        nonlocal best_showcase
        res: PipelineResult | None = out.result
        drive_s = (out.bundle.t_ns - run.start_ns) / NS_PER_S
        rec = FrameRecord(out.bundle.t_ns, drive_s, gt, res.obstacles if res else None,
                          res.mode if res else "failed", res.modalities if res else (),
                          dict(res.timings_ms) if res else {}, out.error)
        run.records.append(rec)
        if res is not None and res.switch is not None:
            sw = res.switch
            run.switches.append({"t_s": round((sw.t_ns - run.start_ns) / NS_PER_S, 4), "from": sw.old,
                                 "to": sw.new, "reason": sw.reason})
        if gt is None or res is None:
            return
        prep = out.prepared
        if prep is None or prep.t_ns != out.bundle.t_ns:
            return
        if config.robustness:
            dets: dict[tuple[str, str], Obstacles] = {}
            for (p, s), pol in policies.items():
                r = pipeline.run(prep, keep=PATTERNS[p], strategy=s, policy=pol)
                run.variants.setdefault((p, s), []).append((gt, r.obstacles))
                dets[(p, s)] = r.obstacles
            cov = pipeline.coverage(prep)
            for p in dict.fromkeys(p for p, _ in dets):
                kept = prep.available & frozenset(PATTERNS[p])
                present = np.array([m in kept for m in FUSED_MODALITIES], np.float32)
                gt_in = inside_coverage(gt, cov, present)  # once per pattern, shared by its strategies
                for s in config.strategies:
                    if (p, s) in dets and ("all", s) in dets:
                        run.regions.setdefault((p, s), []).append(
                            (gt_in, inside_coverage(dets[(p, s)], cov, present),
                             inside_coverage(dets[("all", s)], cov, present)))
        if config.collect_single:
            for m in sorted(prep.available):
                run.singles.append((m, gt, pipeline.single_modality(prep, m)[0]))
        if len(prep.available) == 3 and len(gt) > best_showcase:
            best_showcase = len(gt)
            run.showcase = rec
            run.lidar_points = _showcase_points(prep)

    def on_output(out: EngineOutput) -> None:
        pending.append(out)

    def flush(final: bool) -> None:
        """Score outputs whose ground truth has arrived (GT is logged at or after its stamp)."""
        newest = gt_stamps[-1] if gt_stamps else None
        while pending:
            out = pending[0]
            t = out.bundle.t_ns
            if not final and (newest is None or newest < t + ref_period_ns // 2):
                break
            pending.pop(0)
            gt = _nearest_gt(gts, gt_stamps, t, ref_period_ns // 2)
            if gt is not None and gt.stamp_ns != t:
                gt = _gt_at(gt, t, pipeline)
            score(out, gt)

    feeder = _Feeder(engine, rig, on_output)
    drop_names = {s for d in config.drops for s in d.sensors}
    for topic, log_ns, payload in messages:
        run.messages += 1
        if run.start_ns == 0:
            run.start_ns = int(log_ns)
        if progress is not None:
            progress(log_ns)
        feeder.advance(int(log_ns))
        if topic == GROUND_TRUTH_TOPIC and isinstance(payload, Obstacles):
            gts[int(payload.stamp_ns)] = payload
            gt_stamps.append(int(payload.stamp_ns))
            if len(gt_stamps) > 1 and gt_stamps[-1] < gt_stamps[-2]:  # a loop: keep order for the search
                gt_stamps.sort()
            flush(False)
            continue
        sensor = feeder.topic_sensor.get(topic) or feeder.info_topic.get(topic)
        if sensor in drop_names and topic not in feeder.info_topic:
            t_s = (int(getattr(payload, "stamp_ns", log_ns)) - run.start_ns) / NS_PER_S
            if any(sensor in d.sensors and d.active(t_s) for d in config.drops):
                run.dropped_by_request[sensor] = run.dropped_by_request.get(sensor, 0) + 1
                continue
        feeder.message(topic, int(log_ns), payload)
        flush(False)
        if config.max_bundles is not None and len(run.records) >= config.max_bundles:
            break
    if feeder.next_tick is not None:  # let the last bundles reach their deadlines
        feeder.advance(feeder.next_tick + 2 * ref_period_ns)
    flush(True)
    run.counters = dict(engine.counters) | {f"pipeline.{k}": v for k, v in pipeline.counters.items()}
    run.rejected = {n: dict(h.rejected) for n, h in engine.health.sensors.items() if h.rejected}
    run.wall_s = time.perf_counter() - t_wall
    return run


def _gt_at(gt: Obstacles, t_ns: int, pipeline: FusionPipeline) -> Obstacles:
    """Ground truth at its own stamp moved to `t_ns` (ego-motion + each object's velocity)."""
    try:
        pose = pipeline.ego.relative_pose(int(gt.stamp_ns), int(t_ns))
    except ValueError:
        pose = np.eye(4)
    return move_to_time(gt, pose, (t_ns - gt.stamp_ns) / NS_PER_S, t_ns)


def _showcase_points(prep: Any) -> np.ndarray | None:
    """The bundle's first LiDAR cloud in base_link (not deskewed: a picture, not a measurement), ≤ ~40k points."""
    members = prep.members.get("lidar")
    if not members:
        return None
    spec, m = members[0]
    E = np.asarray(spec.extrinsic, np.float64)
    xyz = m.payload.xyz() @ E[:3, :3].T + E[:3, 3]
    return np.asarray(xyz[:: max(len(xyz) // 40000, 1)], np.float32)


# ----------------------------------------------------------------------------- metrics
def scored_frames(runs: Sequence[BagRun]) -> list[tuple[Obstacles, Obstacles]]:
    return [(r.gt, r.pred) for run in runs for r in run.records if r.gt is not None and r.pred is not None]


def max_output_gap_s(run: BagRun) -> float:
    """Longest time between two consecutive fused outputs (detections continue through a sensor drop)."""
    t = [r.t_ns for r in run.records if r.pred is not None]
    if len(t) < 2:
        return 0.0
    return float(np.max(np.diff(np.asarray(t, np.int64)))) / NS_PER_S


def collect_metrics(runs: Sequence[BagRun], config: BagEvalConfig) -> dict[str, Any]:
    """The metrics dict `eval.report.write_outputs` renders (sections as documented there)."""
    from .report import coverage_matrix, latency_stats, robustness_matrix

    cfg = config.metrics
    frames = scored_frames(runs)
    summary = evaluate(frames, cfg).summary() if frames else {}
    summary["n_frames"] = len(frames)
    per_mode: dict[str, dict[str, Any]] = {}
    modes = sorted({r.mode for run in runs for r in run.records})
    for mode in modes:
        fr = [(r.gt, r.pred) for run in runs for r in run.records
              if r.mode == mode and r.gt is not None and r.pred is not None]
        n = sum(1 for run in runs for r in run.records if r.mode == mode)
        per_mode[mode] = {"n_bundles": n, "n_frames": len(fr), "mAP": evaluate(fr, cfg).mean_ap if fr else None}
    out: dict[str, Any] = {
        "summary": summary,
        "per_mode": per_mode,
        "latency_ms": latency_stats([r.timings_ms for run in runs for r in run.records if r.timings_ms]),
        "mode_switches": [dict(s, bag=run.bag) for run in runs for s in run.switches],
        "bundles": {
            "total": sum(len(run.records) for run in runs),
            "failed": sum(1 for run in runs for r in run.records if r.pred is None),
            "with_ground_truth": len(frames),
            "max_output_gap_s": max((max_output_gap_s(run) for run in runs), default=0.0),
        },
        "counters": _sum_counters([run.counters for run in runs]),
        "rejected": {f"{run.bag}:{n}": v for run in runs for n, v in run.rejected.items()},
        "dropped_by_request": _sum_counters([run.dropped_by_request for run in runs]),
    }
    if config.robustness:
        variants: dict[tuple[str, str], list[tuple[Obstacles, Obstacles]]] = {}
        for run in runs:
            for k, v in run.variants.items():
                variants.setdefault(k, []).extend(v)
        if variants:
            out["robustness"] = robustness_matrix(variants, cfg)
        regions: dict[tuple[str, str], list[tuple[Obstacles, Obstacles, Obstacles]]] = {}
        for run in runs:
            for k, v in run.regions.items():
                regions.setdefault(k, []).extend(v)
        if regions:
            out["robustness_in_coverage"] = coverage_matrix(regions, cfg)
    return out


def _sum_counters(items: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in items:
        for k, v in d.items():
            total[k] = total.get(k, 0) + int(v)
    return dict(sorted(total.items()))


def fault_response(run: BagRun, faults: Sequence[Any], rig: Rig) -> list[dict[str, Any]]:
    """How fusion reacted to each injected fault of a fused sensor.

    `faults` are `sim.faults.FaultSpec`-like (kind, sensor, start_s, end_s) in drive seconds.
    excluded_after_s: from the fault's start to the first bundle fused without that sensor's
    modality (the fallback: masked intermediate or late, whichever the policy picks);
    included_after_s: from the fault's end to the first bundle that uses it again (hysteresis);
    mode_switch_after_s: the first change of fusion mode during the fault, if the policy changes it;
    max_gap_during_s: the longest pause between two outputs during the fault.
    Faults that do not take the sensor out (noise, a short delay) show None where nothing happened.
    """
    out = []
    for f in faults:
        spec = rig.sensors.get(f.sensor)
        if spec is None or spec.modality.value not in ("camera", "lidar", "radar"):
            continue
        mod = spec.modality.value
        recs = [r for r in run.records if r.pred is not None]
        before = [r.mode for r in recs if r.drive_s < f.start_s]
        excluded = next((r for r in recs if f.start_s <= r.drive_s < f.end_s and mod not in r.modalities), None)
        included = next((r for r in recs if r.drive_s >= f.end_s and mod in r.modalities), None) if excluded else None
        switch = next((s for s in run.switches if f.start_s <= s["t_s"] < f.end_s), None)
        during = [r for r in recs if f.start_s <= r.drive_s < f.end_s]
        gap = float(np.max(np.diff([r.t_ns for r in during]))) / NS_PER_S if len(during) > 1 else None
        modes_during = sorted({r.mode for r in during if mod not in r.modalities})
        out.append({
            "fault": str(f), "kind": f.kind, "sensor": f.sensor, "t0_s": f.start_s, "t1_s": f.end_s,
            "mode_before": before[-1] if before else None,
            "mode_during": ",".join(modes_during) if modes_during else (before[-1] if before else None),
            "excluded_after_s": None if excluded is None else round(excluded.drive_s - f.start_s, 4),
            "included_after_s": None if included is None else round(included.drive_s - f.end_s, 4),
            "mode_switch_after_s": None if switch is None else round(switch["t_s"] - f.start_s, 4),
            "max_gap_during_s": None if gap is None else round(gap, 4),
            "bag": run.bag,
        })
    return out
