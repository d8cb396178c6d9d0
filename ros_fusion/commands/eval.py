"""`ros-fusion eval BAG…`: score the fusion pipeline on recorded drives, offline or live (docs/DESIGN.md §9)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import EXIT_ERROR, EXIT_OK, HelpFormatter, fail

EXAMPLE = """examples:
  ros-fusion eval drive.mcap -o eval/drive                     # offline: metrics.json, report.md, plots
  ros-fusion eval test/*.mcap --strategy late -o eval/late      # force late fusion
  ros-fusion eval drive.mcap --drop camera@5-8 --drop radar_front@12-14
  ros-fusion eval drive.mcap --no-robustness --max-bundles 50   # quick look
  ros-fusion eval --live drive.mcap -o eval/live                # node graph + real-time replay
  ros-fusion eval kitti/*.mcap --detections out/kitti.json      # + nuScenes-format results for other scorers

Offline, every message of the bag is fed to the same FusionEngine the node runs (health,
synchroniser, ego-motion, FusionPipeline), with the recorded log time as the clock, so the
run is deterministic: same bags, model and options give the same numbers. Each bundle is
scored against /ground_truth/obstacles (nuScenes-style centre-distance AP over {0.5,1,2,4} m
within 50 m, TP errors, NDS-like score, per class and range band) and, unless
--no-robustness, re-run for every sensor-availability pattern x strategy (the robustness
matrix, also scored inside the coverage of each pattern's sensors: a front camera and radar
cannot see the 360 deg scene). --drop withholds sensors (a modality or sensor names) during
a window of drive seconds. Faults recorded in the bag's metadata are reported with how fast
the fusion mode switched and recovered.

--live starts fusion_node (the same node plan as `ros-fusion launch`), replays the bag in
real time, records ~/obstacles and scores them the same way, adding end-to-end latency
(capture stamp -> publish) p50/p95/p99/max and dropped bundles.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="evaluate fusion on bags: accuracy, robustness matrix, mode switches, latency",
        description=(
            "Run recorded drives through the fusion pipeline (offline, deterministic; or --live through the "
            "node graph in real time), score the detections against the bag's ground truth and write "
            "metrics.json, report.md and PNG plots."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="MCAP bags (simulated or converted)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                   help="write metrics.json, report.md and plots here")
    p.add_argument("--strategy", choices=("auto", "intermediate", "late"), default="auto",
                   help="fusion strategy of the main run (auto: the model's policy table)")
    p.add_argument("--detectors", default="network", metavar="LIST",
                   help="network (default), geometric (training-free, no model needed) or network+geometric "
                        "(both, merged by weighted box fusion)")
    p.add_argument("--drop", action="append", default=[], metavar="NAMES[@T0-T1]",
                   help="withhold sensors (modalities or sensor names, comma-separated) during T0-T1 drive seconds; "
                        "repeatable; no window = whole bag")
    p.add_argument("--no-robustness", action="store_true", help="skip the pattern x strategy matrix (faster)")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="folder with manifest.yaml and the ONNX files (default: the package's models/)")
    p.add_argument("--rig-file", type=Path, default=None, metavar="YAML",
                   help="rig file (default: the rig recorded in the bag)")
    p.add_argument("--backend", default="onnxruntime", metavar="NAME", help="runtime backend: onnxruntime or tensorrt")
    p.add_argument("--threads", type=int, default=2, metavar="N", help="onnxruntime intra-op threads (default: 2)")
    p.add_argument("--max-bundles", type=int, default=None, metavar="N", help="stop each bag after N bundles")
    p.add_argument("--detections", type=Path, default=None, metavar="FILE",
                   help="offline: also write every scored frame's detections in the nuScenes detection-results "
                        "JSON layout to FILE, and the ground truth to FILE's stem + .ground_truth.json "
                        "(boxes in each frame's base_link; sample_token = '<bag>:<stamp_ns>')")
    p.add_argument("--devkit-check", action="store_true",
                   help="also score the main run with nuscenes-devkit and report both mAPs")
    p.add_argument("--fit-policy", type=Path, default=None, metavar="YAML",
                   help="on VALIDATION bags: fit per-modality score calibration and the auto policy table "
                        "(better strategy per availability pattern) and write the manifest's fusion: block here")
    p.add_argument("--live", action="store_true", help="run the node graph and replay in real time (see below)")
    p.add_argument("--rate", type=float, default=1.0, help="--live: replay speed factor (default: 1)")
    p.add_argument("--domain-id", type=int, default=None, metavar="ID", help="--live: ROS_DOMAIN_ID to use")
    p.add_argument("--node-param", action="append", default=[], metavar="KEY=VALUE",
                   help="--live: set a fusion_node parameter (e.g. pipelining=false); repeatable")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no tables")
    p.set_defaults(func=run)
    return p


def load_model_and_backend(models: Path | None, backend: str, threads: int | None) -> tuple[Any, Any]:
    """The verified model bundle and a backend for it (clear errors from both)."""
    from ..paths import share_dir
    from ..runtime.backends import create_backend
    from ..runtime.model_bundle import load_bundle

    bundle = load_bundle(models if models is not None else share_dir() / "models")
    options: dict[str, Any] = {}
    if backend.lower() in ("onnxruntime", "ort", "onnx"):
        options["providers"] = ["CPUExecutionProvider"]
        if threads:
            options["threads"] = threads
    return bundle, create_backend(backend, bundle, **options)


def bag_rig(bag: Path, rig_file: Path | None) -> Any:
    from ..core.rig import ConfigError, load_rig
    from ..ros.bag_io import read_rig

    if rig_file is not None:
        return load_rig(rig_file)
    rig = read_rig(bag)
    if rig is None:
        raise ConfigError("rig", f"{bag} records no rig (/rig topic or rig_yaml metadata): pass --rig-file")
    return rig


def bag_faults(bag: Path) -> tuple[list[Any], int | None]:
    """Faults recorded in a simulated bag's metadata and the drive's start (None: not a simulated drive)."""
    from ..bag.reader import BagReader
    from ..core.events import SIM_EPOCH_NS
    from ..sim.faults import parse_fault

    meta = BagReader(bag).metadata
    faults = []
    for text in meta.get("faults", "").split():
        try:
            faults.append(parse_fault(text))
        except ValueError:
            continue  # a bag from another version: the report just lacks that fault
    return faults, (SIM_EPOCH_NS if "scenario" in meta else None)


def run(args: argparse.Namespace) -> int:
    for b in args.bags:
        if not b.exists():
            return fail("eval", f"{b}: no such bag")
    if args.threads is not None and args.threads < 1:
        return fail("eval", f"--threads must be >= 1, got {args.threads}")
    if args.max_bundles is not None and args.max_bundles < 1:
        return fail("eval", f"--max-bundles must be >= 1, got {args.max_bundles}")
    if args.live and args.detections is not None:
        return fail("eval", "--detections is written by offline runs; drop --live")
    if args.live:
        from .eval_live import run_live

        return run_live(args)
    if args.fit_policy is not None:
        return run_fit_policy(args)
    return run_offline(args)


def _evaluate_bags(args: argparse.Namespace, model: Any, backend: Any, overrides: dict[str, Any],
                   cfg_kwargs: dict[str, Any], console: Any, rejected: dict[str, int] | None = None
                   ) -> list[tuple[Any, Any, list[Any]]]:
    """Offline runs of every bag with a fresh pipeline each, with a progress bar per bag: (run, rig, faults).

    ConfigError (rig, incompatible model), ValueError (--drop) and BagError propagate; messages
    that do not decode are counted per topic in `rejected`.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bag.reader import BagReader
    from ..eval.bag_eval import BagEvalConfig, evaluate_bag, parse_drop
    from ..ros.bag_io import read_payloads
    from ..runtime.pipeline import FusionPipeline, PipelineConfig

    counts = rejected if rejected is not None else {}

    def on_error(topic: str, t: int, e: Exception) -> None:
        counts[topic] = counts.get(topic, 0) + 1

    runs = []
    for bag in args.bags:
        rig = bag_rig(bag, args.rig_file)
        model.check_rig(rig)
        cfg = BagEvalConfig(drops=[parse_drop(d, rig) for d in args.drop], **cfg_kwargs)
        pipeline = FusionPipeline(rig, model, backend, PipelineConfig.from_manifest(model.raw, **overrides))
        faults, start_ns = bag_faults(bag)
        reader = BagReader(bag)
        t_begin, span = reader.start_ns, max(reader.duration_ns, 1)
        progress = Progress(TextColumn(f"[bold]eval[/] {bag.name}"), BarColumn(),
                            TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                            disable=args.quiet or not sys.stdout.isatty())
        with progress:
            task = progress.add_task("", total=100)

            def tick(t_ns: int, task=task, progress=progress, t_begin=t_begin, span=span) -> None:
                progress.update(task, completed=min(100.0, 100.0 * (t_ns - t_begin) / span))

            run_ = evaluate_bag(read_payloads(bag, on_error=on_error), rig, pipeline, cfg, name=bag.name,
                                start_ns=start_ns, progress=tick)
        console.print(f"{bag.name}: {len(run_.records)} bundles, {run_.messages} messages in {run_.wall_s:.1f} s")
        runs.append((run_, rig, faults))
    return runs


def run_fit_policy(args: argparse.Namespace) -> int:
    """Three passes over validation bags: calibration, the policy table from the robustness matrix, then the
    operating threshold with both."""
    import yaml

    from ..bag.errors import BagError
    from ..console import make_console
    from ..core.rig import ConfigError
    from ..eval.bag_eval import BagEvalConfig, collect_metrics
    from ..eval.policy_fit import (
        MAX_FALSE_PER_FRAME,
        fit_calibration,
        fit_operating_threshold,
        fusion_block,
        policy_from_matrix,
    )
    from ..eval.real_metrics import labelled_frames
    from ..eval.report import render_console
    from ..runtime.backends import BackendUnavailable

    console = make_console(quiet=args.quiet)
    try:
        model, backend = load_model_and_backend(args.models, args.backend, args.threads)
        console.print("pass 1/3: each modality's own detections → score calibration")
        runs = [r for r, _, _ in _evaluate_bags(
            args, model, backend, {"calibration": {}, "policy": {}},
            {"robustness": False, "collect_single": True, "max_bundles": args.max_bundles}, console)]
        calibration = fit_calibration([x for r in runs for x in r.singles])
        console.print("calibration: " + ", ".join(f"{m} a={c.a:.3f} b={c.b:.3f}" for m, c in calibration.items()))
        console.print("pass 2/3: robustness matrix with calibrated late fusion → policy table")
        runs = [r for r, _, _ in _evaluate_bags(
            args, model, backend, {"calibration": calibration, "policy": {}},
            {"robustness": True, "strategies": ("intermediate", "late"), "max_bundles": args.max_bundles}, console)]
        metrics = collect_metrics(runs, BagEvalConfig(robustness=True))
        policy = policy_from_matrix(metrics["robustness"])
        console.print(f"pass 3/3: calibrated {policy or 'default'} policy → operating threshold "
                      f"(≤ {MAX_FALSE_PER_FRAME:g} false detections per frame)")
        done = _evaluate_bags(args, model, backend, {"calibration": calibration, "policy": policy},
                              {"robustness": False, "max_bundles": args.max_bundles}, console)
        frames, regions = [], []
        for run_, rig, _ in done:
            f, r = labelled_frames(run_.records, rig)
            frames += f
            regions += r
        threshold, reached = fit_operating_threshold(frames, regions, tuple(model.classes))
    except (ConfigError, BackendUnavailable, ValueError, BagError) as e:
        return fail("eval", str(e), EXIT_ERROR)
    console.print(f"operating threshold {threshold:g}: {reached['false_per_frame']:.2f} false detections per frame"
                  + ("" if reached["met"] else " (above the bound at every candidate)")
                  + "; recall " + ", ".join(f"{c} ≤30 m {v['30']:.2f}" for c, v in reached["recall"].items()
                                            if "30" in v))
    block = fusion_block(calibration, policy, {"bags": [b.name for b in args.bags],
                                               "robustness_mAP": metrics["robustness"]["mAP"],
                                               "operating_point": reached}, score_threshold=threshold)
    args.fit_policy.parent.mkdir(parents=True, exist_ok=True)
    args.fit_policy.write_text(yaml.safe_dump({"fusion": block}, sort_keys=False))
    for r in render_console({"robustness": metrics["robustness"]}):
        console.print(r)
    console.print(f"policy: {policy}\nwrote {args.fit_policy} (merge its fusion: block into models/manifest.yaml)")
    return EXIT_OK


def run_offline(args: argparse.Namespace) -> int:
    from ..bag.errors import BagError
    from ..console import make_console
    from ..core.rig import ConfigError
    from ..eval.bag_eval import BagEvalConfig, collect_metrics, fault_response
    from ..eval.report import render_console, write_outputs
    from ..runtime.backends import BackendUnavailable
    from ..runtime.pipeline import parse_detectors

    console = make_console(quiet=args.quiet)
    rejected_messages: dict[str, int] = {}
    try:
        model, backend = load_model_and_backend(args.models, args.backend, args.threads)
        cfg_kwargs = {"strategy": args.strategy, "robustness": not args.no_robustness,
                      "max_bundles": args.max_bundles}
        done = _evaluate_bags(args, model, backend, {"strategy": args.strategy,
                                                     "detectors": parse_detectors(args.detectors)},
                              cfg_kwargs, console, rejected_messages)
        runs = [r for r, _, _ in done]
        faults_all = [f for r, rig, faults in done for f in fault_response(r, faults, rig)]
    except (ConfigError, BackendUnavailable, ValueError, BagError) as e:
        return fail("eval", str(e), EXIT_ERROR)
    cfg = BagEvalConfig(**cfg_kwargs)
    metrics = collect_metrics(runs, cfg)
    metrics["faults"] = faults_all
    if rejected_messages:
        metrics["rejected_messages"] = rejected_messages
    metrics["run"] = {
        "bags": [str(b) for b in args.bags], "strategy": args.strategy, "drops": args.drop,
        "detectors": "+".join(parse_detectors(args.detectors)),
        "model": str(model.root), "model_status": model.status, "backend": backend.describe(),
        "mode": "offline",
    }
    if args.devkit_check:
        from ..eval.bag_eval import scored_frames
        from ..eval.devkit_check import devkit_map

        try:
            metrics["devkit"] = devkit_map(scored_frames(runs), tuple(model.classes))
        except (ImportError, ValueError) as e:
            return fail("eval", str(e), EXIT_ERROR)
    bev = None
    show = next((r for r in runs if r.showcase is not None), None)
    if show is not None and show.showcase is not None and show.showcase.pred is not None:
        from ..eval.plots import PICTURE_MIN_SCORE, BevScene, confident

        rec = show.showcase
        bev = BevScene(gt=rec.gt, pred=confident(rec.pred), classes=tuple(model.classes), lidar_xyz=show.lidar_points,
                       title=f"{show.bag} t={rec.drive_s:.1f}s (score ≥ {PICTURE_MIN_SCORE:g})", mode=rec.mode)
    if args.output is not None:
        written = write_outputs(args.output, metrics, bev=bev)
        console.print(f"wrote {len(written)} files to {args.output}")
    if args.detections is not None:
        from ..eval.detections_json import write_results

        frames = [(r.bag, rec.t_ns, rec.gt, rec.pred) for r in runs for rec in r.records]
        try:
            det_path, gt_path = write_results(args.detections, frames, tuple(model.classes), {
                "bags": [str(b) for b in args.bags], "model": str(model.root), "strategy": args.strategy,
                **{f"use_{m}": any(rig.of(m) for _, rig, _ in done) for m in ("camera", "lidar", "radar")},
                "use_map": False, "use_external": False})
        except OSError as e:
            return fail("eval", f"cannot write --detections {args.detections}: {e}", EXIT_ERROR)
        console.print(f"detections: {det_path}; ground truth: {gt_path}")
    for r in render_console(metrics):
        console.print(r)
    return EXIT_OK
