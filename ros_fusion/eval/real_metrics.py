"""Recall within a range and false positives per frame, inside the region a real dataset labels.

Why beside the nuScenes-style AP (`eval.detection_metrics`): real datasets label only part of what the
sensors see (KITTI and Astyx: the front camera's view), so a detection outside that region is neither right
nor wrong and must not count as a false positive; and "how many of the cars within 30 m did it find, at the
score a user would run it with" is the number a user asks first, which AP (averaged over thresholds and
distances) does not answer.

Matching (`match_frame`): per class, detections at or above the score threshold are taken in descending
score order, each matched to the nearest unmatched ground-truth box of its class whose BEV centre is within
`match_m`; a detection inside the region and the range that matches nothing is a false positive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.rig import Rig
from ..core.types import Modality, Obstacles

Region = Callable[[np.ndarray], np.ndarray]  # (N, 3) base_link points -> (N,) bool


@dataclass
class RangeCount:
    """Found and labelled boxes of one class within one range."""

    found: int = 0
    total: int = 0

    @property
    def recall(self) -> float:
        return self.found / self.total if self.total else float("nan")


@dataclass
class RealScore:
    """Recall per class and range, false positives per class, over `frames` frames."""

    ranges: tuple[float, ...]
    frames: int = 0
    recall: dict[str, dict[float, RangeCount]] = field(default_factory=dict)
    false_positives: dict[str, int] = field(default_factory=dict)

    def fp_per_frame(self, name: str) -> float:
        return self.false_positives.get(name, 0) / self.frames if self.frames else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "recall": {c: {f"{r:g}": {"found": v.found, "total": v.total, "recall": v.recall}
                           for r, v in by.items()} for c, by in self.recall.items()},
            "false_positives_per_frame": {c: self.fp_per_frame(c) for c in self.false_positives},
        }


def camera_view(rig: Rig, margin_px: float = 0.0) -> Region:
    """Points (base_link) in front of any of the rig's cameras that project inside its image (pinhole, P).

    The labelled region of a KITTI- or Astyx-style dataset. A rig without cameras with intrinsics sees
    everywhere (every point is inside).
    """
    cams = [s for s in rig.of(Modality.CAMERA) if s.intrinsics is not None]

    def inside(xyz: np.ndarray) -> np.ndarray:
        pts = np.asarray(xyz, np.float64).reshape(-1, 3)
        if not cams:
            return np.ones(len(pts), bool)
        out = np.zeros(len(pts), bool)
        homo = np.column_stack((pts, np.ones(len(pts))))
        for s in cams:
            k = s.intrinsics
            in_cam = homo @ np.linalg.inv(np.asarray(s.extrinsic, np.float64)).T  # base_link -> camera
            uvw = in_cam @ k.projection().T
            front = uvw[:, 2] > 0.1
            with np.errstate(divide="ignore", invalid="ignore"):
                u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
            in_u = (u >= -margin_px) & (u < k.width + margin_px)
            out |= front & in_u & (v >= -margin_px) & (v < k.height + margin_px)
        return out

    return inside


def match_frame(gt: Obstacles, pred: Obstacles, classes: Sequence[str], region: Region, score_threshold: float,
                ranges: Sequence[float], match_m: float, into: RealScore) -> None:
    """Add one frame's matches to `into` (see module docstring)."""
    into.frames += 1
    max_r = max(ranges)
    g_in = region(gt.boxes[:, :3]) if len(gt) else np.zeros(0, bool)
    keep = np.asarray(pred.scores) >= score_threshold
    p_boxes, p_labels, p_scores = pred.boxes[keep], pred.labels[keep], pred.scores[keep]
    p_in = region(p_boxes[:, :3]) if len(p_boxes) else np.zeros(0, bool)
    g_range = np.hypot(gt.boxes[:, 0], gt.boxes[:, 1])
    p_range = np.hypot(p_boxes[:, 0], p_boxes[:, 1])
    for label, name in enumerate(classes):
        gi = np.flatnonzero((gt.labels == label) & g_in)
        pi = np.flatnonzero(p_labels == label)
        pi = pi[np.argsort(-p_scores[pi], kind="stable")]
        taken = np.zeros(len(gi), bool)
        matched_pred = np.zeros(len(pi), bool)
        for k, j in enumerate(pi):
            if not len(gi):
                break
            d = np.hypot(gt.boxes[gi, 0] - p_boxes[j, 0], gt.boxes[gi, 1] - p_boxes[j, 1])
            d[taken] = np.inf
            best = int(np.argmin(d))
            if d[best] <= match_m:
                taken[best] = True
                matched_pred[k] = True
        by = into.recall.setdefault(name, {float(r): RangeCount() for r in ranges})
        for r in ranges:
            near = g_range[gi] <= r
            by[float(r)].total += int(np.count_nonzero(near))
            by[float(r)].found += int(np.count_nonzero(near & taken))
        fp = ~matched_pred & p_in[pi] & (p_range[pi] <= max_r)
        into.false_positives[name] = into.false_positives.get(name, 0) + int(np.count_nonzero(fp))


def score_real(frames: Sequence[tuple[Obstacles, Obstacles]], classes: Sequence[str],
               region: Region | Sequence[Region], *, score_threshold: float, ranges: Sequence[float] = (30.0, 50.0),
               match_m: float = 2.0) -> RealScore:
    """Recall ≤ each range and false positives per frame (≤ the largest range) over (gt, pred) frames.

    `region`: one for every frame, or one per frame (frames pooled from bags of different rigs).
    """
    regions = [region] * len(frames) if callable(region) else list(region)
    if len(regions) != len(frames):
        raise ValueError(f"{len(regions)} regions for {len(frames)} frames")
    out = RealScore(tuple(float(r) for r in ranges))
    for (gt, pred), reg in zip(frames, regions, strict=True):
        match_frame(gt, pred, classes, reg, score_threshold, ranges, match_m, out)
    return out


def labelled_frames(records: Iterable[Any], rig: Rig) -> tuple[list[tuple[Obstacles, Obstacles]], list[Region]]:
    """The (gt, pred) frames of one bag's evaluated records that have both, each with the rig's labelled region."""
    region = camera_view(rig)
    frames = [(r.gt, r.pred) for r in records if r.gt is not None and r.pred is not None]
    return frames, [region] * len(frames)


def in_region(obs: Obstacles, region: Region, max_range: float) -> Obstacles:
    """The boxes of `obs` inside `region` and within `max_range` (BEV) — for AP over the labelled region."""
    if not len(obs):
        return obs
    keep = region(obs.boxes[:, :3]) & (np.hypot(obs.boxes[:, 0], obs.boxes[:, 1]) <= max_range)
    return obs.subset(keep)
