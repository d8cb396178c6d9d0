"""FusionEngine: decoded sensor messages in → fused results out, with health, sync and ego-motion.

Why a class between the node and the pipeline: the live node and the offline
evaluator must make the *same* decisions — which message is rejected, when a
sensor turns stale, which messages form a bundle, which mode a bundle runs
in. All of that is state driven by (message, receive time); here it lives in
one ROS-free object. `ros/fusion_node.py` feeds it from subscriptions with
the node clock; `eval/bag_eval.py` feeds it from a bag with the recorded log
times. Nothing here knows about rclpy.

Per accepted message: stamp check against the stream (`core.health`), health
update with a payload digest (frozen data), IMU/odometry into ego-motion,
then the synchroniser. `poll(now)` emits the bundles that are complete (or
whose deadline or watchdog fired) and runs the pipeline on each, with only
the sensors the health monitor calls usable. A pipeline failure on one bundle
is caught, counted (`bundles_failed`) and reported — never raised.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.bev import intensity_scale_mismatch, rcs_scale_mismatch
from ..core.health import HealthMonitor, SensorHealth, SensorState, health_configs_from_rig
from ..core.rig import Rig
from ..core.sync import Bundle, BundleStats, Synchroniser, default_reference, stream_configs_from_rig
from ..core.types import CameraInfo, Modality
from .pipeline import FusionPipeline, PipelineResult

#: Bundles kept for latency percentiles in diagnostics.
STATS_WINDOW = 600


@dataclass
class EngineSettings:
    """The node parameters the engine needs (ros/params.py holds their descriptors and ranges)."""

    reference: str = ""
    watchdog: bool = True
    stale_timeout_factor: float = 3.0
    missing_timeout_s: float = 5.0
    rate_window_s: float = 5.0
    frozen_repeats: int = 3
    recover_count: int = 3
    max_future_ns: int = 500_000_000
    max_age_ns: int = 10_000_000_000
    pipelining: bool = True  # encode the reference sweep on arrival, while the bundle still waits

    @staticmethod
    def from_params(p: Any) -> EngineSettings:
        return EngineSettings(
            reference=p.sync_reference, watchdog=p.sync_watchdog, stale_timeout_factor=p.stale_timeout_factor,
            missing_timeout_s=p.missing_timeout_s, rate_window_s=p.rate_window_s, frozen_repeats=p.frozen_repeats,
            recover_count=p.recover_count, max_future_ns=p.max_future_ns, max_age_ns=p.max_age_ns,
            pipelining=p.pipelining,
        )


@dataclass
class EngineOutput:
    """One bundle and what fusion made of it (`result` None when the pipeline failed: `error` says why)."""

    bundle: Bundle
    result: PipelineResult | None
    error: str = ""
    processed_ns: int = 0
    prepared: Any = None  # the pipeline's PreparedBundle (cached inputs/features), for evaluation


@dataclass
class StageStats:
    """Rolling per-stage latency (ms) over the last `STATS_WINDOW` bundles."""

    samples: dict[str, deque] = field(default_factory=dict)

    def add(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            self.samples.setdefault(k, deque(maxlen=STATS_WINDOW)).append(float(v))

    def percentiles(self, q: Iterable[float] = (50, 99)) -> dict[str, dict[str, float]]:
        qs = list(q)
        return {k: {f"p{int(x)}": float(np.percentile(np.asarray(d), x)) for x in qs}
                for k, d in sorted(self.samples.items()) if d}


def frame_id_mismatch(frame_id: str | None, spec: Any) -> str | None:
    """Why a message's header.frame_id contradicts the rig's sensor, or None (an empty one is not judged:
    some drivers leave it unset)."""
    if not frame_id or frame_id.lstrip("/") == spec.frame_id.lstrip("/"):
        return None
    return (f"header.frame_id {frame_id!r} is not the rig's frame_id {spec.frame_id!r} for {spec.name}: the rig's "
            f"extrinsic for {spec.topic} is applied anyway; fix the rig (sensors.{spec.name}.frame_id) or the driver")


class FusionEngine:
    """See module docstring. `pipeline` may be None (sync + health only: no model configured)."""

    def __init__(self, rig: Rig, pipeline: FusionPipeline | None, settings: EngineSettings | None = None) -> None:
        s = settings or EngineSettings()
        self.rig = rig
        self.settings = s
        self.pipeline = pipeline
        self.reference = s.reference or default_reference(rig)
        if self.reference not in rig.sensors:
            raise ValueError(f"reference {self.reference!r} is not a sensor of rig '{rig.name}'")
        self.health = HealthMonitor(health_configs_from_rig(
            rig, s.stale_timeout_factor, s.missing_timeout_s, s.rate_window_s, s.frozen_repeats, s.recover_count))
        self.sync = Synchroniser(stream_configs_from_rig(rig, s.stale_timeout_factor), self.reference,
                                 watchdog=s.watchdog, max_future_ns=s.max_future_ns, max_age_ns=s.max_age_ns)
        self.bundle_stats = BundleStats(rig.sensors)
        if pipeline is not None:
            self.ego = pipeline.ego
        else:
            from ..core.ego_motion import PoseHistory
            self.ego = PoseHistory.from_rig(rig)
        self.stage_stats = StageStats()
        self.counters: Counter[str] = Counter()
        self.last_result: PipelineResult | None = None
        self.keep_prepared = False  # the offline evaluator re-scores bundles under other patterns
        self._epoch = 0

    # --- inputs ---------------------------------------------------------------------------
    def camera_info(self, sensor: str, info: CameraInfo) -> None:
        if self.pipeline is not None:
            self.pipeline.set_camera_info(sensor, info.intrinsics)

    def accept(self, sensor: str, obj: Any, now_ns: int, digest: bytes | None) -> str | None:
        """Take one decoded message; returns the rejection/drop reason (already counted) or None."""
        health: SensorHealth = self.health[sensor]
        reason = health.accept_stamp(obj.stamp_ns, now_ns, self.settings.max_future_ns, self.settings.max_age_ns)
        if reason is not None:
            health.on_reject(reason)
            return reason
        health.on_message(obj.stamp_ns, now_ns, digest)
        spec = self.rig.sensors[sensor]
        modality = spec.modality
        # The rig's extrinsic is applied by topic either way; a header naming another frame means the rig
        # or the driver is wrong, so say so (WARN, counted under warned.frame_id) rather than guess.
        health.on_input_check("frame_id", frame_id_mismatch(getattr(obj, "frame_id", None), spec))
        if modality is Modality.LIDAR:  # used either way (clipped); the rig may be wrong, so say so
            health.on_input_check("intensity_scale", intensity_scale_mismatch(obj, spec.intensity_max))
            health.on_input_check("empty", None if len(obj.points) else
                                  "an empty sweep (no points): the LiDAR sees nothing or its driver sends nothing")
            health.on_input_check("intensity_field", None if obj.has("intensity") or not len(obj.points) else
                                  "the cloud has no intensity field: read as 0, the network sees every return "
                                  "black; publish the driver's intensity")
        if modality is Modality.RADAR:
            health.on_input_check("rcs_scale", rcs_scale_mismatch(obj, spec.rcs_offset_db))
        if modality is Modality.IMU:
            if self.pipeline is not None:
                self.pipeline.add_imu(obj)  # bad samples are counted in ego.stats, never raised
            else:
                self.ego.add_imu(obj)
        elif modality is Modality.ODOMETRY:
            self.ego.add_odometry(obj)
        sync_reason = self.sync.add(sensor, obj.stamp_ns, now_ns, obj)
        if sync_reason is not None:  # accepted by health, refused by the synchroniser: counted
            health.on_drop("sync_" + sync_reason)
            return "sync_" + sync_reason
        return None

    def wants_prefetch(self, sensor: str) -> bool:
        """Whether an accepted message of `sensor` should be pre-processed now (pipelining, see `prefetch`)."""
        return self.settings.pipelining and self.pipeline is not None and sensor == self.reference

    def prefetch(self, sensor: str, obj: Any) -> None:
        """Run the reference sweep's own work ahead of its bundle; never raises (failures are counted)."""
        if not self.wants_prefetch(sensor):
            return
        try:
            self.pipeline.prefetch(sensor, obj)
        except Exception as e:  # noqa: BLE001 - the bundle will simply do the work itself
            self.counters[f"prefetch_failed.{type(e).__name__}"] += 1

    # --- outputs --------------------------------------------------------------------------
    def usable_sensors(self, t_ns: int) -> set[str]:
        """Sensors in OK state at bundle time `t_ns` (frozen data and the recovery hysteresis included).

        Evaluated at the bundle's time, not at emission: a bundle that waited for a late
        camera must not find its own LiDAR "silent" because of that wait. A sensor that
        went quiet before T is stale at T too, and is missing from the bundle anyway.
        """
        return {n for n, h in self.health.sensors.items() if h.update(t_ns) is SensorState.OK}

    def poll_bundles(self, now_ns: int) -> list[tuple[Bundle, set[str]]]:
        """Bundles ready at `now_ns`, each with the sensors usable at that instant (cheap: no inference).

        The node calls this on its executor thread and hands the bundles to its fusion worker;
        the usable set is fixed here so the decision does not depend on when the worker runs.
        """
        out = []
        for b in self.sync.poll(now_ns):
            self.bundle_stats.add(b)
            out.append((b, self.usable_sensors(b.t_ns)))
        return out

    def poll(self, now_ns: int) -> list[EngineOutput]:
        """`poll_bundles` + `process` each, in order (the offline evaluator's single-threaded path)."""
        return [self.process(b, usable, now_ns) for b, usable in self.poll_bundles(now_ns)]

    def process(self, b: Bundle, usable: set[str], now_ns: int = 0) -> EngineOutput:
        if self.pipeline is None:
            return EngineOutput(b, None, "no model", now_ns)
        if b.epoch != self._epoch:  # the synchroniser reset (bag loop / clock jump): so does the IMU window
            self._epoch = b.epoch
            with self.pipeline.lock:
                self.pipeline.imu.clear()
            self.counters["resets"] += 1
        try:
            res = self.pipeline.process(b, usable)
        except Exception as e:  # noqa: BLE001 - one bad bundle must not stop fusion; counted and reported
            self.counters["bundles_failed"] += 1
            self.counters[f"bundles_failed.{type(e).__name__}"] += 1
            return EngineOutput(b, None, f"{type(e).__name__}: {e}", now_ns)
        self.counters["bundles_fused"] += 1
        self.stage_stats.add(res.timings_ms)
        self.last_result = res
        return EngineOutput(b, res, "", now_ns, self.pipeline.last_prepared if self.keep_prepared else None)

    @property
    def mode(self) -> str:
        return self.pipeline.policy.mode if self.pipeline is not None else "none"
