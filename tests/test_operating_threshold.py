"""The model's operating threshold: fitted on validation frames, published in the manifest, used by the node."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_fusion.core.rig import ConfigError, load_rig
from ros_fusion.core.types import Obstacles
from ros_fusion.eval.policy_fit import OPERATING_THRESHOLDS, fit_operating_threshold
from ros_fusion.paths import default_rig_path, share_dir
from ros_fusion.runtime.pipeline import PipelineConfig

CLASSES = ("car", "pedestrian")


def _obs(rows: list[tuple[float, float, int, float]]) -> Obstacles:
    boxes = np.zeros((len(rows), 9), np.float32)
    for i, (x, y, _, _) in enumerate(rows):
        boxes[i, :7] = (x, y, 0.8, 4.5, 1.9, 1.6, 0.0)
    return Obstacles(0, "base_link", boxes, np.asarray([r[3] for r in rows], np.float32),
                     np.asarray([r[2] for r in rows], np.int32), np.zeros((len(rows), 3), np.float32))


def everywhere(xyz: np.ndarray) -> np.ndarray:
    return np.ones(len(xyz), bool)


def test_lowest_threshold_within_the_false_positive_bound() -> None:
    gt = _obs([(10, 0, 0, 1), (20, 0, 0, 1)])
    # per frame: two true cars (0.9, 0.5) and false ones scoring 0.2, 0.32 and 0.42 (one a pedestrian)
    pred = _obs([(10, 0, 0, 0.9), (20, 0.5, 0, 0.5), (30, 8, 0, 0.2), (25, -6, 1, 0.32), (15, 9, 0, 0.42)])
    frames = [(gt, pred)] * 4
    th, reached = fit_operating_threshold(frames, [everywhere] * 4, CLASSES, max_false_per_frame=1.0)
    assert th == 0.35 and reached["met"] and reached["false_per_frame"] == 1.0
    assert reached["recall"]["car"]["30"] == 1.0 and reached["frames"] == 4
    th, reached = fit_operating_threshold(frames, [everywhere] * 4, CLASSES, max_false_per_frame=0.0)
    assert th == 0.45 and reached["recall"]["car"]["30"] == 1.0
    # nothing meets the bound: the highest candidate, reported as not met
    flood = _obs([(x, 30.0, 0, 0.99) for x in range(5, 45, 5)])
    th, reached = fit_operating_threshold([(gt, flood)], [everywhere], CLASSES, max_false_per_frame=1.0)
    assert th == OPERATING_THRESHOLDS[-1] and not reached["met"]
    with pytest.raises(ValueError, match="no frames"):
        fit_operating_threshold([], [], CLASSES)


def test_manifest_threshold_is_read_and_checked() -> None:
    cfg = PipelineConfig.from_manifest({"fusion": {"score_threshold": 0.35}})
    assert cfg.operating_threshold == 0.35 and cfg.score_threshold == 0.1  # offline decoding stays low for AP
    assert PipelineConfig.from_manifest({}).operating_threshold is None
    for bad in (1.5, "high", True):
        with pytest.raises(ConfigError, match="fusion.score_threshold"):
            PipelineConfig.from_manifest({"fusion": {"score_threshold": bad}})


def test_node_publishes_from_the_models_threshold_unless_set(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    pytest.importorskip("onnxruntime")
    from ros_fusion.ros.fusion_node import load_pipeline
    from ros_fusion.ros.params import FusionNodeParams

    models = tmp_path / "models"
    shutil.copytree(share_dir() / "models", models)
    manifest = yaml.safe_load((models / "manifest.yaml").read_text())
    manifest.setdefault("fusion", {})["score_threshold"] = 0.4
    (models / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    rig = load_rig(default_rig_path())
    assert load_pipeline(FusionNodeParams(models_dir=str(models)), rig).config.score_threshold == 0.4
    assert load_pipeline(FusionNodeParams(models_dir=str(models), score_threshold=0.2), rig
                         ).config.score_threshold == 0.2
    shipped = load_pipeline(FusionNodeParams(), rig).config
    assert shipped.operating_threshold is None and shipped.score_threshold == 0.1
