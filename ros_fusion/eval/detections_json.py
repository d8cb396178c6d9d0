"""Detections (and the ground truth they were scored against) as nuScenes detection-results JSON.

Why: so that anyone can score ros_fusion's detections with their own tools (nuscenes-devkit,
a KITTI-style scorer, a spreadsheet) instead of trusting our metrics. The layout is the
nuScenes submission format — ``{"meta": {...}, "results": {sample_token: [box, ...]}}`` with
each box ``sample_token, translation, size, rotation, velocity, detection_name,
detection_score, attribute_name`` — with two documented differences: boxes are in each
frame's base_link (a bag has no global map pose), and a sample token is
``"<bag>:<stamp_ns>"``. nuScenes orders `size` as width, length, height and `rotation` as a
(w, x, y, z) quaternion; our boxes are [x y z length width height yaw vx vy].
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.types import Obstacles
from .devkit_check import NUSCENES_NAME, yaw_quaternion

#: Written into "meta": this is not a nuScenes split, so the devkit's own loader needs its boxes regrouped.
FORMAT_NOTE = ("nuScenes detection-results layout; translation in each frame's base_link (no global pose); "
               "sample_token = '<bag>:<stamp_ns>'")


def sample_token(bag: str, stamp_ns: int) -> str:
    return f"{bag}:{int(stamp_ns)}"


def _boxes(token: str, obs: Obstacles, classes: Sequence[str], score: bool) -> list[dict[str, Any]]:
    out = []
    boxes = np.asarray(obs.boxes, np.float64).reshape(-1, 9)
    for k, b in enumerate(boxes):
        lab = int(obs.labels[k])
        if not (0 <= lab < len(classes)) or not np.isfinite(b[:7]).all():
            continue  # nothing a scorer could read; ros_fusion never publishes such a box (docs/DESIGN.md §10)
        vx, vy = (float(v) if math.isfinite(v) else 0.0 for v in b[7:9])
        out.append({
            "sample_token": token,
            "translation": [float(b[0]), float(b[1]), float(b[2])],
            "size": [float(b[4]), float(b[3]), float(b[5])],  # width, length, height
            "rotation": list(yaw_quaternion(float(b[6]))),
            "velocity": [vx, vy],
            "detection_name": NUSCENES_NAME.get(classes[lab], classes[lab]),
            "detection_score": float(obs.scores[k]) if score else -1.0,
            "attribute_name": "",
        })
    return out


def results_json(frames: Sequence[tuple[str, int, Obstacles | None, Obstacles | None]], classes: Sequence[str],
                 meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(detections, ground truth) documents from (bag, stamp_ns, ground truth, prediction) per scored frame.

    Every frame with ground truth gets a token in both (an empty list when nothing was detected), so a
    scorer counts its misses; frames whose bundle failed (prediction None) are left out of both.
    """
    det: dict[str, list[dict[str, Any]]] = {}
    gt: dict[str, list[dict[str, Any]]] = {}
    for bag, stamp, truth, pred in frames:
        if truth is None or pred is None:
            continue
        token = sample_token(bag, stamp)
        det[token] = _boxes(token, pred, classes, score=True)
        gt[token] = _boxes(token, truth, classes, score=False)
    head = {**meta, "format": FORMAT_NOTE}
    return {"meta": head, "results": det}, {"meta": {**head, "ground_truth": True}, "results": gt}


def write_results(path: Path, frames: Sequence[tuple[str, int, Obstacles | None, Obstacles | None]],
                  classes: Sequence[str], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write the detections to `path` and the ground truth beside it (`<stem>.ground_truth.json`)."""
    det, gt = results_json(frames, classes, meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gt_path = path.with_name(f"{path.stem}.ground_truth.json")
    path.write_text(json.dumps(det, indent=1) + "\n", encoding="utf-8")
    gt_path.write_text(json.dumps(gt, indent=1) + "\n", encoding="utf-8")
    return path, gt_path
