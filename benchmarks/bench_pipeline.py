"""One bundle through the whole FusionPipeline (run: python -m pytest benchmarks/bench_pipeline.py --benchmark-only).

Why next to `ros-fusion bench`: that command sweeps rigs and writes a report; this is the
one number to watch in `make bench` for regressions — `FusionPipeline.process` on the
default rig (1 camera) with a 100k-point sweep, intermediate and late fusion, fed the way
the bench feeds it (simulated drive, LiDAR resampled, IMU added before each bundle; the
bundle building and IMU feeding happen in the untimed setup).
"""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.core.rig import load_rig
from ros_fusion.eval import bench as B
from ros_fusion.paths import default_rig_path

pytest.importorskip("onnxruntime")

POINTS = 100_000


@pytest.fixture(scope="module")
def setup():
    from ros_fusion.commands.eval import load_model_and_backend

    rig = load_rig(default_rig_path())
    model, backend = load_model_and_backend(None, "onnxruntime", 2)
    return rig, model, backend, B.simulate_inputs(rig, 20, seed=0)


def _p99(benchmark) -> None:
    data = getattr(getattr(benchmark, "stats", None), "stats", None)
    if data is not None and getattr(data, "data", None):
        ms = np.asarray(data.data) * 1e3
        print(f"\n{benchmark.name}: p50 {np.median(ms):.2f} ms  p99 {np.percentile(ms, 99):.2f} ms  n={len(ms)}")


@pytest.mark.parametrize("strategy", ["intermediate", "late"])
def test_bench_pipeline_process_1cam_100k(benchmark, setup, strategy: str) -> None:
    rig, model, backend, drive = setup
    rig1 = B.scaled_rig(rig, 1)
    pipeline = B.make_pipeline(rig1, model, backend, strategy)
    src = B.BundleSource(drive, rig1, POINTS, seed=0)

    def next_bundle():
        return (src.next(pipeline.add_imu),), {}

    res = benchmark.pedantic(pipeline.process, setup=next_bundle, rounds=20, warmup_rounds=2)
    assert res.mode == strategy and set(res.modalities) == {"camera", "lidar", "radar"}
    assert not any(k.startswith("ego_unavailable") for k in pipeline.counters), dict(pipeline.counters)
    benchmark.extra_info.update(points=POINTS, cameras=1, strategy=strategy, backend=backend.describe())
    _p99(benchmark)
