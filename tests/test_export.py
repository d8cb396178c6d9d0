"""ONNX export round-trip and the manifest's refusals (docs/DESIGN.md §7)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from ros_fusion.core.rig import ConfigError  # noqa: E402
from ros_fusion.models.export import TOLERANCE, export_all, sample_inputs, write_manifest  # noqa: E402
from ros_fusion.models.network import STAGES, FusionNet, NetConfig, StageModule  # noqa: E402
from ros_fusion.runtime.model_bundle import BundleError, load_bundle  # noqa: E402

SMALL = NetConfig(feat=16, cam_feat=8, imu_embed=8, gate_hidden=8, head_hidden=8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(3)
    net = FusionNet(SMALL).eval()
    torch.nn.init.normal_(net.fusion.gate_ctx.weight, std=0.5)  # starts at 0: export a context that acts
    out = tmp_path_factory.mktemp("model")
    stages = export_all(net, out)
    write_manifest(out, stages, cfg=SMALL, parameters=1, status="test", training={"seeds": [1]}, metrics={})
    return net, out, stages


def test_every_stage_matches_torch_within_tolerance(exported):
    net, out, stages = exported
    assert [s.name for s in stages] == list(STAGES)
    for s in stages:
        assert s.max_abs_error <= TOLERANCE, (s.name, s.max_abs_error)
    # independent re-check at batch 1 with fresh inputs, by tensor name
    x = sample_inputs(SMALL, batch=1, n_cameras=1, seed=99)
    for name, st in STAGES.items():
        sess = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == list(st.inputs)
        assert [o.name for o in sess.get_outputs()] == list(st.outputs)
        got = sess.run(None, {n: x[n].numpy() for n in st.inputs})
        with torch.no_grad():
            ref = StageModule(net, name)(*(x[n] for n in st.inputs))
        for g, r in zip(got, ref, strict=True):
            assert np.abs(g - r.numpy()).max() <= TOLERANCE


def test_manifest_loads_and_records_specs(exported):
    _, out, _ = exported
    bundle = load_bundle(out)
    assert set(bundle.stages) == set(STAGES) and bundle.status == "test"
    assert bundle.stages["camera"].inputs[0].shape == ["batch", "cameras", 3, 240, 320]
    assert bundle.raw["training"] == {"seeds": [1]}


def _copy(out, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(out, dst)
    return dst


def test_changed_file_is_refused_naming_it(exported, tmp_path):
    dst = _copy(exported[1], tmp_path)
    data = bytearray((dst / "radar.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / "radar.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"radar\.onnx: sha256 .* does not match"):
        load_bundle(dst)
    assert isinstance(BundleError("k", "m"), ConfigError)


def test_manifest_problems_are_refused(exported, tmp_path):
    dst = _copy(exported[1], tmp_path)
    m = yaml.safe_load((dst / "manifest.yaml").read_text())
    (dst / "lidar.onnx").unlink()
    with pytest.raises(BundleError, match="lidar.onnx not found"):
        load_bundle(dst)
    shutil.copy(exported[1] / "lidar.onnx", dst / "lidar.onnx")
    m["grid"]["cell_m"] = 0.5
    (dst / "manifest.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(BundleError, match="grid.cell_m"):
        load_bundle(dst)
    m["stages"]["imu"]["file"] = "../../etc/passwd"
    m["grid"]["cell_m"] = 0.8
    (dst / "manifest.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(BundleError, match="outside the model folder"):
        load_bundle(dst)
    (dst / "manifest.yaml").write_text("format: [unclosed")
    with pytest.raises(BundleError, match="not valid YAML"):
        load_bundle(dst)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nowhere")


def test_fusion_block_is_recorded_and_read_by_the_pipeline(exported, tmp_path):
    from ros_fusion.runtime.pipeline import PipelineConfig

    _, out, stages = exported
    fusion = {"policy": {"camera+radar": "late"}, "calibration": {"radar": {"a": 2.0, "b": 1.0}}}
    write_manifest(out, stages, cfg=SMALL, parameters=1, status="test", training={}, metrics={}, fusion=fusion)
    cfg = PipelineConfig.from_manifest(load_bundle(out).raw)
    assert cfg.policy == {"camera+radar": "late"} and cfg.calibration["radar"].a == 2.0
    write_manifest(out, stages, cfg=SMALL, parameters=1, status="test", training={"seeds": [1]}, metrics={})
    assert "fusion" not in load_bundle(out).raw


def test_export_command_refuses_a_bad_fusion_file_before_exporting(tmp_path, capsys):
    import argparse

    from ros_fusion.commands.export import run

    bad = tmp_path / "fusion.yaml"
    bad.write_text("fusion:\n  policy:\n    camera+radar: sometimes\n")
    args = argparse.Namespace(checkpoint=tmp_path / "missing.pt", output=tmp_path / "m", status="t", metrics=None,
                              fusion=bad, tolerance=1e-4)
    assert run(args) != 0
    assert "sometimes" in capsys.readouterr().err and not (tmp_path / "m").exists()
