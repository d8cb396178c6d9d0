"""`ros-fusion eval-model`: accuracy of the exported network on held-out dataset shards (docs/results.md §3)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, fail

EXAMPLE = """examples:
  ros-fusion eval-model --data data/v1 --split test -o eval/test.json --metrics-out eval/metrics.yaml
  ros-fusion eval-model --data data/v1 --split test --max-frames 60          # quick look
  ros-fusion eval-model --data data/v1 --models /tmp/my_model --backend onnxruntime
  ros-fusion eval-model --data data/v1 --oracle --max-frames 30             # check the scorer: AP 1

For every frame of the split, the model runs once per sensor-availability pattern (all;
camera, LiDAR or radar missing; camera, LiDAR or radar only) with the absent modalities
masked exactly as a failed sensor (present flag and coverage 0, its encoder not run),
and the decoded boxes are scored against ground truth: nuScenes-style centre-distance
AP over {0.5, 1, 2, 4} m within 50 m, NDS-like score. Also reported: camera-missing /
all and LiDAR-missing / all mAP, the mean gate weight of each modality inside its own
coverage for day scenes (urban, highway) vs night_rain, and the largest camera gate
outside the camera's field of view (must be exactly 0).

A split whose seeds the model manifest lists as training or validation seeds is
refused (--allow-seen-seeds to evaluate anyway; the report then says so). The JSON
(-o) records data seeds and shard hashes, model sha256s and the config; same data,
model and options give the same file. --metrics-out writes the YAML mapping that
`ros-fusion export CHECKPOINT --metrics FILE` records as the manifest's metrics.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval-model",
        help="evaluate the exported network per sensor-availability pattern on held-out shards",
        description=(
            "Run the model bundle (models/manifest.yaml + ONNX) through a runtime backend on every frame of a "
            "dataset split, once per sensor-availability pattern, and score the detections against ground "
            "truth with nuScenes-style metrics; report gate statistics; write JSON and manifest metrics."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR",
                   help="dataset folder written by `ros-fusion dataset` (manifest.json + <split>/*.npz)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="which split to evaluate")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="folder with manifest.yaml and the ONNX files (default: the package's models/)")
    p.add_argument("--backend", default="onnxruntime", metavar="NAME",
                   help="runtime backend: onnxruntime or tensorrt")
    p.add_argument("--providers", default="CPUExecutionProvider", metavar="LIST",
                   help="onnxruntime execution providers, comma-separated, or 'auto' for the best available")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="onnxruntime intra-op threads")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="JSON", help="write the full report here")
    p.add_argument("--metrics-out", type=Path, default=None, metavar="YAML",
                   help="write the manifest metrics block here (input of `ros-fusion export --metrics`)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="evaluate at most N frames, spread evenly over the split's shards")
    p.add_argument("--score-threshold", type=float, default=0.05, metavar="S",
                   help="lowest detection score kept before scoring")
    p.add_argument("--top-k", type=int, default=100, metavar="K", help="detections kept per frame")
    p.add_argument("--allow-seen-seeds", action="store_true",
                   help="evaluate even if the split shares seeds with the model's training/validation data")
    p.add_argument("--oracle", action="store_true",
                   help="score the ground-truth CenterPoint targets instead of the network (checks the scorer)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no tables")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..core.rig import ConfigError
    from ..eval.network_eval import (
        EvalDataError,
        HeldOutError,
        NetworkEvalConfig,
        TargetDetector,
        render_report,
        run_network_eval,
    )
    from ..paths import share_dir
    from ..runtime.backends import BackendUnavailable
    from ..runtime.model_bundle import load_bundle

    if args.max_frames is not None and args.max_frames < 1:
        return fail("eval-model", f"--max-frames must be >= 1, got {args.max_frames}")
    if args.threads is not None and args.threads < 1:
        return fail("eval-model", f"--threads must be >= 1, got {args.threads}")
    cfg = NetworkEvalConfig(split=args.split, backend=args.backend, score_threshold=args.score_threshold,
                            top_k=args.top_k, max_frames=args.max_frames, allow_seen_seeds=args.allow_seen_seeds)
    try:
        cfg.check()
    except ValueError as e:
        return fail("eval-model", str(e))
    if not args.data.is_dir():
        return fail("eval-model", f"--data {args.data}: not a folder (generate one with `ros-fusion dataset`)")
    model_dir = args.models if args.models is not None else share_dir() / "models"
    try:
        bundle = load_bundle(model_dir)
    except ConfigError as e:
        return fail("eval-model", str(e), EXIT_ERROR)
    options: dict = {}
    if args.backend.lower() in ("onnxruntime", "ort", "onnx"):
        providers = args.providers.strip()
        options["providers"] = "auto" if providers == "auto" else [p.strip() for p in providers.split(",") if p]
        if args.threads:
            options["threads"] = args.threads

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..console import make_console

    progress = Progress(TextColumn("[bold]eval-model[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("frames"), TimeElapsedColumn(),
                        disable=args.quiet or not sys.stdout.isatty())
    try:
        with progress:
            task = progress.add_task("", total=None)

            def on_frame(done: int, total: int, what: str) -> None:
                progress.update(task, completed=done, total=total or None, description=what)

            report = run_network_eval(args.data, bundle, cfg, detector=TargetDetector() if args.oracle else None,
                                      backend_options=options, progress=on_frame)
    except KeyboardInterrupt:
        return fail("eval-model", "interrupted", EXIT_INTERRUPTED)
    except HeldOutError as e:
        return fail("eval-model", f"{e} (--allow-seen-seeds to evaluate anyway)")
    except (EvalDataError, ValueError) as e:
        return fail("eval-model", str(e), EXIT_ERROR)
    except (ConfigError, BackendUnavailable) as e:
        return fail("eval-model", str(e), EXIT_ERROR)
    doc = report.to_dict()
    try:
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
        if args.metrics_out is not None:
            args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
            args.metrics_out.write_text(yaml.safe_dump(doc["metrics"], sort_keys=False, allow_unicode=True))
    except OSError as e:
        return fail("eval-model", f"cannot write the report: {e}", EXIT_ERROR)
    if not args.quiet:
        console = make_console()
        console.print(render_report(report))
        for label, path in (("report", args.output), ("manifest metrics", args.metrics_out)):
            if path is not None:
                console.print(f"{label}: {path}")
    return EXIT_OK
