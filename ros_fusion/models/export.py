"""ONNX export of every stage + the manifest that makes a model folder self-describing (docs/DESIGN.md §7).

One ONNX file per stage (`network.STAGES`: lidar, radar, camera (+lift), imu,
fusion_head) so the runtime can skip the encoder of a missing sensor and run the
head once per modality for late fusion. Tensor names are fixed by the stage
table; the batch axis (and the camera axis of the camera stage) are dynamic.

Each file is checked against torch on the same inputs before the manifest is
written, and the max abs error is recorded there: an export that drifts is
caught here, not in a car. Exporter: torch.onnx's dynamo exporter
(`torch.export` + onnxscript), opset 18, weights inside the file.
"""

from __future__ import annotations

import io as _io
import logging
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..core import network_io as nio
from ..core.files import sha256_file
from ..core.model_contract import MANIFEST_FORMAT, MANIFEST_NAME, contract_grid
from .network import STAGES, FusionNet, NetConfig, StageModule, parameter_count, stage_input_shapes

OPSET = 18
#: Max abs ONNX-vs-torch difference accepted at export; a larger one fails the export.
TOLERANCE = 1e-4
SMOKE_STATUS = "smoke — not the trained model"


class ExportError(RuntimeError):
    """Export failed or the ONNX outputs disagree with torch beyond TOLERANCE."""


@dataclass
class ExportedStage:
    name: str
    path: Path
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    max_abs_error: float


def sample_inputs(cfg: NetConfig, *, batch: int = 1, n_cameras: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible random values for every stage tensor (value ranges like real pre-processing).

    Used to trace the export and to compare ONNX with torch; masks are binary and some
    camera grid points are invalid (−2), as the numpy pre-processing produces them.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = stage_input_shapes(cfg, n_cameras)

    def rand(name: str) -> torch.Tensor:
        return torch.rand((batch, *shapes[name]), generator=g)

    x = {
        "lidar_bev": rand("lidar_bev") * (rand("lidar_bev") > 0.8),
        "radar_bev": rand("radar_bev") * (rand("radar_bev") > 0.97),
        "images": torch.randn((batch, *shapes["images"]), generator=g),
        "cam_grid": rand("cam_grid") * 2.4 - 1.2,
        "cam_valid": (rand("cam_valid") > 0.4).float(),
        "coverage": (rand("coverage") > 0.3).float(),
        "present": torch.ones((batch, len(nio.FUSED_MODALITIES))),
        "imu": torch.randn((batch, *shapes["imu"]), generator=g) * torch.tensor([0.1] * 3 + [1.0, 1.0, 9.81]),
    }
    x["cam_grid"] = torch.where(x["cam_valid"].unsqueeze(-1) > 0, x["cam_grid"], torch.full_like(x["cam_grid"], -2.0))
    for m in nio.FUSED_MODALITIES:
        x[f"{m}_feat"] = torch.relu(torch.randn((batch, *shapes[f"{m}_feat"]), generator=g))
    x["imu_emb"] = torch.tanh(torch.randn((batch, *shapes["imu_emb"]), generator=g))
    return x


def _dynamic_shapes(stage: str) -> tuple[tuple[dict[int, Any], ...]]:
    """Dynamic batch (and camera) axes; nested once because StageModule.forward takes *args."""
    batch = torch.export.Dim("batch", min=1, max=64)
    cameras = torch.export.Dim("cameras", min=1, max=nio.MAX_CAMERAS)
    return (tuple({0: batch, 1: cameras} if stage == "camera" else {0: batch} for _ in STAGES[stage].inputs),)


def _symbolic_shape(name: str, shape: tuple[int, ...], stage: str) -> list[int | str]:
    dims: list[int | str] = ["batch", *shape]
    if stage == "camera" and name in STAGES["camera"].inputs:
        dims[1] = "cameras"
    return dims


def export_stage(net: FusionNet, stage: str, path: Path) -> None:
    """Write one stage as ONNX. Traced at batch 2 / 2 cameras so neither axis is specialised to 1."""
    st = STAGES[stage]
    x = sample_inputs(net.cfg, batch=2, n_cameras=2, seed=1)
    args = tuple(x[n] for n in st.inputs)
    with warnings.catch_warnings(), redirect_stdout(_io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            StageModule(net, stage).eval(),
            args,
            input_names=list(st.inputs),
            output_names=list(st.outputs),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes=_dynamic_shapes(stage),
            verbose=False,
        )
    if program is None:
        raise ExportError(f"{stage}: torch.onnx.export returned nothing")
    program.save(str(path), external_data=False)


def validate_stage(net: FusionNet, stage: str, path: Path, *, seed: int = 2) -> float:
    """Max abs difference ONNX Runtime (CPU) vs torch over every output and several cases.

    Cases: batch 1 and 3, one and two cameras, and for the fusion head every presence
    pattern (all, each single modality, none) — the masking must export exactly.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    st = STAGES[stage]
    module = StageModule(net, stage).eval()
    cases: list[dict[str, torch.Tensor]] = []
    for i, (batch, cams) in enumerate(((1, 1), (3, 2))):
        x = sample_inputs(net.cfg, batch=batch, n_cameras=cams, seed=seed + i)
        if stage == "fusion_head":
            for present in ([1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]):
                cases.append(x | {"present": torch.tensor([present] * batch, dtype=torch.float32)})
        else:
            cases.append(x)
    worst = 0.0
    for x in cases:
        with torch.no_grad():
            ref = module(*(x[n] for n in st.inputs))
        got = sess.run(list(st.outputs), {n: x[n].numpy() for n in st.inputs})
        for name, r, o in zip(st.outputs, ref, got, strict=True):
            if o.shape != tuple(r.shape):
                raise ExportError(f"{stage}: output {name} has shape {o.shape} in ONNX, {tuple(r.shape)} in torch")
            if not np.isfinite(o).all():
                raise ExportError(f"{stage}: ONNX output {name} has NaN/Inf")
            worst = max(worst, float(np.abs(o - r.numpy()).max()))
    return worst


def export_all(net: FusionNet, out_dir: Path, *, tolerance: float = TOLERANCE) -> list[ExportedStage]:
    """Export and validate every stage into `out_dir/<stage>.onnx`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    shapes = stage_input_shapes(net.cfg, 1)
    done = []
    for name, st in STAGES.items():
        path = out_dir / f"{name}.onnx"
        export_stage(net, name, path)
        err = validate_stage(net, name, path)
        if not err <= tolerance:
            raise ExportError(f"{name}: ONNX vs torch max abs error {err:.3g} > {tolerance:g}")
        spec = [{"name": n, "shape": _symbolic_shape(n, shapes[n], name), "dtype": "float32"} for n in st.inputs]
        outs = [{"name": n, "shape": _symbolic_shape(n, shapes[n], name), "dtype": "float32"} for n in st.outputs]
        done.append(ExportedStage(name, path, spec, outs, err))
    return done


def write_manifest(
    out_dir: Path,
    stages: list[ExportedStage],
    *,
    cfg: NetConfig,
    parameters: int,
    status: str,
    training: dict[str, Any],
    metrics: dict[str, Any],
    fusion: dict[str, Any] | None = None,
) -> Path:
    """`out_dir/manifest.yaml`: files + sha256, tensor specs, classes, grid, training provenance, metrics."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "status": status,
        "classes": list(nio.CLASSES),
        "grid": contract_grid(),
        "network": {"config": cfg.to_dict(), "parameters": parameters, "opset": OPSET,
                    "exporter": f"torch.onnx dynamo (torch {torch.__version__})"},
        "stages": {
            s.name: {
                "file": s.path.name,
                "sha256": sha256_file(s.path),
                "bytes": s.path.stat().st_size,
                "inputs": s.inputs,
                "outputs": s.outputs,
                "max_abs_error": float(f"{s.max_abs_error:.3g}"),
            }
            for s in stages
        },
        "training": training,
        "metrics": metrics,
    }
    if fusion is not None:  # policy table + score calibration, fitted on validation drives
        manifest["fusion"] = fusion
    path = out_dir / MANIFEST_NAME
    path.write_text(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True))
    return path


def export_checkpoint(checkpoint: Path, out_dir: Path, *, status: str, metrics: dict[str, Any] | None = None,
                      tolerance: float = TOLERANCE, fusion: dict[str, Any] | None = None
                      ) -> tuple[Path, list[ExportedStage]]:
    """Load a training checkpoint (see train.py), export every stage, write the manifest."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    net = ckpt.model
    stages = export_all(net, out_dir, tolerance=tolerance)
    manifest = write_manifest(out_dir, stages, cfg=net.cfg, parameters=parameter_count(net), status=status,
                              training=ckpt.provenance, metrics=metrics if metrics is not None else ckpt.metrics,
                              fusion=fusion)
    return manifest, stages
