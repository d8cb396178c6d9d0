"""Accuracy of the exported network on held-out dataset shards, per sensor-availability pattern (docs/results.md §3).

For every frame of one split of a dataset written by `sim.dataset.generate_dataset`,
the model bundle runs through a runtime backend (the same ONNX files and backend the
live pipeline loads) once per pattern — all sensors; camera, LiDAR or radar missing;
camera, LiDAR or radar only — with the absent modalities masked by
`core.preprocess.drop_modalities`, exactly as a failed sensor looks at runtime.
Detections are decoded with `core.centerhead.decode` and scored against the frame's
ground truth by `eval.detection_metrics.evaluate` (centre-distance AP over
{0.5, 1, 2, 4} m within 50 m, NDS-like score).

Why the pieces look as they do:
- Encoders run once per frame, only for modalities the frame has; a pattern that
  drops a modality feeds zeros in place of its features instead of running its
  encoder on blank input. The network multiplies absent features by `present`
  before anything reads them, so both give the same output (tested) and the
  runtime is allowed to skip the encoder of a missing sensor — this is what it does.
- Held-out means held out: a split whose seeds the model manifest lists among its
  training or validation seeds is refused (`HeldOutError`) unless explicitly allowed,
  and the report then says so.
- The gates are checked where they claim to mean something: the mean weight of each
  modality inside its own coverage (day scenes vs `night_rain`), the maximum camera
  weight outside the camera's field of view (must be exactly 0), and the maximum
  weight any absent modality receives (must be exactly 0).
- Each pattern is also scored only inside the coverage of its own sensors, next to the
  all-sensor detections scored on that same region (`in_coverage`): with one front
  camera and one front radar, a pattern without the LiDAR cannot see about half of the
  360° ground truth, and nuScenes AP (recall below 10 % counts 0) turns that into an mAP
  near 0 whatever the camera does where it looks. The plain mAP stays the headline.
- `TargetDetector` replaces the network by the frame's own CenterPoint targets:
  encode → decode → score is then the upper bound of the scoring path (AP 1 when
  nothing collides), a check that the evaluator itself is right.
- Deterministic: shards in manifest order, fixed frame selection, no clocks in the
  report, so the same data, model and config give a byte-identical JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..core import network_io as nio
from ..core.bev import BevGrid
from ..core.centerhead import DENSE_NMS_RADIUS_M, DENSE_PEAK_RATIO, decode
from ..core.files import sha256_file
from ..core.preprocess import MODALITY_INDEX, drop_modalities
from ..core.types import Obstacles
from ..runtime.model_bundle import ModelBundle
from ..runtime.pipeline import HeadOutput, StageRunner
from ..sim.dataset import SPLITS, frame_gt, frame_inputs, load_shard, read_manifest
from .detection_metrics import DetectionReport, EvalConfig, evaluate

#: Sensor-availability patterns: name → modalities kept (docs/DESIGN.md §9 robustness matrix; masked intermediate).
PATTERNS: dict[str, tuple[str, ...]] = {
    "all": ("camera", "lidar", "radar"),
    "camera_missing": ("lidar", "radar"),
    "lidar_missing": ("camera", "radar"),
    "radar_missing": ("camera", "lidar"),
    "camera_only": ("camera",),
    "lidar_only": ("lidar",),
    "radar_only": ("radar",),
}
DAY_SCENARIOS: tuple[str, ...] = ("urban", "highway")
NIGHT_SCENARIOS: tuple[str, ...] = ("night_rain",)
ProgressFn = Callable[[int, int, str], None]
METRIC_DIGITS = 4  # decimals of the values in the manifest metrics block (the JSON keeps full precision)


class EvalDataError(ValueError):
    """The dataset folder, its manifest or a shard is missing, malformed or does not match."""


class HeldOutError(ValueError):
    """The chosen split shares seeds with the data the model was trained or validated on."""


@dataclass
class NetworkEvalConfig:
    """Everything that shapes the numbers; recorded in the report."""

    split: str = "test"
    backend: str = "onnxruntime"
    score_threshold: float = 0.05  # low, so AP sees the whole precision/recall curve
    top_k: int = 100  # detections kept per frame after peak picking
    max_frames: int | None = None  # spread evenly over the split's shards
    patterns: tuple[str, ...] = tuple(PATTERNS)
    day_scenarios: tuple[str, ...] = DAY_SCENARIOS
    night_scenarios: tuple[str, ...] = NIGHT_SCENARIOS
    allow_seen_seeds: bool = False
    metrics: EvalConfig = field(default_factory=EvalConfig)

    def check(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} is not one of {SPLITS}")
        unknown = [p for p in self.patterns if p not in PATTERNS]
        if unknown or not self.patterns:
            raise ValueError(f"unknown patterns {unknown} (choose from {list(PATTERNS)})")
        if "all" not in self.patterns:
            raise ValueError("patterns must include 'all' (ratios and gate statistics are relative to it)")
        if not (0.0 <= self.score_threshold < 1.0):
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patterns"] = {p: list(PATTERNS[p]) for p in self.patterns}
        d["decoder"] = decoder_description()
        d["metrics"] = {k: (list(map(list, v)) if k == "range_bands" else list(v) if isinstance(v, tuple) else v)
                        for k, v in asdict(self.metrics).items()}
        return _clean(d)


def decoder_description() -> dict[str, Any]:
    """How head outputs became boxes for these numbers (peak rule per class), for the record."""
    return {"peaks": "3x3 max-pool", "circle_nms_m": dict(DENSE_NMS_RADIUS_M),
            "circle_nms_min_peak_ratio": DENSE_PEAK_RATIO}


# ----------------------------------------------------------------------------- data
@dataclass
class ShardRef:
    """One shard of the split, as the dataset manifest lists it (sha256 verified before use)."""

    path: Path
    file: str
    scenario: str
    seed: int
    frames: int
    sha256: str


@dataclass
class EvalFrame:
    """One frame to evaluate: network inputs, ground truth and, for the target oracle, the head targets."""

    scenario: str
    seed: int
    index: int
    inputs: nio.NetworkInputs
    gt: Obstacles
    heatmap_target: np.ndarray | None = None
    reg_target: np.ndarray | None = None


def split_shards(data_dir: str | Path, split: str, *, verify: bool = True) -> tuple[dict, list[ShardRef]]:
    """The dataset manifest and the shards of `split`, each checked to exist and match its sha256."""
    root = Path(data_dir)
    try:
        manifest = read_manifest(root)
    except FileNotFoundError as e:
        raise EvalDataError(str(e)) from e
    except Exception as e:  # a manifest is untrusted input: bad JSON, wrong types, unreadable file
        raise EvalDataError(f"{root / 'manifest.json'}: not a usable dataset manifest ({e})") from e
    if not isinstance(manifest.get("shards"), list) or not isinstance(manifest.get("splits"), dict):
        raise EvalDataError(f"{root / 'manifest.json'}: 'shards' must be a list and 'splits' a mapping")
    if split not in SPLITS:
        raise EvalDataError(f"split {split!r} is not one of {SPLITS}")
    refs = []
    for i, s in enumerate(manifest["shards"]):
        if not isinstance(s, dict) or not all(k in s for k in ("file", "split", "scenario", "seed", "sha256")):
            raise EvalDataError(f"{root}/manifest.json: shards[{i}] lacks file/split/scenario/seed/sha256")
        if s["split"] != split:
            continue
        path = (root / str(s["file"])).resolve()
        if not path.is_relative_to(root.resolve()):
            raise EvalDataError(f"shard {s['file']!r} points outside the dataset folder")
        if not path.is_file():
            raise EvalDataError(f"shard {path} listed in the manifest is missing")
        if verify and sha256_file(path) != str(s["sha256"]).lower():
            raise EvalDataError(f"shard {path.name}: sha256 does not match the dataset manifest — the file was "
                                "changed or corrupted; regenerate it with `ros-fusion dataset`")
        refs.append(ShardRef(path, str(s["file"]), str(s["scenario"]), int(s["seed"]), int(s.get("frames", 0)),
                             str(s["sha256"]).lower()))
    if not refs:
        raise EvalDataError(f"no {split!r} shards in {root}/manifest.json (splits: "
                            f"{ {k: len(v) for k, v in manifest['splits'].items()} })")
    return manifest, refs


def model_seen_seeds(bundle: ModelBundle) -> dict[str, list[int]]:
    """Seeds the model manifest says were used in training ('train') and checkpoint selection ('val')."""
    training = bundle.raw.get("training")
    out: dict[str, list[int]] = {}
    if not isinstance(training, dict):
        return out
    init = training.get("init_from")  # fine-tuned: the starting weights saw their own seeds
    for part in ("train", "val"):
        block = training.get(part)
        found = [block.get("seeds") if isinstance(block, dict) else None,
                 init.get(f"{part}_seeds") if isinstance(init, dict) else None]
        lists = [x for x in found if isinstance(x, list)]
        if lists:
            out[part] = sorted({int(s) for x in lists for s in x if isinstance(s, int) and not isinstance(s, bool)})
    return out


def check_held_out(split: str, split_seeds: Sequence[int], seen: dict[str, list[int]]) -> None:
    """Raise HeldOutError if any seed of the evaluated split was seen by the model in training or validation."""
    for part, seeds in seen.items():
        common = sorted(set(int(s) for s in split_seeds) & set(seeds))
        if common:
            raise HeldOutError(f"{split} seeds {common} are among the model's {part} seeds "
                               f"(models manifest training.{part}.seeds): the numbers would not be held-out; "
                               "evaluate another split or regenerate the dataset with disjoint seeds")


def select_indices(sizes: Sequence[int], max_frames: int | None) -> list[list[int]]:
    """Frame indices per shard: all of them, or at most `max_frames` dealt round-robin over the shards
    (so every scenario and seed gets its share) and spread evenly in time within each shard."""
    if max_frames is None or max_frames >= sum(sizes):
        return [list(range(n)) for n in sizes]
    quota, left = [0] * len(sizes), int(max_frames)
    while left > 0:
        for k, n in enumerate(sizes):
            if left > 0 and quota[k] < n:
                quota[k] += 1
                left -= 1
    return [sorted({int(round(v)) for v in np.linspace(0, n - 1, q)}) if q else [] for n, q in zip(sizes, quota,
                                                                                                   strict=True)]


def iter_frames(refs: Sequence[ShardRef], max_frames: int | None, *, with_targets: bool = False
                ) -> Iterator[EvalFrame]:
    """The frames to evaluate, shard by shard (one shard in memory at a time)."""
    sizes = []
    for r in refs:
        sizes.append(r.frames if r.frames > 0 else len(load_shard(r.path)["stamps"]))
    for ref, idx in zip(refs, select_indices(sizes, max_frames), strict=True):
        if not idx:
            continue
        try:
            shard = load_shard(ref.path)
        except Exception as e:  # a shard is untrusted input: zip/npy errors of many kinds
            raise EvalDataError(f"shard {ref.path.name}: unreadable ({e})") from e
        n = len(shard.get("stamps", ()))
        for i in idx:
            if i >= n:
                raise EvalDataError(f"shard {ref.path.name}: manifest says {ref.frames} frames, file has {n}")
            try:
                inputs = frame_inputs(shard, i)
                inputs.check(inputs.arrays["images"].shape[0])
                gt = frame_gt(shard, i)
            except (KeyError, ValueError, IndexError) as e:
                raise EvalDataError(f"shard {ref.path.name} frame {i}: {e}") from e
            hm = shard["heatmap_target"][i].astype(np.float32) if with_targets else None
            reg = shard["reg_target"][i].astype(np.float32) if with_targets else None
            yield EvalFrame(ref.scenario, ref.seed, i, inputs, gt, hm, reg)


# ----------------------------------------------------------------------------- detectors
class Detector(Protocol):
    """Produces head outputs of one frame for every pattern (the unit the evaluator scores)."""

    def describe(self) -> str: ...

    def outputs(self, frame: EvalFrame, patterns: Sequence[str]) -> dict[str, tuple[HeadOutput, np.ndarray,
                                                                                       np.ndarray]]: ...


class NetworkDetector:
    """The exported network through a runtime backend: encoders once per frame, fusion+head per pattern.

    The stages run through the pipeline's own `StageRunner`, so this scores the code the node runs.
    """

    def __init__(self, backend: Any, bundle: ModelBundle) -> None:
        self.backend = backend
        self.bundle = bundle
        self.stages = StageRunner(backend, bundle)

    def describe(self) -> str:
        return self.stages.describe()

    def encode(self, inputs: nio.NetworkInputs) -> dict[str, np.ndarray | None]:
        return self.stages.encode(inputs)

    def fuse(self, feats: dict[str, np.ndarray | None], masked: nio.NetworkInputs) -> HeadOutput:
        return self.stages.fuse(feats, masked)

    def outputs(self, frame: EvalFrame, patterns: Sequence[str]) -> dict[str, tuple[HeadOutput, np.ndarray,
                                                                                       np.ndarray]]:
        feats = self.encode(frame.inputs)
        res = {}
        for p in patterns:
            masked = drop_modalities(frame.inputs, PATTERNS[p])
            res[p] = (self.fuse(feats, masked), masked.arrays["coverage"], masked.arrays["present"])
        return res


def uniform_gates(coverage: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Equal weight for every present modality covering a cell, 0 elsewhere (what an untrained gate does)."""
    avail = np.asarray(coverage, np.float32) * np.asarray(present, np.float32)[:, None, None]
    total = avail.sum(axis=0, keepdims=True)
    return np.divide(avail, total, out=np.zeros_like(avail), where=total > 0)


class TargetDetector:
    """An oracle: the frame's own CenterPoint targets as head outputs, the same for every pattern.

    Scores what encode → decode → metrics can reach at best (AP 1 unless two objects
    share a feature cell): a check of the evaluator, not of a model. Its gates are
    `uniform_gates`, so the gate bookkeeping has a known answer too.
    """

    def describe(self) -> str:
        return "target oracle (ground-truth CenterPoint targets as head outputs)"

    def outputs(self, frame: EvalFrame, patterns: Sequence[str]) -> dict[str, tuple[HeadOutput, np.ndarray,
                                                                                       np.ndarray]]:
        if frame.heatmap_target is None or frame.reg_target is None:
            raise EvalDataError("target oracle needs frames loaded with their targets")
        res = {}
        for p in patterns:
            masked = drop_modalities(frame.inputs, PATTERNS[p])
            cov, pres = masked.arrays["coverage"], masked.arrays["present"]
            res[p] = (HeadOutput(frame.heatmap_target, frame.reg_target, uniform_gates(cov, pres), logits=False),
                      cov, pres)
        return res


# ----------------------------------------------------------------------------- gate statistics
@dataclass
class GateStats:
    """Running sums for the gate checks (float64 sums, cell-weighted means)."""

    #: pattern → scenario → (3,) Σ gate inside each modality's own coverage, and the covered cells counted;
    #: "all" and every pattern of two or more modalities (one modality alone always gets gate 1)
    sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cells: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    camera_outside_max: dict[str, float] = field(default_factory=dict)  # pattern → max camera gate off its FOV
    camera_outside_cells: dict[str, int] = field(default_factory=dict)
    absent_max: dict[str, float] = field(default_factory=dict)  # pattern → max gate of any absent modality

    @property
    def inside_sum(self) -> dict[str, np.ndarray]:
        """scenario → (3,) sums of the all-sensor pattern."""
        return self.sums.get("all", {})

    @property
    def pattern_sum(self) -> dict[str, dict[str, np.ndarray]]:
        """The sums of the patterns other than "all"."""
        return {p: v for p, v in self.sums.items() if p != "all"}

    def add(self, pattern: str, scenario: str, gates: np.ndarray, coverage: np.ndarray, present: np.ndarray) -> None:
        g = np.asarray(gates, np.float64)
        cam = MODALITY_INDEX["camera"]
        if present[cam] > 0:
            outside = coverage[cam] <= 0
            n = int(outside.sum())
            m = float(g[cam][outside].max()) if n else 0.0
            self.camera_outside_max[pattern] = max(self.camera_outside_max.get(pattern, 0.0), m)
            self.camera_outside_cells[pattern] = self.camera_outside_cells.get(pattern, 0) + n
        absent = [i for i in range(len(present)) if present[i] <= 0]
        a = float(np.abs(g[absent]).max()) if absent else 0.0
        self.absent_max[pattern] = max(self.absent_max.get(pattern, 0.0), a)
        if pattern != "all" and int((np.asarray(present) > 0).sum()) < 2:
            return
        s = self.sums.setdefault(pattern, {}).setdefault(scenario, np.zeros(len(nio.FUSED_MODALITIES)))
        c = self.cells.setdefault(pattern, {}).setdefault(scenario, np.zeros(len(nio.FUSED_MODALITIES)))
        for i in range(len(nio.FUSED_MODALITIES)):
            if present[i] <= 0:
                continue
            inside = coverage[i] > 0
            s[i] += float(g[i][inside].sum())
            c[i] += float(inside.sum())

    def mean_inside(self, scenarios: Sequence[str], pattern: str = "all") -> dict[str, float | None]:
        """Cell-weighted mean gate of each present modality inside its own coverage over `scenarios`.

        None for a modality the pattern leaves out (or no covered cell was seen).
        """
        sums, cells = self.sums.get(pattern, {}), self.cells.get(pattern, {})
        s = sum((sums[k] for k in scenarios if k in sums), np.zeros(3))
        c = sum((cells[k] for k in scenarios if k in cells), np.zeros(3))
        return {m: (float(s[i] / c[i]) if c[i] > 0 else None) for i, m in enumerate(nio.FUSED_MODALITIES)}


# ----------------------------------------------------------------------------- report
@dataclass
class NetworkEvalReport:
    config: NetworkEvalConfig
    detector: str
    data: dict[str, Any]
    model: dict[str, Any]
    patterns: dict[str, DetectionReport]
    gate_stats: GateStats
    n_frames: int
    frames_by_scenario: dict[str, int]
    #: pattern → (its report, the all-sensor report) both scored only inside the pattern's coverage
    in_coverage: dict[str, tuple[DetectionReport, DetectionReport]] = field(default_factory=dict)
    #: scenario → the same, on that scenario's frames only
    in_coverage_by_scenario: dict[str, dict[str, tuple[DetectionReport, DetectionReport]]] = field(
        default_factory=dict)

    def ratio(self, pattern: str) -> float | None:
        return map_ratio(self.patterns.get(pattern), self.patterns["all"])

    def ratio_in_coverage(self, pattern: str) -> float | None:
        """mAP of `pattern` over the all-sensor mAP, both only where the pattern's sensors see."""
        return map_ratio(*self.in_coverage.get(pattern, (None, None)))

    def gates(self) -> dict[str, Any]:
        cfg = self.config
        scen = sorted(self.gate_stats.inside_sum)
        cam_max = max(self.gate_stats.camera_outside_max.values(), default=0.0)
        return {
            "mean_inside_coverage": {
                "day": self.gate_stats.mean_inside([s for s in scen if s in cfg.day_scenarios]),
                "night_rain": self.gate_stats.mean_inside([s for s in scen if s in cfg.night_scenarios]),
                "per_scenario": {s: self.gate_stats.mean_inside([s]) for s in scen},
            },
            # The same day/night means when a sensor is missing: with LiDAR missing the camera's gate
            # is shared with the radar alone, so a night drop is not hidden behind the LiDAR's weight.
            "mean_inside_coverage_by_pattern": {
                p: {"day": self.gate_stats.mean_inside([s for s in scen if s in cfg.day_scenarios], p),
                    "night_rain": self.gate_stats.mean_inside([s for s in scen if s in cfg.night_scenarios], p)}
                for p in self.gate_stats.pattern_sum
            },
            "day_scenarios": [s for s in scen if s in cfg.day_scenarios],
            "night_scenarios": [s for s in scen if s in cfg.night_scenarios],
            "camera_outside_coverage_max": cam_max,
            "camera_outside_coverage_max_per_pattern": dict(self.gate_stats.camera_outside_max),
            "camera_outside_coverage_cells": dict(self.gate_stats.camera_outside_cells),
            "absent_modality_max_per_pattern": dict(self.gate_stats.absent_max),
        }

    def checks(self) -> dict[str, bool | None]:
        g = self.gates()
        cam = g["mean_inside_coverage"]
        day, night = cam["day"]["camera"], cam["night_rain"]["camera"]
        return {
            "camera_gate_zero_outside_coverage": g["camera_outside_coverage_max"] == 0.0,
            "absent_modality_gates_zero": all(v == 0.0 for v in g["absent_modality_max_per_pattern"].values()),
            "camera_gate_lower_at_night": (night < day) if day is not None and night is not None else None,
            "held_out": not self.data.get("seen_seeds_overlap"),
        }

    def manifest_metrics(self, existing: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `metrics` mapping for models/manifest.yaml (`ros-fusion export --metrics FILE`).

        Keeps the manifest's other metrics (validation losses) and replaces its `test` block.
        """
        out = {k: v for k, v in (existing or {}).items() if k != "test"}
        all_ = self.patterns["all"]
        g = self.gates()
        out["test"] = _clean(_round({
            "split": self.config.split,
            "dataset_config_hash": self.data.get("config_hash"),
            "seeds": self.data.get("seeds"),
            "scenarios": self.data.get("scenarios"),
            "frames": self.n_frames,
            "backend": self.detector,
            "metric": "nuScenes-style centre-distance AP over {0.5,1,2,4} m within "
                      f"{self.config.metrics.max_range:g} m; NDS-like; ground truth without any LiDAR/radar "
                      "return left out (devkit filter_eval_boxes)",
            "gt_unobserved_left_out": all_.n_gt_unobserved,
            "mAP": all_.mean_ap,
            "NDS": all_.nds,
            "per_class_AP": {c: all_.class_ap(c) for c in all_.ap},
            "patterns": {p: {"mAP": r.mean_ap, "NDS": r.nds} for p, r in self.patterns.items()},
            "camera_missing_over_all": self.ratio("camera_missing"),
            "lidar_missing_over_all": self.ratio("lidar_missing"),
            "in_coverage": {p: {"mAP": r.mean_ap, "all_sensors_mAP": a.mean_ap, "ratio": self.ratio_in_coverage(p)}
                            for p, (r, a) in self.in_coverage.items()},
            "gates_day": g["mean_inside_coverage"]["day"],
            "gates_night_rain": g["mean_inside_coverage"]["night_rain"],
            "gates_by_pattern": g["mean_inside_coverage_by_pattern"],
            "camera_gate_max_outside_fov": g["camera_outside_coverage_max"],
            "decoder": decoder_description(),
            "model_sha256": {k: v["sha256"] for k, v in self.model.get("stages", {}).items()},
        }, METRIC_DIGITS))
        return out

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "report": "ros_fusion network evaluation",
            "config": self.config.to_dict(),
            "detector": self.detector,
            "data": self.data,
            "model": self.model,
            "frames": self.n_frames,
            "frames_by_scenario": self.frames_by_scenario,
            "patterns": {p: {"keep": list(PATTERNS[p]), **r.summary(), "AP_by_threshold": {
                c: {f"{t:g}": v for t, v in d.items()} for c, d in r.ap.items()}, "tp_errors": r.tp_errors}
                for p, r in self.patterns.items()},
            "per_class_AP_all": {c: self.patterns["all"].class_ap(c) for c in self.patterns["all"].ap},
            "ratios": {"camera_missing_over_all": self.ratio("camera_missing"),
                       "lidar_missing_over_all": self.ratio("lidar_missing")},
            "in_coverage": {p: {"ground_truth": sum(r.n_gt.values()), "mAP": r.mean_ap,
                                "per_class_AP": {c: r.class_ap(c) for c in r.ap},
                                "all_sensors_mAP": a.mean_ap, "ratio": self.ratio_in_coverage(p)}
                            for p, (r, a) in self.in_coverage.items()},
            "in_coverage_by_scenario": {
                scen: {p: {"ground_truth": sum(r.n_gt.values()), "mAP": r.mean_ap, "all_sensors_mAP": a.mean_ap,
                           "ratio": map_ratio(r, a)} for p, (r, a) in by.items()}
                for scen, by in self.in_coverage_by_scenario.items()},
            "gates": self.gates(),
            "checks": self.checks(),
            "metrics": self.manifest_metrics(self.model.get("metrics") if isinstance(self.model.get("metrics"),
                                                                                     dict) else None),
        })


def map_ratio(part: DetectionReport | None, whole: DetectionReport | None) -> float | None:
    """part mAP / whole mAP; None where either is missing or undefined, or the whole is 0."""
    if part is None or whole is None:
        return None
    a, b = whole.mean_ap, part.mean_ap
    if not np.isfinite(a) or a <= 0 or not np.isfinite(b):
        return None
    return float(b / a)


def _round(x: Any, digits: int) -> Any:
    """Floats rounded to `digits` decimals, recursively (the manifest is read by people)."""
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    if isinstance(x, (float, np.floating)) and math.isfinite(float(x)):
        return round(float(x), digits)
    return x


def _clean(x: Any) -> Any:
    """JSON/YAML-safe plain types: numpy → Python, NaN/Inf → None, tuple → list, float keys → str."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    return x


# ----------------------------------------------------------------------------- top level
def describe_model(bundle: ModelBundle) -> dict[str, Any]:
    raw = bundle.raw
    training = raw.get("training") if isinstance(raw.get("training"), dict) else {}
    return _clean({
        "dir": str(bundle.root),
        "status": bundle.status,
        "stages": {k: {"file": s.path.name, "sha256": s.sha256} for k, s in bundle.stages.items()},
        "network": raw.get("network"),
        "training_seeds": model_seen_seeds(bundle),
        "training_scenarios": {p: training.get(p, {}).get("scenarios") for p in ("train", "val")
                               if isinstance(training.get(p), dict)},
        "metrics": raw.get("metrics"),
    })


def inside_coverage(obs: Obstacles, coverage: np.ndarray, present: np.ndarray) -> Obstacles:
    """The boxes whose centre lies in a feature cell that some present modality covers.

    `coverage` (M, FEAT, FEAT) and `present` (M,) as fed to the network; boxes off the grid are
    outside. Used to score a sensor pattern only where its sensors can see (`in_coverage`).
    """
    seen = (np.asarray(coverage, np.float32) * np.asarray(present, np.float32)[:, None, None]).max(axis=0) > 0
    grid = BevGrid()
    x, y = obs.boxes[:, 0], obs.boxes[:, 1]
    i, j = grid.cell_index(x, y, stride=grid.shape()[0] // seen.shape[0])
    on = grid.in_grid(x, y)
    keep = np.zeros(len(obs.boxes), bool)
    keep[on] = seen[i[on], j[on]]
    return obs.subset(keep)


InCoverage = dict[str, tuple[DetectionReport, DetectionReport]]


def evaluate_frames(frames: Iterator[EvalFrame] | Sequence[EvalFrame], detector: Detector, cfg: NetworkEvalConfig,
                    progress: Callable[[int, str], None] | None = None
                    ) -> tuple[dict[str, DetectionReport], GateStats, dict[str, int], InCoverage,
                               dict[str, InCoverage]]:
    """Run `detector` on every frame for every pattern, decode, score; gate statistics on the way.

    The fourth element scores each pattern only inside the coverage of its own sensors, and the
    all-sensor detections on that same region: (pattern, all) reports. With one front camera and
    one front radar the other patterns can never see most of the 360° ground truth, so their
    plain mAP mixes "cannot see" with "sees badly"; this pair separates the two. The fifth is
    the same per scenario: a modality that fails in one kind of scene (the camera at night)
    shows there and not in the average (that is how v5's night gate problem was found).
    """
    pairs: dict[str, list[tuple[Obstacles, Obstacles]]] = {p: [] for p in cfg.patterns}
    region: dict[str, list[tuple[Obstacles, Obstacles]]] = {p: [] for p in cfg.patterns}
    region_all: dict[str, list[tuple[Obstacles, Obstacles]]] = {p: [] for p in cfg.patterns}
    region_scenario: dict[str, list[str]] = {p: [] for p in cfg.patterns}
    stats = GateStats()
    by_scenario: dict[str, int] = {}
    n = 0
    for fr in frames:
        outs = detector.outputs(fr, cfg.patterns)
        dets = {p: decode(out.heatmap, out.regression, stamp_ns=fr.gt.stamp_ns, score_threshold=cfg.score_threshold,
                          top_k=cfg.top_k, logits=out.logits, gates=out.gates) for p, (out, _, _) in outs.items()}
        for p, (out, cov, pres) in outs.items():
            pairs[p].append((fr.gt, dets[p]))
            stats.add(p, fr.scenario, out.gates, cov, pres)
            if "all" in dets:
                gt_in = inside_coverage(fr.gt, cov, pres)
                region[p].append((gt_in, inside_coverage(dets[p], cov, pres)))
                region_all[p].append((gt_in, inside_coverage(dets["all"], cov, pres)))
                region_scenario[p].append(fr.scenario)
        by_scenario[fr.scenario] = by_scenario.get(fr.scenario, 0) + 1
        n += 1
        if progress:
            progress(n, f"{fr.scenario} seed {fr.seed} frame {fr.index}")
    if n == 0:
        raise EvalDataError("no frames to evaluate")
    reports = {p: evaluate(pairs[p], cfg.metrics) for p in cfg.patterns}
    in_cov = {p: (evaluate(region[p], cfg.metrics), evaluate(region_all[p], cfg.metrics))
              for p in cfg.patterns if region[p]}
    in_cov_scenario: dict[str, InCoverage] = {}
    for scen in sorted(by_scenario):
        for p in cfg.patterns:
            idx = [i for i, s in enumerate(region_scenario[p]) if s == scen]
            if idx:
                in_cov_scenario.setdefault(scen, {})[p] = (evaluate([region[p][i] for i in idx], cfg.metrics),
                                                           evaluate([region_all[p][i] for i in idx], cfg.metrics))
    return reports, stats, dict(sorted(by_scenario.items())), in_cov, in_cov_scenario


def run_network_eval(data_dir: str | Path, bundle: ModelBundle, cfg: NetworkEvalConfig, *,
                     detector: Detector | None = None, backend_options: dict[str, Any] | None = None,
                     progress: ProgressFn | None = None) -> NetworkEvalReport:
    """Evaluate `bundle` (through backend `cfg.backend`, or the given `detector`) on split `cfg.split` of a dataset.

    Raises EvalDataError (data), HeldOutError (split seen in training), BundleError /
    BackendUnavailable (model, runtime) — each naming what to fix.
    """
    cfg.check()
    manifest, refs = split_shards(data_dir, cfg.split)
    split_seeds = sorted({int(s) for s in manifest["splits"].get(cfg.split, [])} | {r.seed for r in refs})
    seen = model_seen_seeds(bundle)
    overlap = sorted(set(split_seeds) & set(s for v in seen.values() for s in v))
    if not cfg.allow_seen_seeds:
        check_held_out(cfg.split, split_seeds, seen)
    if detector is None:
        from ..runtime.backends import create_backend

        detector = NetworkDetector(create_backend(cfg.backend, bundle, **(backend_options or {})), bundle)
    sizes = [r.frames for r in refs]
    total = sum(len(i) for i in select_indices(sizes, cfg.max_frames)) if all(sizes) else 0
    cb = (lambda k, what: progress(k, total, what)) if progress else None
    frames = iter_frames(refs, cfg.max_frames, with_targets=isinstance(detector, TargetDetector))
    reports, stats, by_scenario, in_cov, in_cov_scenario = evaluate_frames(frames, detector, cfg, cb)
    data = {
        "dir": str(Path(data_dir)),
        "config_hash": manifest.get("config_hash"),
        "dataset_version": manifest.get("dataset_version"),
        "rig": manifest.get("rig"),
        "duration_s": manifest.get("duration_s"),
        "stride": manifest.get("stride"),
        "split": cfg.split,
        "seeds": split_seeds,
        "scenarios": sorted({r.scenario for r in refs}),
        "shards": [{"file": r.file, "scenario": r.scenario, "seed": r.seed, "frames": r.frames, "sha256": r.sha256}
                   for r in refs],
        "seen_seeds_overlap": overlap,
    }
    return NetworkEvalReport(cfg, detector.describe(), _clean(data), describe_model(bundle), reports, stats,
                             sum(by_scenario.values()), by_scenario, in_cov, in_cov_scenario)


# ----------------------------------------------------------------------------- terminal output
def _fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def render_report(rep: NetworkEvalReport) -> Any:
    """rich tables: mAP/NDS per pattern, per-class AP (all), ratios, gate weights and checks."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"network on {rep.config.split} split — {rep.n_frames} frames, {rep.detector}")
    t.add_column("pattern")
    t.add_column("sensors kept")
    t.add_column("mAP", justify="right")
    t.add_column("NDS", justify="right")
    t.add_column("/ all", justify="right")
    for p, r in rep.patterns.items():
        t.add_row(p, " + ".join(PATTERNS[p]), _fmt(r.mean_ap), _fmt(r.nds), _fmt(rep.ratio(p) if p != "all" else 1.0,
                                                                                2))
    cov = Table(title="scored only where the pattern's sensors see (mAP in its coverage)")
    for name in ("pattern", "GT boxes", "mAP", "all sensors there", "/ all"):
        cov.add_column(name, justify="left" if name == "pattern" else "right")
    for p, (r, a) in rep.in_coverage.items():
        cov.add_row(p, str(sum(r.n_gt.values())), _fmt(r.mean_ap), _fmt(a.mean_ap), _fmt(rep.ratio_in_coverage(p), 2))
    scen_names = list(rep.in_coverage_by_scenario)
    by_scen = Table(title="mAP in the pattern's coverage, per scenario")
    by_scen.add_column("pattern")
    for sc in scen_names:
        by_scen.add_column(sc, justify="right")
    for p in rep.in_coverage:
        by_scen.add_row(p, *(_fmt(rep.in_coverage_by_scenario[sc][p][0].mean_ap)
                             if p in rep.in_coverage_by_scenario[sc] else "—" for sc in scen_names))
    c = Table(title="per-class AP, all sensors (mean over 0.5/1/2/4 m)")
    c.add_column("class")
    c.add_column("AP", justify="right")
    c.add_column("GT boxes", justify="right")
    all_ = rep.patterns["all"]
    for name in all_.ap:
        c.add_row(name, _fmt(all_.class_ap(name)), str(all_.n_gt.get(name, 0)))
    g = rep.gates()
    gt_ = Table(title="mean gate weight inside each modality's coverage (all sensors, then with one missing)")
    gt_.add_column("scenes")
    for m in nio.FUSED_MODALITIES:
        gt_.add_column(m, justify="right")
    rows = [("day (" + ", ".join(g["day_scenarios"]) + ")", g["mean_inside_coverage"]["day"]),
            ("night_rain", g["mean_inside_coverage"]["night_rain"])]
    rows += [(f"  {s}", v) for s, v in g["mean_inside_coverage"]["per_scenario"].items()]
    for p, by in g["mean_inside_coverage_by_pattern"].items():
        rows += [(f"{p}, day", by["day"]), (f"{p}, night_rain", by["night_rain"])]
    for label, vals in rows:
        gt_.add_row(label, *(_fmt(vals[m]) for m in nio.FUSED_MODALITIES))
    checks = rep.checks()
    lines = [
        f"camera missing / all mAP: {_fmt(rep.ratio('camera_missing'), 2)}    "
        f"LiDAR missing / all mAP: {_fmt(rep.ratio('lidar_missing'), 2)}",
        f"camera gate outside the camera's coverage: max {g['camera_outside_coverage_max']:.3g} "
        f"({'exactly 0' if checks['camera_gate_zero_outside_coverage'] else 'NOT 0'}); "
        f"gates of absent modalities: max {max(g['absent_modality_max_per_pattern'].values(), default=0.0):.3g}",
        f"ground truth with no LiDAR/radar return, left out as the devkit does: {all_.n_gt_unobserved} boxes",
        f"data seeds {rep.data.get('seeds')} ({', '.join(rep.data.get('scenarios', []))}); "
        f"model {rep.model.get('status')!r}",
    ]
    if rep.data.get("seen_seeds_overlap"):
        lines.append(f"WARNING: seeds {rep.data['seen_seeds_overlap']} were seen in training — not held-out numbers")
    return Group(t, cov, by_scen, c, gt_, Text("\n".join(lines)))
