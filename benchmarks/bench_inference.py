"""ONNX Runtime CPU inference of every stage for 1 camera, 1 LiDAR, 1 radar (budget ≤ 30 ms p50, docs/results.md §6).

Runs the shipped bundle (`models/`) the way the pipeline does in intermediate fusion: the
four encoders, then fusion+head, batch 1, through the `onnxruntime` backend (input checks
included). Also times the torch forward + backward of one training batch (4) for the
training budget. p99 is printed from the benchmark's own samples.
"""

from __future__ import annotations

import numpy as np
import pytest

from ros_fusion.models.network import NetConfig
from ros_fusion.paths import share_dir
from ros_fusion.runtime.backends import STAGE_IO, create_backend
from ros_fusion.runtime.model_bundle import load_bundle

torch = pytest.importorskip("torch")

from ros_fusion.models.export import sample_inputs  # noqa: E402


def _inputs(cfg: NetConfig, batch: int = 1) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in sample_inputs(cfg, batch=batch, n_cameras=1, seed=0).items()}


def _p99(benchmark) -> None:
    data = getattr(getattr(benchmark, "stats", None), "stats", None)
    if data is not None and getattr(data, "data", None):
        ms = np.asarray(data.data) * 1e3
        print(f"\n{benchmark.name}: p50 {np.median(ms):.2f} ms  p99 {np.percentile(ms, 99):.2f} ms  n={len(ms)}")


def _stage_chain(be, x: dict[str, np.ndarray]):
    def infer() -> dict[str, np.ndarray]:
        feats: dict[str, np.ndarray] = {}
        for stage in ("camera", "lidar", "radar", "imu"):
            feats |= be.run(stage, {n: x[n] for n in STAGE_IO[stage][0]})
        return be.run("fusion_head", feats | {"coverage": x["coverage"], "present": x["present"]})

    return infer


def _bench_ort(benchmark, providers: str, rounds: int, warmup: int) -> None:
    bundle = load_bundle(share_dir() / "models")
    cfg = NetConfig(**bundle.raw["network"]["config"])
    be = create_backend("onnxruntime", bundle, providers=providers)
    out = benchmark.pedantic(_stage_chain(be, _inputs(cfg)), rounds=rounds, warmup_rounds=warmup)
    assert out["heatmap"].shape == (1, 6, 64, 64)
    _p99(benchmark)


def _bench_train_step(benchmark, device: str, rounds: int) -> None:
    """One AdamW step of the default network on a batch of 4 (forward, a stand-in loss, backward)."""
    from ros_fusion.models.network import FusionNet

    torch.manual_seed(0)
    net = FusionNet().train().to(device)
    x = {k: torch.from_numpy(v).to(device) for k, v in _inputs(net.cfg, batch=4).items()}
    opt = torch.optim.AdamW(net.parameters())

    def step() -> float:
        out = net(x)
        loss = out["heatmap"].sigmoid().mean() + out["regression"].abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())  # on a GPU this synchronises, so the time is the step's

    assert np.isfinite(benchmark.pedantic(step, rounds=rounds, warmup_rounds=1))
    _p99(benchmark)


def test_ort_cpu_all_stages(benchmark):
    _bench_ort(benchmark, "CPUExecutionProvider", rounds=100, warmup=5)


def test_torch_train_step_batch4(benchmark):
    torch.set_num_threads(2)
    _bench_train_step(benchmark, "cpu", rounds=10)


def test_torch_cuda_all_stages(benchmark):
    """Batch 1 on a CUDA GPU through the torch backend, host↔device copies included (docs/results.md §6).

    Weights are random (the timing depends on the architecture in the manifest, not the
    values); skipped where torch sees no GPU.
    """
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    from ros_fusion.models.network import FusionNet

    bundle = load_bundle(share_dir() / "models")
    cfg = NetConfig(**bundle.raw["network"]["config"])
    torch.manual_seed(0)
    be = create_backend("torch", bundle, model=FusionNet(cfg), device="cuda")
    out = benchmark.pedantic(_stage_chain(be, _inputs(cfg)), rounds=200, warmup_rounds=20)
    assert out["heatmap"].shape == (1, 6, 64, 64) and np.isfinite(out["heatmap"]).all()
    _p99(benchmark)


def test_ort_cuda_all_stages(benchmark):
    """The shipped ONNX files on ONNX Runtime's CUDA provider (onnxruntime-gpu); skipped without it."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    _bench_ort(benchmark, "CUDAExecutionProvider", rounds=200, warmup=20)


def test_torch_cuda_train_step_batch4(benchmark):
    """One training step (batch 4) on a CUDA GPU, for the training-time budget; skipped without a GPU."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    _bench_train_step(benchmark, "cuda", rounds=50)
