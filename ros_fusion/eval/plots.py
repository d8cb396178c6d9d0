"""PNG pictures of an evaluation: the BEV scene and the report's plots (docs/DESIGN.md §9).

matplotlib is imported inside the functions, never at module level, so that
`ros-fusion --help` and every command that does not draw stays free of it. The
figures are built on `matplotlib.figure.Figure` directly (the Agg canvas, no
pyplot): no global figure state, no GUI backend chosen by the environment, and
safe to call from a process that also runs other threads.

The BEV picture follows the vehicle convention people read a map in: x forward
is up, y left is left (the horizontal axis shows y, inverted), so what is on the
car's left is on the picture's left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.types import Obstacles

MAX_LIDAR_POINTS = 50_000
VELOCITY_HORIZON_S = 0.5  # the velocity arrow shows where the object is this much later
RING_STEP_M = 10.0
EGO_LENGTH_M, EGO_WIDTH_M = 4.5, 1.9
BEV_SIZE_IN, BEV_DPI = 9.0, 100  # 900 × 900 px
GT_COLOR = "#2ca02c"
#: Prediction colours, one per class index (green is left out: it means ground truth).
CLASS_COLORS: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#9467bd", "#d62728", "#17becf", "#8c564b",
                                 "#e377c2", "#bcbd22", "#7f7f7f", "#000080")


@dataclass
class BevScene:
    """One frame to draw: ground truth and predictions in base_link, optionally the LiDAR points (base_link)."""

    gt: Obstacles
    pred: Obstacles
    classes: tuple[str, ...]
    lidar_xyz: np.ndarray | None = None
    title: str = ""
    range_m: float = 50.0
    mode: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.gt, Obstacles) or not isinstance(self.pred, Obstacles):
            raise ValueError("BevScene: gt and pred must be Obstacles")
        self.classes = tuple(self.classes)
        if not self.classes:
            raise ValueError("BevScene: classes must not be empty (labels index it)")
        if not (isinstance(self.range_m, (int, float)) and math.isfinite(self.range_m) and self.range_m > 0):
            raise ValueError(f"BevScene: range_m must be a positive finite number, got {self.range_m!r}")
        if self.lidar_xyz is not None:
            pts = np.asarray(self.lidar_xyz)
            if pts.ndim != 2 or pts.shape[1] < 2:
                raise ValueError(f"BevScene: lidar_xyz must be (N, 2+) coordinates, got shape {pts.shape}")


#: Pictures show detections at or above this score (the metrics use every detection).
PICTURE_MIN_SCORE = 0.3


def confident(obs: Obstacles, min_score: float = PICTURE_MIN_SCORE) -> Obstacles:
    """The detections worth drawing: a BEV picture of every low-score peak hides the real ones."""
    keep = np.asarray(obs.scores) >= min_score
    return obs.subset(keep)


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """(N, 4, 2) BEV corners (x, y) of boxes [x y z length width height yaw ...].

    Length lies along the box's heading (yaw about +z from base_link x), width
    across it. Corner order: front-left, front-right, rear-right, rear-left, so
    corners 0–1 are the front edge (where the heading tick points).
    """
    b = np.asarray(boxes, np.float64)
    if b.ndim == 1 and b.size >= 7:
        b = b[None]
    if b.ndim != 2 or (b.shape[0] and b.shape[1] < 7):
        raise ValueError(f"box_corners_bev: boxes must be (N, >=7) [x y z l w h yaw ...], got shape {b.shape}")
    if b.shape[0] == 0:
        return np.zeros((0, 4, 2))
    half_l, half_w = b[:, 3] / 2, b[:, 4] / 2
    local = np.stack([np.stack([half_l, half_w], -1), np.stack([half_l, -half_w], -1),
                      np.stack([-half_l, -half_w], -1), np.stack([-half_l, half_w], -1)], axis=1)  # (N, 4, 2)
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], axis=1)  # (N, 2, 2)
    return np.einsum("nij,nkj->nki", rot, local) + b[:, None, :2]


def _new_figure(width_in: float, height_in: float, dpi: int = BEV_DPI) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=dpi)


def _finite_rows(obs: Obstacles, n_classes: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Boxes whose drawn values are finite, with labels and scores; also how many were not (said in the title)."""
    boxes = np.asarray(obs.boxes, np.float64).reshape(-1, 9)
    labels = np.asarray(obs.labels).reshape(-1)
    scores = np.asarray(obs.scores, np.float64).reshape(-1)
    if len(labels) != len(boxes) or len(scores) != len(boxes):
        raise ValueError(f"BevScene.{what}: {len(boxes)} boxes but {len(labels)} labels and {len(scores)} scores")
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if bad.size:
        raise ValueError(f"BevScene.{what}: label {int(bad[0])} is outside the {n_classes} classes given")
    ok = np.isfinite(boxes[:, :7]).all(axis=1)
    return boxes[ok], labels[ok].astype(int), scores[ok], int((~ok).sum())


def render_bev(path: Path, scene: BevScene) -> Path:
    """Top view of `scene` as a ~900×900 PNG at `path` (see the module docstring for the axes)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Patch, Polygon, Rectangle

    path = Path(path)
    n_cls = len(scene.classes)
    gt, unseen_b, unseen_bad = scene.gt, np.zeros((0, 9)), 0
    if gt.num_points is not None and len(gt.num_points) == len(gt):
        # boxes no sensor return hit are not scored (devkit filter_eval_boxes): drawn dotted
        unseen_b, _, _, unseen_bad = _finite_rows(gt.subset(np.asarray(gt.num_points) < 1), n_cls, "gt")
        gt = gt.observed()
    gt_b, gt_l, _, gt_bad = _finite_rows(gt, n_cls, "gt")
    gt_bad += unseen_bad
    pr_b, pr_l, _, pr_bad = _finite_rows(scene.pred, n_cls, "pred")
    r = float(scene.range_m)
    fig = _new_figure(BEV_SIZE_IN, BEV_SIZE_IN)
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    handles: list[Any] = []
    if scene.lidar_xyz is not None and len(scene.lidar_xyz):
        pts = np.asarray(scene.lidar_xyz, np.float64)[:, :2]
        pts = pts[np.isfinite(pts).all(axis=1)]
        pts = pts[(np.abs(pts[:, 0]) <= r * 1.05) & (np.abs(pts[:, 1]) <= r * 1.05)]
        if len(pts) > MAX_LIDAR_POINTS:  # evenly strided: deterministic, keeps the scan's structure
            pts = pts[:: math.ceil(len(pts) / MAX_LIDAR_POINTS)]
        ax.scatter(pts[:, 1], pts[:, 0], s=0.3, c="#9a9a9a", linewidths=0, rasterized=True, zorder=1)
        handles.append(Line2D([], [], ls="", marker=".", color="#9a9a9a", label=f"LiDAR ({len(pts)} pts)"))
    for k in range(1, int(r // RING_STEP_M) + 1):
        rad = k * RING_STEP_M
        ax.add_patch(Circle((0, 0), rad, fill=False, ec="#d0d0d0", lw=0.8, ls="--", zorder=0))
        ax.text(-rad * math.sin(math.radians(35)), rad * math.cos(math.radians(35)), f"{rad:g} m",
                fontsize=7, color="#a0a0a0", ha="center", va="center", zorder=0)
    # ego: a rectangle around the origin, pointing up (x forward)
    ax.add_patch(Rectangle((-EGO_WIDTH_M / 2, -EGO_LENGTH_M / 2), EGO_WIDTH_M, EGO_LENGTH_M, fc="#303030",
                           ec="black", zorder=5))
    ax.plot([0, 0], [0, EGO_LENGTH_M / 2 + 1.0], color="black", lw=1.5, zorder=5)
    for corners in box_corners_bev(gt_b):
        ax.add_patch(Polygon(corners[:, ::-1], closed=True, fill=False, ec=GT_COLOR, lw=1.6, zorder=3))
    if len(gt_b):
        handles.append(Patch(fill=False, ec=GT_COLOR, lw=1.6, label=f"ground truth ({len(gt_b)})"))
    for corners in box_corners_bev(unseen_b):
        ax.add_patch(Polygon(corners[:, ::-1], closed=True, fill=False, ec=GT_COLOR, lw=1.0, ls=":", alpha=0.7,
                             zorder=3))
    if len(unseen_b):
        handles.append(Patch(fill=False, ec=GT_COLOR, lw=1.0, ls=":",
                             label=f"no sensor return, not scored ({len(unseen_b)})"))
    pr_corners = box_corners_bev(pr_b)
    for i, corners in enumerate(pr_corners):
        color = CLASS_COLORS[pr_l[i] % len(CLASS_COLORS)]
        ax.add_patch(Polygon(corners[:, ::-1], closed=True, fc=color, ec=color, alpha=0.45, lw=1.0, zorder=4))
        cx, cy = pr_b[i, 0], pr_b[i, 1]
        front = corners[:2].mean(axis=0)
        ax.plot([cy, front[1]], [cx, front[0]], color=color, lw=1.6, zorder=4)
        vx, vy = pr_b[i, 7], pr_b[i, 8]
        if np.isfinite(vx) and np.isfinite(vy) and math.hypot(vx, vy) * VELOCITY_HORIZON_S > 0.2:
            ax.annotate("", xy=(cy + vy * VELOCITY_HORIZON_S, cx + vx * VELOCITY_HORIZON_S), xytext=(cy, cx),
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2}, zorder=6)
    for k in sorted(set(pr_l.tolist())):
        color = CLASS_COLORS[k % len(CLASS_COLORS)]
        handles.append(Patch(fc=color, ec=color, alpha=0.6, label=f"{scene.classes[k]} ({int((pr_l == k).sum())})"))
    ax.set_xlim(r, -r)  # horizontal = y, inverted: +y (left of the car) is on the left
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.set_xlabel("y [m] (left +)")
    ax.set_ylabel("x [m] (forward +)")
    head = [t for t in (scene.title, f"mode {scene.mode}" if scene.mode else "") if t]
    counts = f"GT {len(gt_b)}, predicted {len(pr_b)}"
    if gt_bad or pr_bad:
        counts += f" ({gt_bad + pr_bad} non-finite boxes not drawn)"
    ax.set_title(" — ".join([*head, counts]), fontsize=10)
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=BEV_DPI)
    return path


# ----------------------------------------------------------------------------- report plots
def _num(v: Any) -> float:
    """A value from a metrics dict as float; None/non-numbers → NaN (drawn as a gap, never as 0)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return float("nan")
    return float(v)


def plot_robustness(path: Path, robustness: Mapping[str, Any], metric: str = "mAP") -> Path:
    """Heatmap patterns × strategies of `metric`, values written in the cells, each row's best in bold."""
    from matplotlib import colormaps

    patterns: Sequence[str] = list(robustness.get("patterns", []))
    strategies: Sequence[str] = list(robustness.get("strategies", []))
    table = robustness.get(metric, {})
    if not patterns or not strategies or not isinstance(table, Mapping):
        raise ValueError(f"plot_robustness: robustness needs 'patterns', 'strategies' and a '{metric}' table")
    vals = np.array([[_num(table.get(p, {}).get(s)) for s in strategies] for p in patterns])
    best = robustness.get("best", {}) if isinstance(robustness.get("best"), Mapping) else {}
    fig = _new_figure(1.8 + 1.5 * len(strategies), 1.4 + 0.55 * len(patterns))
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="#e8e8e8")
    vmax = max(1e-6, float(np.nanmax(vals))) if np.isfinite(vals).any() else 1.0
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    for i, p in enumerate(patterns):
        for j, s in enumerate(strategies):
            v = vals[i, j]
            text = "—" if not np.isfinite(v) else f"{v:.3f}"
            norm = im.norm(v) if np.isfinite(v) else 1.0
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    fontweight="bold" if best.get(p) == s else "normal", color="white" if norm < 0.6 else "black")
    ax.set_xticks(range(len(strategies)), strategies)
    ax.set_yticks(range(len(patterns)), patterns)
    ax.set_title(f"robustness: {metric} per sensor pattern × fusion strategy (bold: best)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=BEV_DPI)
    return Path(path)


def _bars(path: Path, labels: Sequence[str], series: Mapping[str, Sequence[float]], title: str, ylabel: str,
          ylim_one: bool) -> Path:
    fig = _new_figure(max(5.0, 1.0 + 0.9 * len(labels) * max(1, len(series)) ** 0.5), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for k, (name, vals) in enumerate(series.items()):
        v = np.array([_num(a) for a in vals])
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, np.nan_to_num(v, nan=0.0), width, label=name)
        for rect, val in zip(bars, v, strict=True):
            ax.text(rect.get_x() + rect.get_width() / 2, rect.get_height(),
                    "n/a" if not np.isfinite(val) else f"{val:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 6 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ylim_one:
        ax.set_ylim(0, 1.08)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=BEV_DPI)
    return Path(path)


def plot_per_class_ap(path: Path, per_class: Mapping[str, Any], devkit: Mapping[str, Any] | None = None) -> Path:
    """AP per class (mean over the distance thresholds); nuscenes-devkit's next to it when given."""
    if not per_class:
        raise ValueError("plot_per_class_ap: no per-class AP to draw")
    names = list(per_class)
    series = {"ros_fusion": [per_class[c] for c in names]}
    if devkit:
        series["nuscenes-devkit"] = [devkit.get(c) for c in names]
    return _bars(path, names, series, "AP per class (n/a: no ground truth)", "AP", True)


def plot_range_bands(path: Path, per_band: Mapping[str, Any]) -> Path:
    """mAP per distance band from the ego."""
    if not per_band:
        raise ValueError("plot_range_bands: no range bands to draw")
    names = list(per_band)
    return _bars(path, [f"{b} m" for b in names], {"mAP": [per_band[b] for b in names]}, "mAP per range band",
                 "mAP", True)


def plot_latency(path: Path, latency: Mapping[str, Mapping[str, Any]]) -> Path:
    """p50/p95/p99 per stage in milliseconds (a stage that lacks a percentile shows n/a)."""
    if not latency:
        raise ValueError("plot_latency: no latency statistics to draw")
    stages = list(latency)
    series = {q: [latency[s].get(q) if isinstance(latency[s], Mapping) else None for s in stages]
              for q in ("p50", "p95", "p99")}
    return _bars(path, stages, series, "latency per stage", "ms", False)
