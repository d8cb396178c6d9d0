"""Runtime backends: ONNX Runtime and torch agree; bad inputs refused; TensorRT when present (docs/DESIGN.md §3)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ros_fusion.core.types import RejectedInput
from ros_fusion.paths import share_dir
from ros_fusion.runtime.backends import (
    STAGE_IO,
    BackendUnavailable,
    EngineProfile,
    create_backend,
    engine_cache_key,
)
from ros_fusion.runtime.model_bundle import load_bundle

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from ros_fusion.models.export import export_all, sample_inputs, write_manifest  # noqa: E402
from ros_fusion.models.network import STAGES, FusionNet, NetConfig  # noqa: E402

SMALL = NetConfig(feat=16, cam_feat=8, imu_embed=8, gate_hidden=8, head_hidden=8)
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(5)
    net = FusionNet(SMALL).eval()
    out = tmp_path_factory.mktemp("model")
    write_manifest(out, export_all(net, out), cfg=SMALL, parameters=1, status="test", training={}, metrics={})
    return net, load_bundle(out)


def _feed(stage, seed=7):
    x = sample_inputs(SMALL, batch=1, n_cameras=1, seed=seed)
    return {n: x[n].numpy() for n in STAGE_IO[stage][0]}


def test_stage_table_matches_the_network():
    assert {k: (s.inputs, s.outputs) for k, s in STAGES.items()} == STAGE_IO


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("stage", list(STAGE_IO))
def test_onnxruntime_and_torch_agree(model, stage, device):
    """Also on a CUDA GPU where torch sees one: there the backend must keep TF32 off."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    net, bundle = model
    ort_b = create_backend("onnxruntime", bundle, providers="CPUExecutionProvider")
    torch_b = create_backend("torch", bundle, model=net, device=device)
    feed = _feed(stage)
    a, b = ort_b.run(stage, feed), torch_b.run(stage, feed)
    assert set(a) == set(b) == set(STAGE_IO[stage][1])
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == np.float32
        assert np.abs(a[k] - b[k]).max() <= 1e-4, k


def test_torch_backend_sets_tf32_for_its_own_calls_only(model):
    """torch's TF32 switches are process-wide: the backend sets them per call and restores them."""
    net, bundle = model
    matmul = torch.backends.cuda.matmul
    before = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    seen = []
    hook = net.lidar.register_forward_hook(
        lambda *_: seen.append((matmul.allow_tf32, torch.backends.cudnn.allow_tf32)))
    try:
        matmul.allow_tf32 = True
        create_backend("torch", bundle, model=net).run("lidar", _feed("lidar"))
        create_backend("torch", bundle, model=net, tf32=True).run("lidar", _feed("lidar"))
        assert seen == [(False, False), (True, True)]
        assert matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 == before[1]
    finally:
        hook.remove()
        matmul.allow_tf32 = before[0]


def test_full_pipeline_of_stages_runs_on_the_shipped_model():
    bundle = load_bundle(share_dir() / "models")
    be = create_backend("ort", bundle)
    feats = {}
    for stage in ("lidar", "radar", "camera", "imu"):
        x = sample_inputs(NetConfig(**bundle.raw["network"]["config"]), seed=1)
        feats |= be.run(stage, {n: x[n].numpy() for n in STAGE_IO[stage][0]})
    x = sample_inputs(NetConfig(**bundle.raw["network"]["config"]), seed=1)
    out = be.run("fusion_head", feats | {"coverage": x["coverage"].numpy(), "present": x["present"].numpy()})
    assert out["heatmap"].shape == (1, 6, 64, 64) and np.isfinite(out["heatmap"]).all()
    assert np.allclose(out["gates"].sum(axis=1)[x["coverage"].numpy().max(axis=1) > 0], 1.0, atol=1e-5)


def test_bad_inputs_are_rejected_by_name(model):
    be = create_backend("onnxruntime", model[1])
    feed = _feed("lidar")
    with pytest.raises(RejectedInput, match="lidar_bev"):
        be.run("lidar", {})
    with pytest.raises(RejectedInput, match=r"shape \(lidar_bev\)"):
        be.run("lidar", {"lidar_bev": feed["lidar_bev"][:, :4]})
    with pytest.raises(RejectedInput, match="dtype"):
        be.run("lidar", {"lidar_bev": feed["lidar_bev"].astype(np.float64)})
    bad = feed["lidar_bev"].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(RejectedInput, match="nan"):
        be.run("lidar", {"lidar_bev": bad})
    with pytest.raises(RejectedInput, match="unknown_stage"):
        be.run("pointpillars", feed)


def test_backend_selection_errors_are_clear(model):
    with pytest.raises(ValueError, match="unknown backend 'openvino'"):
        create_backend("openvino", model[1])
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        create_backend("onnxruntime", model[1], providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="needs model="):
        create_backend("torch", model[1])


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_package(model):
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        create_backend("tensorrt", model[1])


def test_engine_cache_key_changes_with_every_ingredient():
    base = ("a" * 64, "NVIDIA Orin sm_87", "10.3.0", "fp16", EngineProfile())
    keys = {engine_cache_key(*base)}
    for i, alt in enumerate(("b" * 64, "RTX 4090 sm_89", "10.4.0", "int8", EngineProfile(max_cameras=2))):
        args = list(base)
        args[i] = alt
        keys.add(engine_cache_key(*args))
    assert len(keys) == 6
    assert engine_cache_key(*base) == engine_cache_key(*base)


@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt not installed (cannot be installed on this CPU-only machine)")
def test_tensorrt_agrees_with_onnxruntime(model, tmp_path):
    bundle = model[1]
    trt_b = create_backend("tensorrt", bundle, precision="fp32", cache_dir=tmp_path)
    ort_b = create_backend("onnxruntime", bundle, providers="CPUExecutionProvider")
    for stage in STAGE_IO:
        feed = _feed(stage)
        a, b = trt_b.run(stage, feed), ort_b.run(stage, feed)
        for k in a:
            assert np.abs(a[k] - b[k]).max() <= 1e-3, (stage, k)
    assert all(p.is_file() for p in trt_b.engine_paths.values())
