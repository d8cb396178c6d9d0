"""Every shipped model bundle loads, fits the rig it was trained for and carries its measured numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ros_fusion.core.rig import load_rig
from ros_fusion.runtime.model_bundle import load_bundle
from ros_fusion.runtime.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parent.parent
#: bundle folder → the rig file it serves
BUNDLES = {ROOT / "models": ROOT / "config" / "rig_default.yaml",
           ROOT / "models" / "astyx_hires2019": ROOT / "config" / "rig_astyx_hires2019.yaml"}


@pytest.mark.parametrize("folder", sorted(BUNDLES), ids=lambda p: p.name)
def test_bundle_verifies_and_fits_its_rig(folder: Path) -> None:
    bundle = load_bundle(folder)  # sha256 of every file checked
    rig = load_rig(BUNDLES[folder])
    bundle.check_rig(rig)
    cfg = PipelineConfig.from_manifest(bundle.raw)
    assert cfg.policy and cfg.calibration  # fitted on validation data
    assert bundle.raw.get("metrics"), "a shipped bundle records what it reached"


def test_astyx_bundle_publishes_its_operating_point_and_test_numbers() -> None:
    raw = load_bundle(ROOT / "models" / "astyx_hires2019").raw
    fusion = raw["fusion"]
    assert 0.1 <= fusion["score_threshold"] < 1.0
    assert fusion["fitted_on"]["operating_point"]["frames"] == 60  # the validation frames 000340-000399
    test = raw["metrics"]["astyx_test_split"]
    assert test["frames"] == 146 and test["operating_threshold"] == fusion["score_threshold"]
    assert {"car_AP", "car_recall_30m", "false_cars_per_frame", "car_AP_lidar_missing"} <= set(test)
    assert raw["training"]["train"]["rigs"] and "astyx" in raw["training"]["train"]["rigs"][0]


def test_every_bundle_folder_is_listed() -> None:
    folders = {p.parent for p in (ROOT / "models").glob("*/manifest.yaml")} | {ROOT / "models"}
    assert folders == set(BUNDLES), "a new bundle needs its rig here (and in setup.py's data_files glob)"


def test_node_on_the_astyx_rig_publishes_from_the_bundles_threshold() -> None:
    pytest.importorskip("rclpy")
    pytest.importorskip("onnxruntime")
    from ros_fusion.ros.fusion_node import load_pipeline
    from ros_fusion.ros.params import FusionNodeParams

    folder = ROOT / "models" / "astyx_hires2019"
    rig = load_rig(BUNDLES[folder])
    pipe = load_pipeline(FusionNodeParams(models_dir=str(folder)), rig)
    assert pipe.config.score_threshold == load_bundle(folder).raw["fusion"]["score_threshold"]
    assert pipe.model.root == folder
