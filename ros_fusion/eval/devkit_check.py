"""Score the same (ground truth, prediction) frames with nuscenes-devkit 1.2.0 — the cross-check of docs/DESIGN.md §9.

`eval.detection_metrics` re-implements the nuScenes detection metrics in numpy;
this module feeds the very frames it scored to the devkit's own `accumulate`,
`calc_ap` and `calc_tp`, so a disagreement points at a bug in one of the two.
The devkit is an optional dependency, imported only when called
(``pip install --no-deps nuscenes-devkit==1.2.0``; it needs pyquaternion too).

The conversion is the part worth getting right, and it is what the tests pin:
- one sample token per frame, in frame order (the devkit breaks score ties by the
  order of its prediction list, as our evaluator does);
- translation = box centre; size in nuScenes order [width, length, height]; rotation
  the quaternion [w, x, y, z] of the yaw about +z; velocity (vx, vy); ego_translation
  (0, 0, 0) because the frames are in base_link, the ego at the origin;
- our class names map to nuScenes detection names (``cyclist`` → ``bicycle``, others
  unchanged); a class with no nuScenes name is a ValueError, not a silent skip;
- boxes beyond `max_range` (centre distance from the ego in BEV, kept when ≤) and
  boxes with non-finite centres are dropped first, exactly as our evaluator does;
  labels outside the class list are ignored by both and counted here;
- ground truth whose `num_points` (LiDAR + radar returns) is below `min_gt_points` is
  dropped, which is what the devkit's `filter_eval_boxes` does with num_pts == 0.

Difference from the devkit's own summary, on purpose (and in our evaluator too): the
mean AP and mean TP errors are over the classes that have ground truth; a class
without any is NaN and left out. The devkit's `DetectionEval` instead averages over
all ten nuScenes classes with AP 0 for absent ones; `mAP_all_classes` reports that
rule over our class list (= our evaluator with ``EvalConfig(empty_class_ap=0.0)``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.types import Obstacles
from .detection_metrics import (
    DIST_TH_TP,
    DIST_THRESHOLDS,
    MEAN_AP_WEIGHT,
    MIN_PRECISION,
    MIN_RECALL,
    NO_VELOCITY_CLASSES,
    TP_METRICS,
)

DEVKIT_VERSION = "1.2.0"
DEVKIT_HINT = ("the nuscenes-devkit cross-check needs nuscenes-devkit: "
               f"pip install --no-deps nuscenes-devkit=={DEVKIT_VERSION}")
#: Our class names whose nuScenes detection name differs; every other class must be a nuScenes name as it is.
NUSCENES_NAME: dict[str, str] = {"cyclist": "bicycle"}


def _devkit() -> Any:
    """The devkit modules we use (its detection package imports pyplot at import time: keep it off any display)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        from nuscenes.eval.common import data_classes as common
        from nuscenes.eval.common.utils import center_distance
        from nuscenes.eval.detection import algo, constants
        from nuscenes.eval.detection import data_classes as det
    except ImportError as e:
        raise ImportError(f"{DEVKIT_HINT} ({e})") from e

    class Devkit:
        EvalBoxes = common.EvalBoxes
        DetectionBox = det.DetectionBox
        accumulate = staticmethod(algo.accumulate)
        calc_ap = staticmethod(algo.calc_ap)
        calc_tp = staticmethod(algo.calc_tp)
        distance = staticmethod(center_distance)
        names = tuple(constants.DETECTION_NAMES)

    return Devkit


def nuscenes_names(classes: Sequence[str], known: Sequence[str]) -> dict[str, str]:
    """Our class name → nuScenes detection name; ValueError for a name without one or two classes on one name."""
    if not classes:
        raise ValueError("devkit_map: the class list is empty")
    out: dict[str, str] = {}
    for c in classes:
        if not isinstance(c, str):
            raise ValueError(f"devkit_map: class {c!r} is not a name")
        n = NUSCENES_NAME.get(c, c)
        if n not in known:
            raise ValueError(f"devkit_map: class {c!r} has no nuScenes detection name (known: {', '.join(known)}); "
                             "the devkit cannot score it")
        if n in out.values():
            other = next(k for k, v in out.items() if v == n)
            raise ValueError(f"devkit_map: classes {other!r} and {c!r} both map to nuScenes {n!r}")
        out[c] = n
    return out


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """[w, x, y, z] of a rotation by `yaw` about +z (the devkit's, and pyquaternion's, order)."""
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def to_eval_boxes(frames: Sequence[tuple[Obstacles, Obstacles]], classes: Sequence[str],
                  max_range: float = 50.0, min_gt_points: int = 1) -> tuple[Any, Any, dict[str, int]]:
    """(ground truth EvalBoxes, prediction EvalBoxes, counts of what was left out) — see the module docstring."""
    dk = _devkit()
    if not (isinstance(max_range, (int, float)) and math.isfinite(max_range) and max_range > 0):
        raise ValueError(f"devkit_map: max_range must be a positive finite number of metres, got {max_range!r}")
    names = nuscenes_names(classes, dk.names)
    by_label = [names[c] for c in classes]
    gt_eb, pred_eb = dk.EvalBoxes(), dk.EvalBoxes()
    left_out = {"beyond_range": 0, "non_finite_centre": 0, "unknown_label": 0, "no_sensor_points": 0}
    for fi, fr in enumerate(frames):
        if not (isinstance(fr, (tuple, list)) and len(fr) == 2 and all(isinstance(o, Obstacles) for o in fr)):
            raise ValueError(f"devkit_map: frame {fi} is not a (ground truth, prediction) pair of Obstacles")
        token = f"frame{fi:06d}"
        for obs, out, is_gt in ((fr[0], gt_eb, True), (fr[1], pred_eb, False)):
            what = f"frame {fi} {'ground truth' if is_gt else 'prediction'}"
            boxes = np.asarray(obs.boxes, np.float64).reshape(-1, 9)
            labels = np.asarray(obs.labels).reshape(-1)
            scores = np.asarray(obs.scores, np.float64).reshape(-1)
            # the devkit's filter_eval_boxes: ground truth without LiDAR/radar points is not scored
            n_pts = obs.num_points if is_gt and obs.num_points is not None else None
            if len(labels) != len(boxes) or (not is_gt and len(scores) != len(boxes)):
                raise ValueError(f"devkit_map: {what}: {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores")
            kept = []
            for k, b in enumerate(boxes):
                lab = int(labels[k])
                if not 0 <= lab < len(by_label):
                    left_out["unknown_label"] += 1
                    continue
                if not np.isfinite(b[:2]).all():
                    left_out["non_finite_centre"] += 1
                    continue
                if math.hypot(b[0], b[1]) > max_range:
                    left_out["beyond_range"] += 1
                    continue
                if n_pts is not None and int(n_pts[k]) < min_gt_points:
                    left_out["no_sensor_points"] += 1
                    continue
                if not np.isfinite(b[2:7]).all():
                    raise ValueError(f"devkit_map: {what} box {k}: z/size/yaw {b[2:7].tolist()} are not finite")
                score = float(scores[k]) if not is_gt else -1.0
                if not is_gt and not math.isfinite(score):
                    raise ValueError(f"devkit_map: {what} box {k}: score {score} is not finite")
                kept.append(dk.DetectionBox(
                    sample_token=token,
                    translation=(float(b[0]), float(b[1]), float(b[2])),
                    size=(float(b[4]), float(b[3]), float(b[5])),  # nuScenes: width, length, height
                    rotation=yaw_quaternion(float(b[6])),
                    velocity=(float(b[7]), float(b[8])),
                    ego_translation=(0.0, 0.0, 0.0),
                    detection_name=by_label[lab],
                    detection_score=score,
                ))
            out.add_boxes(token, kept)  # also registers a frame without boxes
    return gt_eb, pred_eb, left_out


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nuscenes-devkit")
    except PackageNotFoundError:  # importable but not installed as a distribution (e.g. a source checkout)
        return "unknown version"


def _nanmean(values: Sequence[float]) -> float:
    a = np.asarray(list(values), np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def devkit_map(frames: Sequence[tuple[Obstacles, Obstacles]], classes: tuple[str, ...],
               max_range: float = 50.0, min_gt_points: int = 1) -> dict[str, Any]:
    """mAP, per-class AP and TP errors of `frames` computed by nuscenes-devkit (see the module docstring).

    Returns ``{"mAP", "mAP_all_classes", "NDS", "per_class_AP", "AP_by_threshold", "tp_errors",
    "mean_tp_errors", "n_gt", "nuscenes_names", "left_out", "devkit"}``; per-class values of a
    class without ground truth are NaN.
    """
    dk = _devkit()
    frames = list(frames)
    gt_eb, pred_eb, left_out = to_eval_boxes(frames, classes, max_range, min_gt_points)
    names = nuscenes_names(classes, dk.names)
    ap_by_th: dict[str, dict[str, float]] = {}
    tp_errors: dict[str, dict[str, float]] = {}
    n_gt: dict[str, int] = {}
    for c in classes:
        n = names[c]
        n_gt[c] = sum(1 for b in gt_eb.all if b.detection_name == n)
        ap_by_th[c] = {}
        md_tp = None
        for th in DIST_THRESHOLDS:
            md = dk.accumulate(gt_eb, pred_eb, n, dk.distance, th)
            ap_by_th[c][f"{th:g}"] = dk.calc_ap(md, MIN_RECALL, MIN_PRECISION) if n_gt[c] else float("nan")
            if th == DIST_TH_TP:
                md_tp = md
        if md_tp is None:
            md_tp = dk.accumulate(gt_eb, pred_eb, n, dk.distance, DIST_TH_TP)
        tp_errors[c] = {m: (float("nan") if not n_gt[c] or (m == "vel_err" and c in NO_VELOCITY_CLASSES)
                            else float(dk.calc_tp(md_tp, MIN_RECALL, m))) for m in TP_METRICS}
    per_class = {c: (float(np.mean(list(v.values()))) if n_gt[c] else float("nan")) for c, v in ap_by_th.items()}
    m_ap = _nanmean(list(per_class.values()))
    mean_tp = {m: _nanmean([tp_errors[c][m] for c in classes]) for m in TP_METRICS}
    tp_scores = [1.0 - min(1.0, v) for v in mean_tp.values() if math.isfinite(v)]
    nds = ((MEAN_AP_WEIGHT * (m_ap if math.isfinite(m_ap) else 0.0) + sum(tp_scores))
           / (MEAN_AP_WEIGHT + len(TP_METRICS)))
    return {
        "mAP": m_ap,
        "mAP_all_classes": float(np.mean([v if math.isfinite(v) else 0.0 for v in per_class.values()])),
        "NDS": nds,
        "per_class_AP": per_class,
        "AP_by_threshold": ap_by_th,
        "tp_errors": tp_errors,
        "mean_tp_errors": mean_tp,
        "n_gt": n_gt,
        "nuscenes_names": names,
        "left_out": left_out,
        "devkit": f"nuscenes-devkit {_installed_version()} (accumulate/calc_ap/calc_tp, center_distance)",
    }
