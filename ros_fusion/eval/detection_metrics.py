"""nuScenes-style detection metrics in pure numpy (docs/DESIGN.md §9).

Follows the nuScenes detection benchmark (Caesar et al., CVPR 2020; devkit
`nuscenes/eval/detection`): matching by BEV centre distance, greedy over all
predictions of a class sorted by score, at thresholds {0.5, 1, 2, 4} m;
precision interpolated at 101 recall points; AP = mean of (precision −
min_precision)⁺ over recalls above min_recall, divided by (1 − min_precision);
true-positive errors at the 2 m threshold (ATE: centre distance in BEV, ASE:
1 − IoU of the sizes aligned and centred, AOE: smallest yaw difference — period
π for barriers, AVE: velocity L2 — not for barriers), each the mean of its
cumulative mean over the operating points above min_recall; an NDS-like score
weighting mAP 5× against the four TP scores (nuScenes also has attribute
error; we have no attributes, so NDS = (5·mAP + Σ(1 − min(1, err))) / 9).

Frames are evaluated in base_link (the ego is at the origin), so the range
filter is the distance of a box centre from the origin, ≤ `max_range`.
Ground truth that no LiDAR or radar return hit is left out, as the devkit's
`filter_eval_boxes` does (num_pts == 0), where the ground truth carries
`num_points` (simulated bags and shards do); `min_gt_points=0` scores it.
Deviation from the devkit, on purpose: a class without any ground truth in
the evaluated set has no AP (NaN) and is left out of the means instead of
counting as 0 (set `empty_class_ap=0.0` to reproduce the devkit exactly).
The intermediate curves (`ClassCurve`) have the shapes of the devkit's
`DetectionMetricData`, so a cross-check can compare them field by field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.types import DEFAULT_CLASSES, Obstacles

DIST_THRESHOLDS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
DIST_TH_TP = 2.0
MIN_RECALL = 0.1
MIN_PRECISION = 0.1
N_RECALL = 101
MEAN_AP_WEIGHT = 5
TP_METRICS: tuple[str, ...] = ("trans_err", "scale_err", "orient_err", "vel_err")
RANGE_BANDS: tuple[tuple[float, float], ...] = ((0.0, 20.0), (20.0, 35.0), (35.0, 50.0))
#: Classes whose orientation is only defined modulo π and whose velocity is not scored (devkit rules).
PI_PERIOD_CLASSES = frozenset({"barrier"})
NO_VELOCITY_CLASSES = frozenset({"barrier"})


@dataclass
class EvalConfig:
    classes: tuple[str, ...] = DEFAULT_CLASSES
    max_range: float = 50.0
    dist_thresholds: tuple[float, ...] = DIST_THRESHOLDS
    dist_th_tp: float = DIST_TH_TP
    min_recall: float = MIN_RECALL
    min_precision: float = MIN_PRECISION
    range_bands: tuple[tuple[float, float], ...] = RANGE_BANDS
    empty_class_ap: float = float("nan")  # devkit: 0.0
    #: Ground truth with fewer LiDAR + radar returns is not scored (devkit `filter_eval_boxes`
    #: drops num_pts == 0). Only where the ground truth carries num_points; 0 scores every box.
    min_gt_points: int = 1


@dataclass
class ClassCurve:
    """One class at one threshold: the devkit's DetectionMetricData (101 points each)."""

    recall: np.ndarray
    precision: np.ndarray
    confidence: np.ndarray
    errors: dict[str, np.ndarray]  # TP metric → (101,) interpolated cumulative-mean error
    n_gt: int

    @property
    def max_recall_ind(self) -> int:
        nz = np.flatnonzero(self.confidence)
        return int(nz[-1]) if nz.size else 0

    @staticmethod
    def empty(n_gt: int = 0) -> ClassCurve:
        z = np.zeros(N_RECALL)
        return ClassCurve(np.linspace(0, 1, N_RECALL), z.copy(), z.copy(),
                          {m: np.ones(N_RECALL) for m in TP_METRICS}, n_gt)


@dataclass
class DetectionReport:
    ap: dict[str, dict[float, float]]  # class → threshold → AP
    tp_errors: dict[str, dict[str, float]]  # class → metric → error (NaN where undefined)
    mean_ap: float
    mean_tp_errors: dict[str, float]
    nds: float
    n_gt: dict[str, int]
    per_band: dict[str, float] = field(default_factory=dict)  # "0-20" → mAP in that range band
    config: EvalConfig = field(default_factory=EvalConfig)
    n_gt_unobserved: int = 0  # ground truth within range left out: no sensor return (min_gt_points)

    def class_ap(self, name: str) -> float:
        """AP of a class averaged over the distance thresholds."""
        return float(np.mean(list(self.ap[name].values())))

    def summary(self) -> dict:
        return {
            "mAP": self.mean_ap, "NDS": self.nds,
            **self.mean_tp_errors,
            "per_class_AP": {c: self.class_ap(c) for c in self.ap},
            "per_band_mAP": self.per_band,
            "n_gt": self.n_gt,
            "n_gt_unobserved": self.n_gt_unobserved,
        }


# ----------------------------------------------------------------------------- box errors
def yaw_diff(a: np.ndarray, b: np.ndarray, period: float = 2 * np.pi) -> np.ndarray:
    """Smallest absolute angle between yaws, for a given symmetry period."""
    d = np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64) + period / 2, period) - period / 2
    return np.abs(d)


def scale_iou(size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """IoU of two boxes of sizes (l, w, h) aligned and centred on each other (the devkit's scale_iou)."""
    a = np.asarray(size_a, np.float64)
    b = np.asarray(size_b, np.float64)
    inter = np.prod(np.minimum(a, b), axis=-1)
    union = np.prod(a, axis=-1) + np.prod(b, axis=-1) - inter
    return inter / np.maximum(union, 1e-12)


# ----------------------------------------------------------------------------- accumulation
def _gather(frames: Sequence[tuple[Obstacles, Obstacles]], label: int, cfg: EvalConfig,
            band: tuple[float, float] | None):
    """Per-class GT and predictions within range: arrays plus the frame index of each box."""
    lo, hi = band if band is not None else (0.0, cfg.max_range)
    closed = hi >= cfg.max_range  # the outermost band includes max_range itself, inner bands are [lo, hi)
    gts, gt_f, preds, pr_f, scores = [], [], [], [], []
    for fi, (gt, pred) in enumerate(frames):
        for boxes, labels, out, out_f, sc in ((gt.boxes, gt.labels, gts, gt_f, None),
                                              (pred.boxes, pred.labels, preds, pr_f, pred.scores)):
            b = np.asarray(boxes, np.float64).reshape(-1, 9)
            d = np.hypot(b[:, 0], b[:, 1])
            sel = (np.asarray(labels) == label) & (d >= lo) & (d <= cfg.max_range)
            sel &= (d <= hi) if closed else (d < hi)
            sel &= np.isfinite(b[:, :2]).all(axis=1)
            out.append(b[sel])
            out_f.append(np.full(int(sel.sum()), fi))
            if sc is not None:
                scores.append(np.asarray(sc, np.float64)[sel])
    cat = np.concatenate
    return (cat(gts) if gts else np.zeros((0, 9)), cat(gt_f) if gt_f else np.zeros(0, int),
            cat(preds) if preds else np.zeros((0, 9)), cat(pr_f) if pr_f else np.zeros(0, int),
            cat(scores) if scores else np.zeros(0))


def accumulate(gt_boxes: np.ndarray, gt_frame: np.ndarray, pred_boxes: np.ndarray, pred_frame: np.ndarray,
               pred_scores: np.ndarray, dist_th: float, class_name: str = "") -> ClassCurve:
    """Greedy matching of one class at one threshold → the interpolated curves (devkit `accumulate`)."""
    n_gt = len(gt_boxes)
    if n_gt == 0:
        return ClassCurve.empty(0)
    # descending score; ties: the later prediction first, exactly as the devkit's sorted(...)[::-1]
    order = np.argsort(pred_scores, kind="stable")[::-1]
    taken = np.zeros(n_gt, bool)
    by_frame: dict[int, np.ndarray] = {}
    for f in np.unique(gt_frame):
        by_frame[int(f)] = np.flatnonzero(gt_frame == f)
    tp, fp, conf = [], [], []
    err = {m: [] for m in TP_METRICS}
    period = np.pi if class_name in PI_PERIOD_CLASSES else 2 * np.pi
    for k in order:
        cand = by_frame.get(int(pred_frame[k]))
        best, best_d = -1, np.inf
        if cand is not None:
            free = cand[~taken[cand]]
            if free.size:
                d = np.hypot(gt_boxes[free, 0] - pred_boxes[k, 0], gt_boxes[free, 1] - pred_boxes[k, 1])
                j = int(np.argmin(d))
                best, best_d = int(free[j]), float(d[j])
        if best >= 0 and best_d < dist_th:
            taken[best] = True
            tp.append(1.0)
            fp.append(0.0)
            g, p = gt_boxes[best], pred_boxes[k]
            err["trans_err"].append(best_d)
            err["scale_err"].append(1.0 - float(scale_iou(g[3:6], p[3:6])))
            err["orient_err"].append(float(yaw_diff(p[6], g[6], period)))
            err["vel_err"].append(float(np.hypot(p[7] - g[7], p[8] - g[8])))
            conf.append(float(pred_scores[k]))
        else:
            tp.append(0.0)
            fp.append(1.0)
            conf.append(float(pred_scores[k]))
    if not any(tp):
        return ClassCurve.empty(n_gt)
    tp_c = np.cumsum(tp)
    fp_c = np.cumsum(fp)
    conf_a = np.asarray(conf)
    prec = tp_c / (tp_c + fp_c)
    rec = tp_c / n_gt
    r_i = np.linspace(0, 1, N_RECALL)
    prec_i = np.interp(r_i, rec, prec, right=0)
    conf_i = np.interp(r_i, rec, conf_a, right=0)
    tp_mask = np.asarray(tp, bool)
    tp_conf = conf_a[tp_mask]
    errors = {}
    for m in TP_METRICS:
        vals = np.asarray(err[m])
        cm = np.cumsum(vals) / np.arange(1, len(vals) + 1)
        # interpolate the cumulative mean against confidence (both reversed to be increasing)
        errors[m] = np.interp(conf_i[::-1], tp_conf[::-1], cm[::-1])[::-1]
    return ClassCurve(r_i, prec_i, conf_i, errors, n_gt)


def calc_ap(curve: ClassCurve, min_recall: float = MIN_RECALL, min_precision: float = MIN_PRECISION) -> float:
    prec = np.copy(curve.precision)[int(round(100 * min_recall)) + 1:]
    prec -= min_precision
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - min_precision)


def calc_tp(curve: ClassCurve, metric: str, min_recall: float = MIN_RECALL) -> float:
    first = int(round(100 * min_recall)) + 1
    last = curve.max_recall_ind
    if last < first:
        return 1.0
    return float(np.mean(curve.errors[metric][first:last + 1]))


# ----------------------------------------------------------------------------- top level
def _class_metrics(frames, cfg: EvalConfig, band=None):
    ap: dict[str, dict[float, float]] = {}
    tp_err: dict[str, dict[str, float]] = {}
    n_gt: dict[str, int] = {}
    for label, name in enumerate(cfg.classes):
        g, gf, p, pf, s = _gather(frames, label, cfg, band)
        n_gt[name] = len(g)
        ap[name] = {}
        curve_tp = None
        for th in cfg.dist_thresholds:
            curve = accumulate(g, gf, p, pf, s, th, name)
            ap[name][th] = calc_ap(curve, cfg.min_recall, cfg.min_precision) if len(g) else cfg.empty_class_ap
            if th == cfg.dist_th_tp:
                curve_tp = curve
        if curve_tp is None:
            curve_tp = accumulate(g, gf, p, pf, s, cfg.dist_th_tp, name)
        tp_err[name] = {}
        for m in TP_METRICS:
            if not len(g) or (m == "vel_err" and name in NO_VELOCITY_CLASSES):
                tp_err[name][m] = float("nan")
            else:
                tp_err[name][m] = calc_tp(curve_tp, m, cfg.min_recall)
    return ap, tp_err, n_gt


def _nanmean(values) -> float:
    a = np.asarray(list(values), np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def evaluate(frames: Sequence[tuple[Obstacles, Obstacles]], config: EvalConfig | None = None) -> DetectionReport:
    """Metrics over frames of (ground truth, predictions), both in base_link at the same T.

    Labels index `config.classes`; prediction `scores` rank detections.
    """
    cfg = config or EvalConfig()
    frames = list(frames)
    unobserved = _unobserved(frames, cfg)
    frames = [(gt.observed(cfg.min_gt_points), pred) for gt, pred in frames]  # once, not per class and band
    ap, tp_err, n_gt = _class_metrics(frames, cfg)
    class_ap = {c: _nanmean(v.values()) for c, v in ap.items()}
    mean_ap = _nanmean(class_ap.values())
    mean_tp = {m: _nanmean(tp_err[c][m] for c in cfg.classes) for m in TP_METRICS}
    tp_scores = [1.0 - min(1.0, v) for v in mean_tp.values() if np.isfinite(v)]
    nds = (MEAN_AP_WEIGHT * (mean_ap if np.isfinite(mean_ap) else 0.0) + sum(tp_scores)) / (
        MEAN_AP_WEIGHT + len(TP_METRICS))
    per_band = {}
    for lo, hi in cfg.range_bands:
        b_ap, _, _ = _class_metrics(frames, cfg, (lo, hi))
        per_band[f"{lo:g}-{hi:g}"] = _nanmean(_nanmean(v.values()) for v in b_ap.values())
    return DetectionReport(ap, tp_err, mean_ap, mean_tp, nds, n_gt, per_band, cfg, unobserved)


def _unobserved(frames: Sequence[tuple[Obstacles, Obstacles]], cfg: EvalConfig) -> int:
    """Ground-truth boxes of the evaluated classes within range that `min_gt_points` leaves out."""
    n = 0
    for gt, _ in frames:
        if gt.num_points is None:
            continue
        b = np.asarray(gt.boxes, np.float64).reshape(-1, 9)
        inside = (np.hypot(b[:, 0], b[:, 1]) <= cfg.max_range) & (np.asarray(gt.labels) < len(cfg.classes))
        n += int((inside & (np.asarray(gt.num_points) < cfg.min_gt_points)).sum())
    return n
