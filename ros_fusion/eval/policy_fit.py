"""Fit what the `auto` fusion policy needs from validation drives: score calibration and the strategy table.

Why measured, not chosen: docs/DESIGN.md §8 says which strategy is better for each
sensor-availability pattern is decided by the robustness matrix, not by taste.
This runs on *validation* seeds (never the test seeds the matrix is reported
on) in two passes:

1. Each modality's own detections (the late-fusion inputs) are matched to
   ground truth (greedy by score, same class, centre within 2 m — the TP
   threshold of the metrics) and a Platt scaling is fitted per modality, so
   the weighted box fusion averages comparable confidences.
2. With that calibration, the robustness matrix (every pattern × intermediate
   and late) is computed and each pattern's better strategy goes into the
   policy table (ties → intermediate: one forward pass is cheaper).

3. With both, the operating threshold: the lowest score threshold (0.05 steps)
   at which the false positives of every class, inside the labelled region
   (`real_metrics.camera_view`) and within 50 m, stay at or below
   `MAX_FALSE_PER_FRAME` per frame. It is published as ``score_threshold`` and
   the node publishes from it by default.

The result is the manifest's ``fusion:`` block (`PipelineConfig.from_manifest`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.late_fusion import ScoreCalibration, fit_platt
from ..core.types import Obstacles
from ..runtime.pipeline import pattern_key
from .detection_metrics import DIST_TH_TP
from .network_eval import PATTERNS
from .real_metrics import Region, score_real

#: The operating point: at most this many false detections (all classes) per frame on the validation bags.
MAX_FALSE_PER_FRAME = 1.0
#: Candidate operating thresholds, lowest first.
OPERATING_THRESHOLDS = tuple(round(0.1 + 0.05 * k, 2) for k in range(18))

#: Fewer matched samples than this for a modality: keep the identity calibration (a fit would be noise).
MIN_CALIBRATION_SAMPLES = 50


def match_tp(gt: Obstacles, pred: Obstacles, max_dist: float = DIST_TH_TP) -> np.ndarray:
    """(N,) bool: each prediction is a true positive (greedy by score within its class, BEV centre distance)."""
    tp = np.zeros(len(pred), bool)
    order = np.argsort(-np.asarray(pred.scores), kind="stable")
    taken = np.zeros(len(gt), bool)
    for i in order:
        same = np.nonzero((gt.labels == pred.labels[i]) & ~taken)[0]
        if len(same) == 0:
            continue
        d = np.hypot(gt.boxes[same, 0] - pred.boxes[i, 0], gt.boxes[same, 1] - pred.boxes[i, 1])
        k = int(np.argmin(d))
        if d[k] <= max_dist:
            tp[i] = True
            taken[same[k]] = True
    return tp


def fit_calibration(singles: Sequence[tuple[str, Obstacles, Obstacles]]) -> dict[str, ScoreCalibration]:
    """Per-modality Platt scaling from (modality, gt, own detections) triples."""
    scores: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    for m, gt, pred in singles:
        if len(pred) == 0:
            continue
        scores.setdefault(m, []).append(np.asarray(pred.scores, np.float64))
        labels.setdefault(m, []).append(match_tp(gt, pred))
    out = {}
    for m in sorted(scores):
        s, y = np.concatenate(scores[m]), np.concatenate(labels[m])
        if len(s) >= MIN_CALIBRATION_SAMPLES and 0 < y.sum() < len(y):
            out[m] = fit_platt(s, y)
    return out


def policy_from_matrix(matrix: dict[str, Any], tie: float = 0.0) -> dict[str, str]:
    """pattern_key → the strategy with the higher mAP (intermediate unless late is better by more than `tie`)."""
    table = {}
    for p, row in matrix["mAP"].items():
        mods = PATTERNS.get(p)
        if mods is None or len(mods) < 2:
            continue  # one modality: degraded mode, nothing to choose
        inter, late = row.get("intermediate"), row.get("late")
        if inter is None or late is None:
            continue
        table[pattern_key(mods)] = "late" if (late - inter) > tie else "intermediate"
    return table


def fit_operating_threshold(frames: Sequence[tuple[Obstacles, Obstacles]], regions: Sequence[Region],
                            classes: Sequence[str], max_false_per_frame: float = MAX_FALSE_PER_FRAME
                            ) -> tuple[float, dict[str, Any]]:
    """The lowest threshold of `OPERATING_THRESHOLDS` with ≤ `max_false_per_frame` false detections per frame.

    Returns (threshold, what it reached on these frames: false positives per frame and recall per class
    ≤ 30 m / 50 m). No candidate meets the bound: the highest one, and the report says so.
    """
    if not frames:
        raise ValueError("no frames with ground truth to fit the operating threshold on")
    for th in OPERATING_THRESHOLDS:
        s = score_real(frames, classes, regions, score_threshold=th)
        fp = sum(s.false_positives.values()) / s.frames
        if fp <= max_false_per_frame or th == OPERATING_THRESHOLDS[-1]:
            recall = {c: {f"{r:g}": round(v.recall, 4) for r, v in by.items() if v.total}
                      for c, by in s.recall.items() if any(v.total for v in by.values())}
            return th, {"false_per_frame": round(fp, 4), "max_false_per_frame": max_false_per_frame,
                        "met": fp <= max_false_per_frame, "frames": s.frames, "recall": recall}
    raise AssertionError("unreachable")


def fusion_block(calibration: dict[str, ScoreCalibration], policy: dict[str, str], provenance: dict[str, Any],
                 score_threshold: float | None = None) -> dict[str, Any]:
    """The manifest's ``fusion:`` mapping."""
    block: dict[str, Any] = {
        "policy": dict(sorted(policy.items())),
        "calibration": {m: c.to_dict() for m, c in sorted(calibration.items())},
    }
    if score_threshold is not None:
        block["score_threshold"] = float(score_threshold)
    block["fitted_on"] = provenance
    return block
