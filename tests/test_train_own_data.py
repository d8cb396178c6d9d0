"""The train-on-your-own-data path of docs/train_own_data.md, a few steps on the Astyx fixtures.

convert → dataset --train-bags/--val-bags → train --init … → export → eval, through the CLI exactly as
the guide writes it. The weights are a smoke result (3 frames, 2 steps), never shipped; what is checked is
that every step hands the next what it needs: bags + rig, shards with targets, a checkpoint whose
provenance names the real data and its source checkpoint, a verified bundle that `eval` loads on the
converted rig. Skipped where ../shared/realdata is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ros_fusion.cli import main as cli

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

ASTYX = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "astyx_hires2019"


@pytest.mark.skipif(not ASTYX.is_dir(), reason=f"{ASTYX} not present")
def test_astyx_fixtures_convert_train_export_evaluate(tmp_path: Path) -> None:
    d = tmp_path
    assert cli(["convert", "astyx", "--root", str(ASTYX), "--frames", "000000-000001", "-o", str(d / "train"),
                "-q"]) == 0
    assert cli(["convert", "astyx", "--root", str(ASTYX), "--frames", "000002", "-o", str(d / "val"), "-q"]) == 0
    train_bags, val_bags = sorted((d / "train").glob("*.mcap")), sorted((d / "val").glob("*.mcap"))
    assert len(train_bags) == len(val_bags) == 1
    assert cli(["dataset", "-o", str(d / "ds"), "--train-bags", *map(str, train_bags), "--val-bags",
                *map(str, val_bags), "-q"]) == 0
    manifest = json.loads((d / "ds" / "manifest.json").read_text())
    assert manifest["source"] == "bags" and {b["split"] for b in manifest["bags"]} == {"train", "val"}
    # a first model from scratch, then fine-tuned from it with --init (the guide's second step)
    assert cli(["train", "--data", str(d / "ds"), "--out", str(d / "run0"), "--max-steps", "1", "--threads", "1",
                "--precise-bn", "1", "--feat", "8", "-q"]) == 0
    assert cli(["train", "--data", str(d / "ds"), "--out", str(d / "run"), "--init", str(d / "run0" / "last.pt"),
                "--max-steps", "2", "--threads", "1", "--precise-bn", "1", "--feat", "8", "--p-mirror", "0.5",
                "-q"]) == 0
    assert cli(["export", str(d / "run" / "best.pt"), "-o", str(d / "model"), "--status",
                "smoke — not the trained model"]) == 0
    bundle = yaml.safe_load((d / "model" / "manifest.yaml").read_text())
    training = bundle["training"]
    assert training["train"]["rigs"] == [manifest["bags"][0]["rig"]] and "astyx" in training["train"]["rigs"][0]
    assert training["train_config"]["p_mirror"] == 0.5
    assert "run0" in json.dumps(training["init_from"])  # the fine-tune names its source checkpoint
    assert cli(["eval", *map(str, val_bags), "--models", str(d / "model"), "--no-robustness", "-o",
                str(d / "eval"), "-q"]) == 0
    metrics = json.loads((d / "eval" / "metrics.json").read_text())
    assert metrics["bundles"]["failed"] == 0 and metrics["bundles"]["with_ground_truth"] == 1
