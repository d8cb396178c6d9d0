"""`ros-fusion export`: a training checkpoint → ONNX per stage + models/manifest.yaml (docs/DESIGN.md §7)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from . import EXIT_ERROR, EXIT_OK, HelpFormatter, fail

EXAMPLE = """examples:
  ros-fusion export runs/fusion/best.pt -o models/
  ros-fusion export runs/fusion/best.pt -o models/ --metrics eval/report.yaml --status trained
  ros-fusion export runs/smoke/last.pt -o /tmp/smoke_model --status "smoke — not the trained model"
  ros-fusion eval data/bags/val_*.mcap --models models/ --fit-policy eval/fusion.yaml   # then:
  ros-fusion export runs/fusion/best.pt -o models/ --metrics eval/report.yaml --fusion eval/fusion.yaml

Writes OUT/{lidar,radar,camera,imu,fusion_head}.onnx and OUT/manifest.yaml (sha256 of every file,
input/output specs, classes, grid, training data seeds, metrics). Each file is compared with torch
on the same inputs; the export fails if the max abs error exceeds --tolerance.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (one file per stage) with a manifest (needs torch)",
        description=(
            "Export the fusion network of a training checkpoint as one ONNX file per stage (LiDAR, radar, "
            "camera+lift and IMU encoders, fusion+head) with fixed tensor names, check each against torch, "
            "and write the manifest the runtime verifies before loading."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="checkpoint (.pt) from ros-fusion train")
    p.add_argument("-o", "--output", type=Path, default=Path("models"), metavar="DIR", help="model folder to write")
    p.add_argument("--status", default="trained", metavar="TEXT",
                   help="manifest status line, e.g. 'trained' or 'smoke — not the trained model'")
    p.add_argument("--metrics", type=Path, default=None, metavar="YAML",
                   help="YAML mapping of evaluation metrics to record in the manifest (default: the checkpoint's "
                        "validation losses)")
    p.add_argument("--fusion", type=Path, default=None, metavar="YAML",
                   help="the manifest's fusion: block (policy table + score calibration) as written by "
                        "`ros-fusion eval VALIDATION_BAGS --fit-policy YAML`")
    p.add_argument("--tolerance", type=float, default=1e-4, metavar="E", help="max abs ONNX-vs-torch error accepted")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        from ..models.export import ExportError, export_checkpoint
    except ImportError as e:
        return fail("export", f"export needs torch, onnx and onnxscript ({e})", EXIT_ERROR)
    metrics = None
    if args.metrics is not None:
        try:
            metrics = yaml.safe_load(args.metrics.read_text())
        except (OSError, yaml.YAMLError) as e:
            return fail("export", f"--metrics {args.metrics}: {e}")
        if not isinstance(metrics, dict):
            return fail("export", f"--metrics {args.metrics}: expected a YAML mapping")
    fusion = None
    if args.fusion is not None:
        from ..runtime.pipeline import ConfigError, PipelineConfig

        try:
            raw = yaml.safe_load(args.fusion.read_text())
            fusion = raw.get("fusion") if isinstance(raw, dict) else None
            if not isinstance(fusion, dict):
                return fail("export", f"--fusion {args.fusion}: expected a mapping with a 'fusion:' block")
            PipelineConfig.from_manifest({"fusion": fusion})  # refuse what the runtime would refuse
        except (OSError, yaml.YAMLError, ConfigError) as e:
            return fail("export", f"--fusion {args.fusion}: {e}")
    try:
        manifest, stages = export_checkpoint(args.checkpoint, args.output, status=args.status, metrics=metrics,
                                             tolerance=args.tolerance, fusion=fusion)
    except (FileNotFoundError, ValueError, ExportError) as e:
        return fail("export", str(e), EXIT_ERROR)
    for s in stages:
        print(f"{s.path}  {s.path.stat().st_size / 1e6:.2f} MB  max abs error vs torch {s.max_abs_error:.2e}")
    print(f"manifest: {manifest}")
    return EXIT_OK
