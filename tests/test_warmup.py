"""Warm start: every stage runs once on synthetic data, and the run leaves no trace in the pipeline."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import Modality
from ros_fusion.paths import default_rig_path, share_dir
from ros_fusion.runtime.pipeline import FusionPipeline, PipelineConfig
from ros_fusion.runtime.warmup import LIDAR_POINTS, synthetic_bundle, warm_up

pytest.importorskip("onnxruntime")


@cache
def _model():
    from ros_fusion.runtime.backends import create_backend
    from ros_fusion.runtime.model_bundle import load_bundle

    model = load_bundle(share_dir() / "models")
    return model, create_backend("onnxruntime", model, providers=["CPUExecutionProvider"], threads=2)


def _pipeline() -> FusionPipeline:
    model, backend = _model()
    return FusionPipeline(load_rig(default_rig_path()), model, backend, PipelineConfig.from_manifest(model.raw))


def test_synthetic_bundle_has_every_fused_sensor_of_the_rig():
    p = _pipeline()
    b = synthetic_bundle(p)
    fused = {s.name for s in p.rig.sensors.values()
             if s.modality in (Modality.LIDAR, Modality.RADAR, Modality.CAMERA)}
    assert set(b.members) == fused
    lidar = b.members[p.rig.of(Modality.LIDAR)[0].name].payload
    assert len(lidar) == LIDAR_POINTS and lidar.has("intensity")
    radar = b.members[p.rig.of(Modality.RADAR)[0].name].payload
    assert radar.has("v_r") and radar.has("rcs")
    cam = p.rig.of(Modality.CAMERA)[0]
    img = b.members[cam.name].payload
    assert img.data.shape == (cam.intrinsics.height, cam.intrinsics.width, 3)


def test_warm_up_runs_every_path_and_reports_each_run():
    rep = warm_up(_pipeline(), rounds=2)
    assert len(rep.runs_ms["intermediate"]) == 2
    assert len(rep.runs_ms["late"]) == 1 and len(rep.runs_ms["prefetch"]) == 1
    assert all(v > 0 for runs in rep.runs_ms.values() for v in runs)
    assert rep.total_ms >= sum(sum(v) for v in rep.runs_ms.values())
    assert rep.obstacles is not None
    assert "intermediate" in rep.describe() and "late" in rep.describe()


def test_warm_up_leaves_no_trace():
    """Policy, counters, remembered sweeps and prefetched rasters are as before; the first real bundle
    after a warm-up gives exactly what it gives on a pipeline that never warmed up."""
    warmed, cold = _pipeline(), _pipeline()
    warm_up(warmed)
    assert warmed.policy.switches == [] and not warmed.policy.counts
    assert not warmed.counters and not warmed._sweeps and not warmed._prefetched
    assert warmed.last_prepared is None
    real = synthetic_bundle(cold, t_ns=5_000_000_000, seed=7)  # another scene, another time
    a, b = warmed.process(real), cold.process(real)
    assert a.mode == b.mode
    assert warmed.policy.switches == cold.policy.switches
    np.testing.assert_array_equal(a.obstacles.boxes, b.obstacles.boxes)
    np.testing.assert_array_equal(a.obstacles.scores, b.obstacles.scores)
    assert dict(warmed.counters) == dict(cold.counters)


def test_scratch_restores_state_when_a_run_fails():
    p = _pipeline()
    p.counters["before"] = 1
    with pytest.raises(RuntimeError), p.scratch():
        p.counters["inside"] += 1
        p._sweeps["lidar_top"] = {1: None}
        raise RuntimeError("boom")
    assert dict(p.counters) == {"before": 1}
    assert not p._sweeps
