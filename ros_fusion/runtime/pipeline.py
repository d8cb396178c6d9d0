"""FusionPipeline: one synchronised bundle in → obstacles out (DESIGN §8).

The live node (`ros/fusion_node.py`, through `runtime/engine.py`) and the
offline evaluator (`eval/bag_eval.py`) run this same object, so a number
measured offline is a number of the code that runs on the vehicle.

Per bundle:

1. **Mode** (`ModePolicy`): the fused modalities that are present in the
   bundle *and* healthy (the health monitor's hysteresis — `recover_count`
   healthy messages before a sensor that failed counts again — is what keeps
   the mode from flapping) decide it: none usable → ``none``; one →
   ``degraded``; two or more → the strategy: ``intermediate`` or ``late``
   forced, or ``auto``, which takes per availability pattern the strategy the
   robustness matrix found better (the model manifest's ``fusion.policy``
   table, measured on validation seeds) and falls back to ``late`` when a
   used member is further from T than ``max_sync_age_ms``.
2. **intermediate / degraded**: all data brought to T with ego-motion (LiDAR
   deskewed per point — the bundle's sweep and the one before it, remembered per
   LiDAR, as the network's two sweeps — radar moved and Doppler-compensated, camera pose at its
   own capture time), one pre-processing (`core.preprocess` — the training
   one), the encoders of the used modalities, one gated fusion + head, peak
   decoding; each detection carries the gate weights at its cell.
3. **late**: each modality alone at its *own* stamp t_m (no cross-sensor time
   alignment needed), through the same encoders and the same head with only
   that modality present, decoded, its scores calibrated, moved to T with
   ego-motion and each object's velocity, then merged class-aware by weighted
   box fusion (`core.late_fusion`); attribution = each modality's score share.

Every stage is timed per bundle (`PipelineResult.timings_ms`). Without ego-
motion (no IMU yet, or the history does not cover the bundle) the data is
used uncompensated (`StaticMotion`) and counted in `counters`, never silently.

For evaluation, `prepare` + `run` let one bundle be scored under several
availability patterns and strategies while pre-processing and encoders run
once (`PreparedBundle` caches them); `process` is prepare + run for the node.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import network_io as nio
from ..core.bev import BevGrid, normalised_intensity, radar_rcs_dbsm, tune_allocator
from ..core.centerhead import decode
from ..core.compensation import StaticMotion, compensate_radar, deskew_lidar
from ..core.doppler_ego import compensate_with_doppler
from ..core.ego_motion import OutOfHistory, PoseHistory
from ..core.late_fusion import FUSED_SOURCE, ScoreCalibration, WbfConfig, move_to_time, weighted_box_fusion
from ..core.point_times import point_times_ns
from ..core.preprocess import (
    MODALITY_INDEX,
    CameraFrame,
    Preprocessor,
    SensorFrame,
    drop_modalities,
    is_previous_sweep,
)
from ..core.rig import ConfigError, Rig, SensorSpec
from ..core.sync import Bundle, Member
from ..core.types import (
    DEFAULT_CLASSES,
    NS_PER_S,
    CameraIntrinsics,
    Image,
    ImuSample,
    Modality,
    Obstacles,
    Odometry,
    PointCloud,
)
from .geometric import GeometricConfig, detect_lidar, detect_radar

MODES: tuple[str, ...] = ("intermediate", "late", "degraded", "none")
STRATEGIES: tuple[str, ...] = ("auto", "intermediate", "late")
#: Detectors a pipeline can run: the network (needs a model bundle) and the training-free geometric one.
DETECTORS: tuple[str, ...] = ("network", "geometric")
GEOMETRIC_MODALITIES: tuple[str, ...] = ("lidar", "radar")
FEATURE_OUTPUT = {"camera": "camera_feat", "lidar": "lidar_feat", "radar": "radar_feat"}
RADAR_VELOCITY_FIELDS: tuple[str, ...] = ("v_r", "doppler", "velocity")


def pattern_key(modalities: Iterable[str]) -> str:
    """Canonical name of a set of fused modalities, e.g. ``camera+lidar`` (the policy table's keys)."""
    mods = sorted(set(modalities))
    return "+".join(mods) if mods else "none"


# ----------------------------------------------------------------------------- configuration
def parse_detectors(value: str | Iterable[str]) -> tuple[str, ...]:
    """``network``, ``geometric`` or both (``network+geometric``, a list) → canonical tuple; ConfigError otherwise."""
    names = value.replace(",", "+").split("+") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names if str(n).strip()]
    bad = [n for n in names if n not in DETECTORS]
    if bad or not names:
        raise ConfigError("detectors", f"{'+'.join(map(str, names)) or 'nothing'} is not network, geometric or "
                                       "network+geometric")
    return tuple(d for d in DETECTORS if d in names)


@dataclass
class PipelineConfig:
    """How the pipeline decides and decodes; `from_manifest` reads the model's own settings."""

    strategy: str = "auto"
    policy: dict[str, str] = field(default_factory=dict)  # pattern_key → intermediate|late (auto only)
    score_threshold: float = 0.1  # lowest score decoded and passed on
    #: The model's published operating point (manifest `fusion.score_threshold`, fitted on validation bags
    #: by `eval --fit-policy`): where its recall and false positives per frame are measured. The node
    #: publishes from it unless `score_threshold` is set; offline evaluation decodes lower for AP.
    operating_threshold: float | None = None
    top_k: int = 100
    max_sync_age_ms: float = 150.0
    wbf: WbfConfig = field(default_factory=WbfConfig)
    calibration: dict[str, ScoreCalibration] = field(default_factory=dict)
    imu_history_s: float = 1.0
    frame_id: str = "base_link"
    detectors: tuple[str, ...] = ("network",)
    geometric: GeometricConfig = field(default_factory=GeometricConfig)

    def check(self) -> None:
        self.detectors = parse_detectors(self.detectors)
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"{self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        for k, v in self.policy.items():
            if v not in ("intermediate", "late"):
                raise ConfigError(f"fusion.policy.{k}", f"{v!r} is not intermediate or late")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ConfigError("score_threshold", f"{self.score_threshold} is outside [0, 1)")
        if self.operating_threshold is not None and not 0.0 <= self.operating_threshold < 1.0:
            raise ConfigError("fusion.score_threshold", f"{self.operating_threshold} is outside [0, 1)")
        if self.top_k < 1:
            raise ConfigError("top_k", f"{self.top_k} must be >= 1")
        if not self.max_sync_age_ms > 0:
            raise ConfigError("max_sync_age_ms", f"{self.max_sync_age_ms} must be > 0")
        unknown = set(self.calibration) - set(nio.FUSED_MODALITIES)
        if unknown:
            raise ConfigError("fusion.calibration", f"unknown modalities {sorted(unknown)}")

    @staticmethod
    def from_manifest(raw: Mapping[str, Any] | None, **overrides: Any) -> PipelineConfig:
        """Settings from the manifest's optional ``fusion:`` block (policy table, score calibration, operating
        threshold), then overrides."""
        block = dict((raw or {}).get("fusion") or {})
        cfg = PipelineConfig()
        policy = block.get("policy") or {}
        if not isinstance(policy, dict):
            raise ConfigError("fusion.policy", "must be a mapping pattern → intermediate|late")
        cfg.policy = {str(k): str(v) for k, v in policy.items()}
        cal = block.get("calibration") or {}
        if not isinstance(cal, dict):
            raise ConfigError("fusion.calibration", "must be a mapping modality → {a, b}")
        try:
            cfg.calibration = {str(m): ScoreCalibration.from_dict(d) for m, d in cal.items()}
        except (TypeError, ValueError, KeyError) as e:
            raise ConfigError("fusion.calibration", str(e)) from None
        op = block.get("score_threshold")
        if op is not None:
            if isinstance(op, bool) or not isinstance(op, (int, float)):
                raise ConfigError("fusion.score_threshold", f"expected a number, got {op!r}")
            cfg.operating_threshold = float(op)
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise ConfigError(k, "not a pipeline setting")
            setattr(cfg, k, v)
        cfg.check()
        return cfg


# ----------------------------------------------------------------------------- network stages
@dataclass
class HeadOutput:
    heatmap: np.ndarray  # (C, H, W)
    regression: np.ndarray  # (R, H, W)
    gates: np.ndarray  # (3, H, W)
    logits: bool = True


def _zeros_of(model: Any, stage: str, name: str) -> np.ndarray:
    spec = next(s for s in model.stages[stage].outputs if s.name == name)
    return np.zeros([1] + [int(d) for d in spec.shape[1:]], np.float32)


class StageRunner:
    """The exported network's stages through a backend: one encoder per modality, the IMU MLP, fusion + head.

    An absent modality's encoder is not run; the fusion stage gets zeros for it
    and `present`/`coverage` exclude it from the gate softmax (DESIGN §7).
    """

    def __init__(self, backend: Any, model: Any) -> None:
        self.backend = backend
        self.model = model
        self._zeros = {m: _zeros_of(model, m, FEATURE_OUTPUT[m]) for m in nio.FUSED_MODALITIES}

    def describe(self) -> str:
        return str(self.backend.describe())

    def encode_one(self, modality: str, inputs: nio.NetworkInputs) -> np.ndarray:
        a = inputs.arrays
        if modality == "lidar":
            return self.encode_lidar(a["lidar_bev"])
        if modality == "radar":
            return self.backend.run("radar", {"radar_bev": a["radar_bev"][None]})["radar_feat"]
        if modality == "camera":
            return self.backend.run("camera", {"images": a["images"][None], "cam_grid": a["cam_grid"][None],
                                               "cam_valid": a["cam_valid"][None]})["camera_feat"]
        raise ValueError(f"unknown modality {modality!r}")

    def encode_lidar(self, lidar_bev: np.ndarray) -> np.ndarray:
        return self.backend.run("lidar", {"lidar_bev": lidar_bev[None]})["lidar_feat"]

    def imu(self, inputs: nio.NetworkInputs) -> np.ndarray:
        return self.backend.run("imu", {"imu": inputs.arrays["imu"][None]})["imu_emb"]

    def encode(self, inputs: nio.NetworkInputs) -> dict[str, np.ndarray | None]:
        """Features of each fused modality `inputs` has (None where absent) and the IMU embedding (key ``imu``)."""
        present = inputs.arrays["present"]
        feats: dict[str, np.ndarray | None] = dict.fromkeys(nio.FUSED_MODALITIES)
        for m in nio.FUSED_MODALITIES:
            if present[MODALITY_INDEX[m]] > 0:
                feats[m] = self.encode_one(m, inputs)
        feats["imu"] = self.imu(inputs)
        return feats

    def fuse(self, feats: Mapping[str, np.ndarray | None], masked: nio.NetworkInputs) -> HeadOutput:
        """Fusion + head on `masked` inputs; a modality absent there gets zeros whatever `feats` holds."""
        present = masked.arrays["present"]
        feed = {}
        for m in nio.FUSED_MODALITIES:
            f = feats.get(m)
            feed[FEATURE_OUTPUT[m]] = f if (f is not None and present[MODALITY_INDEX[m]] > 0) else self._zeros[m]
        feed["imu_emb"] = feats["imu"]
        feed["coverage"] = masked.arrays["coverage"][None]
        feed["present"] = present[None]
        out = self.backend.run("fusion_head", feed)
        return HeadOutput(out["heatmap"][0], out["regression"][0], out["gates"][0], logits=True)


# ----------------------------------------------------------------------------- mode policy
@dataclass
class ModeSwitch:
    t_ns: int
    old: str
    new: str
    reason: str


class ModePolicy:
    """Chooses the fusion mode of each bundle and records every switch (DESIGN §8).

    Stateless in its decision (hysteresis lives in the sensor health that
    decides what is usable), stateful only to report switches.
    """

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.mode = "none"
        self.started = False
        self.switches: list[ModeSwitch] = []
        self.counts: Counter[str] = Counter()

    def decide(self, usable: frozenset[str], out_of_sync: bool, strategy: str | None = None) -> tuple[str, str]:
        """(mode, reason) for a bundle whose usable fused modalities are `usable`."""
        strategy = strategy or self.config.strategy
        if not usable:
            return "none", "no usable modality"
        if len(usable) == 1:
            return "degraded", f"only {next(iter(usable))}"
        key = pattern_key(usable)
        if strategy != "auto":
            return strategy, f"strategy {strategy}"
        if out_of_sync:
            return "late", f"a member of {key} is more than {self.config.max_sync_age_ms:g} ms from T"
        chosen = self.config.policy.get(key, "intermediate")
        return chosen, f"policy for {key}"

    def step(self, t_ns: int, usable: frozenset[str], out_of_sync: bool, strategy: str | None = None
             ) -> tuple[str, ModeSwitch | None]:
        mode, reason = self.decide(usable, out_of_sync, strategy)
        switch = None
        if self.started and mode != self.mode:
            switch = ModeSwitch(int(t_ns), self.mode, mode, reason)
            self.switches.append(switch)
        self.started = True
        self.mode = mode
        self.counts[mode] += 1
        return mode, switch


# ----------------------------------------------------------------------------- results
@dataclass
class PipelineResult:
    """What one bundle produced: obstacles at T, how (mode, modalities) and how long each stage took."""

    stamp_ns: int
    obstacles: Obstacles
    mode: str
    modalities: tuple[str, ...]  # fused modalities used
    available: tuple[str, ...]  # fused modalities present and healthy in the bundle
    timings_ms: dict[str, float]
    switch: ModeSwitch | None = None
    reason: str = ""


@dataclass
class _Timer:
    out: dict[str, float]

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        r = fn()
        self.out[name] = self.out.get(name, 0.0) + (time.perf_counter() - t0) * 1e3
        return r


@dataclass
class PreparedBundle:
    """One bundle with its lazily computed, cached pre-processing and encoder outputs."""

    bundle: Bundle
    t_ns: int
    members: dict[str, list[tuple[SensorSpec, Member]]]  # fused modality → (sensor, member), rig order
    available: frozenset[str]
    out_of_sync: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the pipeline
class FusionPipeline:
    """Bundle → obstacles for one rig and one model (see module docstring)."""

    def __init__(self, rig: Rig, model: Any, backend: Any, config: PipelineConfig | None = None,
                 grid: BevGrid | None = None) -> None:
        self.rig = rig
        self.model = model
        self.config = config or PipelineConfig.from_manifest(getattr(model, "raw", None))
        self.config.check()
        # Without a model the pipeline still compensates and pre-processes (`network_inputs`):
        # that is how datasets are made from recorded bags, with the code inference uses.
        self.stages: StageRunner | None = StageRunner(backend, model) if model is not None else None
        self.classes: tuple[str, ...] = tuple(model.classes) if model is not None else DEFAULT_CLASSES
        self.network = "network" in self.config.detectors
        self.geometric = "geometric" in self.config.detectors
        if self.network and self.stages is None and self.config.detectors != ("network",):
            raise ConfigError("detectors", "network needs a model bundle; use detectors geometric without one")
        self.pre = Preprocessor(rig, grid)
        self.grid = self.pre.grid
        self.ego = PoseHistory.from_rig(rig)
        self.policy = ModePolicy(self.config)
        self.counters: Counter[str] = Counter()
        self.intrinsics: dict[str, CameraIntrinsics] = {
            s.name: s.intrinsics for s in rig.of(Modality.CAMERA) if s.intrinsics is not None}
        imus = rig.of(Modality.IMU)
        cap = int(max((s.rate_hz for s in imus), default=400.0) * self.config.imu_history_s) + 8
        self.imu: deque[ImuSample] = deque(maxlen=cap)
        self._fused = {s.name: s.modality.value for s in rig.sensors.values()
                       if s.modality.value in nio.FUSED_MODALITIES}
        self._static = StaticMotion()
        self.last_prepared: PreparedBundle | None = None
        # Pipelining: reference sweeps rasterised + encoded on arrival, keyed (sensor, stamp).
        self._prefetched: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, dict[str, float]]] = {}
        # The last few sweeps of each LiDAR (raw, by stamp): the sweep before a bundle's is the
        # network's second LiDAR sweep (`network_io.LIDAR_SWEEPS`), deskewed to the bundle's T.
        self._sweeps: dict[str, dict[int, PointCloud]] = {}
        # The last Doppler ego fit per radar, keyed (stamp, detections): the network and the geometric
        # detector both compensate the same scan, and the fit is the costly part (~15 ms).
        self._doppler: dict[str, tuple[tuple[int, int], np.ndarray | None]] = {}
        # The node feeds IMU/odometry from its executor thread while a worker thread fuses: every
        # access to the pose history and the IMU buffer holds this lock (a few ms at most).
        self.lock = threading.RLock()
        tune_allocator()

    # --- inputs that are not bundled ---------------------------------------------------
    def add_imu(self, sample: ImuSample) -> bool:
        with self.lock:
            ok = self.ego.add_imu(sample)
            if ok:
                self.imu.append(sample)
        return ok

    def add_odometry(self, odo: Odometry) -> bool:
        with self.lock:
            return self.ego.add_odometry(odo)

    def set_camera_info(self, camera: str, intrinsics: CameraIntrinsics) -> None:
        """Intrinsics from CameraInfo win over the rig file's (DESIGN §4)."""
        if camera in self.intrinsics or camera in self.rig.sensors:
            self.intrinsics[camera] = intrinsics

    def prefetch(self, sensor: str, cloud: PointCloud) -> bool:
        """Pipelining: deskew, rasterise and encode a LiDAR sweep now, for the bundle it will trigger.

        A reference-triggered bundle has T = the sweep's stamp, so its LiDAR work does not
        depend on the other sensors and can run while the synchroniser still waits for them;
        `process` then finds it here (keyed by sensor and stamp). Only for rigs with one
        LiDAR (with several, the raster is of their union). Returns whether it was done.
        """
        spec = self.rig.sensors.get(sensor)
        if (spec is None or self.stages is None or self._fused.get(sensor) != "lidar"
                or len(self.rig.of(Modality.LIDAR)) != 1):
            return False
        T = int(cloud.stamp_ns)
        timings: dict[str, float] = {}
        timer = _Timer(timings)
        member = Member(T, T, cloud, 0)
        xyz, inten, pxyz, pinten = timer("compensate.lidar", lambda: self._lidar_at([(spec, member)], T, None))
        raster = timer("preprocess.lidar", lambda: self.pre.lidar_input(xyz, inten, pxyz, pinten))
        feat = timer("encode.lidar", lambda: self.stages.encode_lidar(raster))
        self._prefetched[(sensor, T)] = (raster, feat, timings)
        while len(self._prefetched) > 4:
            self._prefetched.pop(next(iter(self._prefetched)))
        return True

    def _prefetched_lidar(self, prep: PreparedBundle) -> tuple[np.ndarray, np.ndarray, dict[str, float]] | None:
        members = prep.members.get("lidar", [])
        if len(members) != 1:
            return None
        spec, m = members[0]
        if int(m.stamp_ns) != prep.t_ns:
            return None
        return self._prefetched.get((spec.name, prep.t_ns))

    @contextmanager
    def scratch(self) -> Iterator[FusionPipeline]:
        """Bundles run inside leave no trace: the policy (mode, switches, counts), the counters, the
        remembered sweeps and the prefetched rasters are put back afterwards (the warm-up uses it)."""
        saved = (self.policy, self.counters.copy(), {k: dict(v) for k, v in self._sweeps.items()},
                 dict(self._prefetched), self.last_prepared)
        try:
            yield self
        finally:
            self.policy, counters, sweeps, prefetched, self.last_prepared = saved
            self.counters.clear()
            self.counters.update(counters)
            self._sweeps.clear()
            self._sweeps.update(sweeps)
            self._prefetched.clear()
            self._prefetched.update(prefetched)

    def reset(self) -> None:
        """Forget motion and IMU history (bag loop / time jump: the synchroniser reset too)."""
        with self.lock:
            self.ego.reset()
            self.imu.clear()
        self._sweeps.clear()
        self._doppler.clear()

    # --- per bundle ---------------------------------------------------------------------
    def prepare(self, bundle: Bundle, usable_sensors: Iterable[str] | None = None) -> PreparedBundle:
        """Group the bundle's members by fused modality, keeping only sensors in `usable_sensors` (None: all)."""
        allowed = None if usable_sensors is None else set(usable_sensors)
        members: dict[str, list[tuple[SensorSpec, Member]]] = {}
        limit = int(self.config.max_sync_age_ms * 1e6)
        out_of_sync = False
        for name in self.rig.sensors:
            m = bundle.members.get(name)
            modality = self._fused.get(name)
            if m is None or modality is None or (allowed is not None and name not in allowed):
                continue
            if modality == "camera" and self.intrinsics.get(name) is None:
                self.counters["camera_without_intrinsics"] += 1
                continue
            members.setdefault(modality, []).append((self.rig.sensors[name], m))
            out_of_sync |= abs(int(bundle.t_ns) - int(m.stamp_ns)) > limit
        return PreparedBundle(bundle, int(bundle.t_ns), members, frozenset(members), out_of_sync)

    def network_inputs(self, bundle: Bundle, usable_sensors: Iterable[str] | None = None) -> nio.NetworkInputs:
        """The network's inputs for a bundle, everything brought to its time T (no model needed)."""
        return self._inputs_at_t(self.prepare(bundle, usable_sensors))

    def process(self, bundle: Bundle, usable_sensors: Iterable[str] | None = None) -> PipelineResult:
        """Prepare + run with the pipeline's own policy: what the live node calls per bundle."""
        t0 = time.perf_counter()
        prep = self.prepare(bundle, usable_sensors)
        self.last_prepared = prep  # the evaluator scores other patterns/strategies on it (cached work)
        res = self.run(prep)
        res.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return res

    def run(self, prep: PreparedBundle, *, keep: Iterable[str] | None = None, strategy: str | None = None,
            policy: ModePolicy | None = None) -> PipelineResult:
        """Detections of a prepared bundle with only the modalities in `keep` (None: all available)."""
        if self.network and self.stages is None:
            raise RuntimeError("this FusionPipeline has no model: it only pre-processes (network_inputs)")
        policy = policy or self.policy
        usable = prep.available if keep is None else prep.available & frozenset(keep)
        if not self.network:  # the geometric detector alone: its sources are always merged late
            strategy = "late"
        mode, switch = policy.step(prep.t_ns, usable, prep.out_of_sync, strategy)
        reason = policy.switches[-1].reason if switch else ""
        timings: dict[str, float] = {}
        timer = _Timer(timings)
        if mode == "none":
            obs = Obstacles.empty(prep.t_ns, self.config.frame_id)
        elif mode == "late" or not self.network:
            obs = self._late(prep, usable, timer)
        elif self.geometric and usable & set(GEOMETRIC_MODALITIES):
            obs = self._merge(prep, usable, {FUSED_SOURCE: self._at_t(prep, usable, timer)}, timer)
        else:
            obs = self._at_t(prep, usable, timer)
        for k, v in prep.timings_ms.items():  # shared work (pre-processing, encoders) done for this bundle
            timings.setdefault(k, v)
        return PipelineResult(prep.t_ns, obs, mode, tuple(sorted(usable)), tuple(sorted(prep.available)),
                              timings, switch, reason)

    # --- intermediate / degraded ----------------------------------------------------------
    def _with_motion(self, lo_ns: int, hi_ns: int, fn: Callable[[Any], Any]) -> Any:
        """`fn(motion)` with the pose history checked and queried under one hold of the lock.

        Checking coverage and then querying in two steps raced with the executor thread:
        an IMU restart between them made the query fall outside the history (found by the
        live node test). Without coverage, or if a query still fails, `fn` gets
        `StaticMotion` (no compensation), counted per reason.
        """
        with self.lock:
            why = self.ego.check(int(lo_ns), int(hi_ns))
            if why is not None:
                self.counters[f"ego_unavailable.{why}"] += 1
                return fn(self._static)
            try:
                return fn(self.ego)
            except OutOfHistory:
                self.counters["ego_unavailable.out_of_history"] += 1
                return fn(self._static)

    def _remember_sweep(self, spec: SensorSpec, cloud: PointCloud) -> PointCloud | None:
        """Keep `cloud` as a recent sweep of `spec`; return the sweep before it, if there is one.

        Sweeps are remembered whenever the pipeline sees them (prefetch, bundles, late fusion),
        keyed by stamp, so repeated or out-of-order calls give the same answer. The previous
        sweep must be the one just before (`is_previous_sweep`): after a gap it is left out.
        """
        seen = self._sweeps.setdefault(spec.name, {})
        stamp = int(cloud.stamp_ns)
        new = stamp not in seen
        if self.rig.still_frames:  # snapshots: the sweep before belongs to another scene
            if new:
                seen[stamp] = cloud
                while len(seen) > 4:
                    del seen[min(seen)]
                self.counters["lidar_still_frames"] += 1
            return None
        seen[stamp] = cloud
        while len(seen) > 4:
            del seen[min(seen)]
        t_prev = max((t for t in seen if t < stamp), default=None)
        if t_prev is not None and is_previous_sweep(t_prev, stamp, spec.period_s):
            return seen[t_prev]
        if new:
            self.counters["lidar_without_previous_sweep"] += 1
        return None

    def _deskew(self, spec: SensorSpec, cloud: PointCloud, T: int) -> np.ndarray:
        times = point_times_ns(cloud)
        lo = int(times.min()) if times is not None and len(times) else int(cloud.stamp_ns)
        hi = int(times.max()) if times is not None and len(times) else int(cloud.stamp_ns)

        def deskew(motion: Any) -> Any:
            return deskew_lidar(cloud.xyz(), times, T, motion, spec.extrinsic, stamp_ns=int(cloud.stamp_ns))

        return np.asarray(self._with_motion(min(lo, T), max(hi, T), deskew), np.float32)

    def _lidar_at(self, members: list[tuple[SensorSpec, Member]], T: int, prep: PreparedBundle | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The members' sweeps and the sweeps before them, all deskewed into base_link at T.

        Returns (xyz, intensity, prev_xyz, prev_intensity); the previous pair is None when no
        member has a previous sweep (start, after a gap or a reset).
        """
        xyz_parts, inten_parts, prev_xyz, prev_inten = [], [], [], []
        for spec, m in members:
            cloud: PointCloud = m.payload
            prev = self._remember_sweep(spec, cloud)
            xyz_parts.append(self._deskew(spec, cloud, T))
            inten_parts.append(normalised_intensity(cloud, spec.intensity_max))
            if prev is not None:
                prev_xyz.append(self._deskew(spec, prev, T))
                prev_inten.append(normalised_intensity(prev, spec.intensity_max))
        if not prev_xyz:
            return np.concatenate(xyz_parts), np.concatenate(inten_parts), None, None
        return (np.concatenate(xyz_parts), np.concatenate(inten_parts), np.concatenate(prev_xyz),
                np.concatenate(prev_inten))

    def _radar_at(self, members: list[tuple[SensorSpec, Member]], T: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xyz_parts, rcs_parts, v_parts = [], [], []
        for spec, m in members:
            scan: PointCloud = m.payload
            vfield = next((f for f in RADAR_VELOCITY_FIELDS if scan.has(f)), None)
            rcs = radar_rcs_dbsm(scan, spec.rcs_offset_db)
            if vfield is None:
                self.counters["radar_without_velocity"] += 1
                v_r = np.zeros(len(scan.points))
            else:
                v_r = np.asarray(scan.points[vfield], np.float64)

            def comp(motion: Any, scan: PointCloud = scan, v_r: np.ndarray = v_r, spec: SensorSpec = spec) -> tuple:
                return (*compensate_radar(scan.xyz(), v_r, int(scan.stamp_ns), T, motion, spec.extrinsic),
                        motion is self._static)

            xyz, v_comp, static = self._with_motion(min(int(scan.stamp_ns), T), max(int(scan.stamp_ns), T), comp)
            if static and scan.has("v_r_comp"):  # the driver's own compensation is better than none
                v_comp = np.asarray(scan.points["v_r_comp"], np.float64)
            elif static and vfield is not None and len(v_r):
                v_comp = self._doppler_compensated(spec, scan, v_r, v_comp)
            xyz_parts.append(xyz)
            rcs_parts.append(rcs)
            v_parts.append(v_comp)
        return np.concatenate(xyz_parts), np.concatenate(rcs_parts), np.concatenate(v_parts)

    def _doppler_compensated(self, spec: SensorSpec, scan: PointCloud, v_r: np.ndarray,
                             fallback: np.ndarray) -> np.ndarray:
        """Without an ego-motion source: v_r over ground from the scan's own Doppler (`core.doppler_ego`),
        or `fallback` (raw) when the scan has too few stationary detections to tell; both counted once per scan."""
        key = (int(scan.stamp_ns), len(v_r))
        cached = self._doppler.get(spec.name)
        if cached is not None and cached[0] == key:
            return fallback if cached[1] is None else cached[1]
        comp, est = compensate_with_doppler(scan.xyz(), v_r, spec.extrinsic, interval=spec.velocity_interval_mps)
        self._doppler[spec.name] = (key, None if est is None else comp)
        if est is None:
            self.counters["radar_doppler_ego_failed"] += 1
            return fallback
        self.counters["radar_doppler_ego"] += 1
        return comp

    def _cameras_at(self, members: list[tuple[SensorSpec, Member]], T: int) -> list[CameraFrame | None]:
        by_name = {spec.name: (spec, m) for spec, m in members}
        out: list[CameraFrame | None] = []
        for name in self.pre.camera_names:
            if name not in by_name:
                out.append(None)
                continue
            spec, m = by_name[name]
            img: Image = m.payload
            pose = self._with_motion(min(int(img.stamp_ns), T), max(int(img.stamp_ns), T),
                                     lambda motion, img=img: motion.relative_pose(int(img.stamp_ns), T))
            out.append(CameraFrame(img.data, self.intrinsics[name], spec.extrinsic, pose, img.encoding, name))
        return out

    def _frame(self, prep: PreparedBundle, modalities: Iterable[str], T: int) -> SensorFrame:
        with self.lock:
            imu = list(self.imu)
        frame = SensorFrame(stamp_ns=T, imu=imu)
        for mod in modalities:
            members = prep.members[mod]
            if mod == "lidar":
                ready = self._prefetched_lidar(prep) if T == prep.t_ns else None
                if ready is not None:
                    frame.lidar_bev = ready[0]
                    continue
                (frame.lidar_xyz, frame.lidar_intensity, frame.lidar_prev_xyz,
                 frame.lidar_prev_intensity) = self._lidar_at(members, T, prep)
            elif mod == "radar":
                frame.radar_xyz, frame.radar_rcs, frame.radar_v_comp = self._radar_at(members, T)
                frame.radar_sensors = [spec.name for spec, _ in members]
            elif mod == "camera":
                frame.cameras = self._cameras_at(members, T)
        return frame

    def coverage(self, prep: PreparedBundle) -> np.ndarray:
        """(M, FEAT, FEAT) BEV field of view of each fused modality at the bundle's T (for scoring by region)."""
        return self._inputs_at_t(prep).arrays["coverage"]

    def _inputs_at_t(self, prep: PreparedBundle) -> nio.NetworkInputs:
        key = ("inputs", "T")
        if key not in prep.cache:
            timer = _Timer(prep.timings_ms)
            frame = timer("compensate", lambda: self._frame(prep, sorted(prep.available), prep.t_ns))
            prep.cache[key] = timer("preprocess", lambda: self.pre.build(frame))
        return prep.cache[key]

    def _features(self, prep: PreparedBundle, where: Any, inputs: nio.NetworkInputs, modalities: Iterable[str]
                  ) -> dict[str, np.ndarray | None]:
        timer = _Timer(prep.timings_ms)
        feats: dict[str, np.ndarray | None] = dict.fromkeys(nio.FUSED_MODALITIES)
        for m in modalities:
            key = ("feat", where, m)
            if key not in prep.cache and where == "T" and m == "lidar":
                ready = self._prefetched_lidar(prep)
                if ready is not None:
                    prep.cache[key] = ready[1]
                    prep.timings_ms["prefetched.lidar"] = sum(ready[2].values())
            if key not in prep.cache:
                prep.cache[key] = timer(f"encode.{m}", lambda m=m: self.stages.encode_one(m, inputs))
            feats[m] = prep.cache[key]
        key = ("feat", where, "imu")
        if key not in prep.cache:
            prep.cache[key] = timer("encode.imu", lambda: self.stages.imu(inputs))
        feats["imu"] = prep.cache[key]
        return feats

    def _at_t(self, prep: PreparedBundle, usable: frozenset[str], timer: _Timer) -> Obstacles:
        inputs = self._inputs_at_t(prep)
        masked = inputs if usable == prep.available else drop_modalities(inputs, sorted(usable))
        feats = self._features(prep, "T", inputs, sorted(usable))
        head = timer("fusion_head", lambda: self.stages.fuse(feats, masked))
        return timer("decode", lambda: self._decode(head, prep.t_ns))

    def _decode(self, head: HeadOutput, stamp_ns: int) -> Obstacles:
        return decode(head.heatmap, head.regression, stamp_ns=stamp_ns, frame_id=self.config.frame_id,
                      grid=self.grid, score_threshold=self.config.score_threshold, top_k=self.config.top_k,
                      logits=head.logits, gates=head.gates)

    # --- late -------------------------------------------------------------------------------
    def _modality_stamp(self, prep: PreparedBundle, modality: str) -> int:
        """The stamp one modality is processed at in late fusion: its newest member's capture time."""
        return max(int(m.stamp_ns) for _, m in prep.members[modality])

    def single_modality(self, prep: PreparedBundle, modality: str) -> tuple[Obstacles, np.ndarray]:
        """One modality alone at its own stamp, decoded, calibrated and moved to T; plus its BEV coverage."""
        key = ("late", modality)
        if key in prep.cache:
            return prep.cache[key]
        timer = _Timer(prep.timings_ms)
        t_m = self._modality_stamp(prep, modality)
        frame = timer(f"late.compensate.{modality}", lambda: self._frame(prep, [modality], t_m))
        inputs = timer(f"late.preprocess.{modality}", lambda: self.pre.build(frame))
        feats = self._features(prep, ("own", modality), inputs, [modality])
        head = timer(f"late.fusion_head.{modality}", lambda: self.stages.fuse(feats, inputs))
        obs = timer(f"late.decode.{modality}", lambda: self._decode(head, t_m))
        cal = self.config.calibration.get(modality)
        if cal is not None and len(obs):
            obs.scores = np.asarray(cal(obs.scores), np.float32)
        pose = self._with_motion(min(t_m, prep.t_ns), max(t_m, prep.t_ns),
                                 lambda motion: motion.relative_pose(t_m, prep.t_ns))
        moved = move_to_time(obs, pose, (prep.t_ns - t_m) / NS_PER_S, prep.t_ns)
        coverage = inputs.arrays["coverage"][MODALITY_INDEX[modality]]
        prep.cache[key] = (moved, coverage)
        return prep.cache[key]

    def _coverage_fn(self, cov: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        grid = self.grid

        def covers(xy: np.ndarray) -> np.ndarray:
            xy = np.asarray(xy, np.float64).reshape(-1, 2)
            i, j = grid.cell_index(xy[:, 0], xy[:, 1], grid.stride)
            ok = grid.in_grid(xy[:, 0], xy[:, 1])
            out = np.zeros(len(xy), bool)
            out[ok] = cov[i[ok], j[ok]] > 0
            return out

        return covers

    def _late(self, prep: PreparedBundle, usable: frozenset[str], timer: _Timer) -> Obstacles:
        dets: dict[str, Obstacles] = {}
        if self.network:
            for m in sorted(usable):
                dets[m], _ = self.single_modality(prep, m)
        return self._merge(prep, usable, dets, timer)

    def _merge(self, prep: PreparedBundle, usable: frozenset[str], dets: dict[str, Obstacles], timer: _Timer
               ) -> Obstacles:
        """Weighted box fusion of the network's sources in `dets` and, when enabled, the geometric detector's.

        Coverage per source: a network modality's from its own inputs, ``fused`` the union of the used
        modalities', the geometric LiDAR source the LiDARs'. The geometric radar source reports moving objects
        only, so its silence is no evidence against a parked car: it is expected only where it contributes.
        """
        expected: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        for src in dets:
            if src == FUSED_SOURCE:
                cov = self._inputs_at_t(prep).arrays["coverage"]
                idx = [MODALITY_INDEX[m] for m in sorted(usable)]
                expected[src] = self._coverage_fn(cov[idx].max(axis=0))
            else:
                expected[src] = self._coverage_fn(self.single_modality(prep, src)[1])
        if self.geometric:
            for m in GEOMETRIC_MODALITIES:
                if m in usable:
                    dets[f"{m}.geometric"], cov = self.geometric_single(prep, m)
                    expected[f"{m}.geometric"] = (self._coverage_fn(cov) if m == "lidar"
                                                  else (lambda xy: np.zeros(len(xy), bool)))
        if not dets:
            return Obstacles.empty(prep.t_ns, self.config.frame_id)
        cfg = self.config.wbf
        return timer("late.merge", lambda: weighted_box_fusion(dets, prep.t_ns, cfg, expected=expected))

    # --- geometric ----------------------------------------------------------------------------
    def geometric_single(self, prep: PreparedBundle, modality: str) -> tuple[Obstacles, np.ndarray]:
        """The geometric detector on one modality (LiDAR or radar) at its own stamp, moved to T; plus the
        static BEV coverage of the sensors used. Cached per prepared bundle like `single_modality`."""
        key = ("geometric", modality)
        if key in prep.cache:
            return prep.cache[key]
        timer = _Timer(prep.timings_ms)
        t_m = self._modality_stamp(prep, modality)
        members = prep.members[modality]
        cfg, classes = self.config.geometric, self.classes
        if modality == "lidar":
            def lidar() -> Obstacles:
                xyz = np.concatenate([self._deskew(spec, m.payload, t_m) for spec, m in members])
                origin = np.mean([spec.extrinsic[:2, 3] for spec, _ in members], axis=0)
                return detect_lidar(xyz, None, t_m, cfg, classes, origin=origin)

            obs = timer("geometric.lidar", lidar)
            coverage = self.pre.lidar_coverage
        else:
            def radar() -> Obstacles:
                parts = []
                for spec, m in members:
                    xyz, rcs, v = self._radar_at([(spec, m)], t_m)
                    has_rcs = m.payload.has("rcs")
                    parts.append(detect_radar(xyz, v, rcs if has_rcs else None, t_m, cfg, classes,
                                              origin=spec.extrinsic[:2, 3]))
                return Obstacles.concat(parts, t_m)

            obs = timer("geometric.radar", radar)
            coverage = self.pre.radar_input_coverage([spec.name for spec, _ in members])
        obs.frame_id = self.config.frame_id
        pose = self._with_motion(min(t_m, prep.t_ns), max(t_m, prep.t_ns),
                                 lambda motion: motion.relative_pose(t_m, prep.t_ns))
        prep.cache[key] = (move_to_time(obs, pose, (prep.t_ns - t_m) / NS_PER_S, prep.t_ns), coverage)
        return prep.cache[key]


__all__ = [
    "DETECTORS", "MODES", "STRATEGIES", "parse_detectors", "FusionPipeline", "HeadOutput", "ModePolicy", "ModeSwitch",
    "PipelineConfig",
    "PipelineResult", "PreparedBundle", "StageRunner", "pattern_key",
]
