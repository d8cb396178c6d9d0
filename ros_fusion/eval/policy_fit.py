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


def fusion_block(calibration: dict[str, ScoreCalibration], policy: dict[str, str], provenance: dict[str, Any]
                 ) -> dict[str, Any]:
    """The manifest's ``fusion:`` mapping."""
    return {
        "policy": dict(sorted(policy.items())),
        "calibration": {m: c.to_dict() for m, c in sorted(calibration.items())},
        "fitted_on": provenance,
    }
