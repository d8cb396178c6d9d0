"""`ros-fusion bench`: per-stage and end-to-end latency/throughput of the FusionPipeline (DESIGN §9).

Parsing and rendering only; what is measured and how lives in `eval/bench.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import EXIT_ERROR, EXIT_OK, HelpFormatter, fail

EXAMPLE = """examples:
  ros-fusion bench --quick                                  # 1 camera, 100k points, 10 bundles (~1 min)
  ros-fusion bench -o bench.json                            # 1,3,6 cameras x 30k,100k,250k points x both strategies
  ros-fusion bench --cameras 6 --points 250k --strategies intermediate --bundles 100 --threads 4
  ros-fusion bench --quick --realtime 10 -o bench.json      # + 10 s of drive replayed at real sensor rates

Inputs are one simulated drive (real LiDAR sweeps with per-point times, camera images,
radar scans, IMU): each sweep is resampled to the requested point count and its image
reused for every camera of the default rig scaled to N cameras (camera_front cloned,
360/N degrees apart). Bundles go through the same FusionPipeline the node runs, with
intermediate or late fusion forced; after --warmup bundles, --bundles are timed.

Per configuration: p50/p95/p99/max of every pipeline stage and of the whole bundle
(end to end), throughput (bundles/s = 1000 / mean ms), process CPU time per bundle and
CPU % of one core, RSS now and peak, and whether p99 fits in the LiDAR period (10 Hz:
100 ms). --realtime S additionally feeds S seconds of drive to a FusionEngine at its real
publish times (feeder + fusion worker threads, as fusion_node) and reports latency from
capture stamp to result and bundles dropped when fusion falls behind.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="benchmark the fusion pipeline: per-stage and end-to-end latency, throughput, CPU, memory",
        description=(
            "Time the FusionPipeline on simulated data for rigs of 1..6 cameras, LiDAR clouds of any size and "
            "both fusion strategies; print a table and optionally write JSON (with the machine's description)."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--cameras", default=None, metavar="LIST",
                   help="camera counts to benchmark, comma-separated, each 1..6 (default: 1,3,6; --quick: 1)")
    p.add_argument("--points", default=None, metavar="LIST",
                   help="LiDAR points per sweep, comma-separated; 'k' = thousand "
                        "(default: 30k,100k,250k; --quick: 100k)")
    p.add_argument("--strategies", default="intermediate,late", metavar="LIST",
                   help="fusion strategies, comma-separated: intermediate, late")
    p.add_argument("--bundles", type=int, default=None, metavar="K",
                   help="bundles timed per configuration (default: 30; --quick: 10)")
    p.add_argument("--warmup", type=int, default=3, metavar="N",
                   help="untimed bundles before timing each configuration")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="onnxruntime intra-op threads (as fusion_node's inference_threads parameter)")
    p.add_argument("--backend", default="onnxruntime", metavar="NAME", help="runtime backend: onnxruntime or tensorrt")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="folder with manifest.yaml and the ONNX files (default: the package's models/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated drive and of the point resampling")
    p.add_argument("--scenario", default="urban", metavar="NAME",
                   help="simulator scenario of the drive (see `ros-fusion simulate --help`)")
    p.add_argument("--realtime", type=float, default=0.0, metavar="SECONDS",
                   help="also replay this many seconds of drive at real sensor rates (takes that long; 0 = skip)")
    p.add_argument("--quick", action="store_true",
                   help="a short run: 1 camera, 100k points, 10 bundles (explicit --cameras/--points/--bundles win)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="JSON", help="write the full report here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no table")
    p.set_defaults(func=run)
    return p


def settings_from_args(args: argparse.Namespace) -> Any:
    """The `BenchConfig` the options ask for; ValueError whose message starts with the option's name."""
    from ..eval import bench as B

    cameras = args.cameras if args.cameras is not None else ("1" if args.quick else "1,3,6")
    points = args.points if args.points is not None else ("100000" if args.quick else "30000,100000,250000")
    bundles = args.bundles if args.bundles is not None else (10 if args.quick else 30)
    try:  # every message of these starts with the setting's name, which is also the option's name
        cfg = B.BenchConfig(
            cameras=B.parse_int_list(cameras, "cameras", 1, B.MAX_CAMERAS),
            points=B.parse_int_list(points, "points", 1, B.MAX_POINTS),
            strategies=B.parse_strategies(args.strategies),
            bundles=bundles, warmup=args.warmup, threads=args.threads, backend=args.backend, seed=args.seed,
            scenario=args.scenario, realtime_s=args.realtime,
        )
        cfg.check()
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    return cfg


def run(args: argparse.Namespace) -> int:
    try:
        cfg = settings_from_args(args)
    except ValueError as e:
        return fail("bench", str(e))
    if args.output is not None and args.output.is_dir():
        return fail("bench", f"-o {args.output} is a directory: give a file name for the JSON report")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..console import make_console
    from ..core.rig import ConfigError, load_rig
    from ..eval import bench as B
    from ..paths import default_rig_path
    from ..runtime.backends import BackendUnavailable
    from .eval import load_model_and_backend

    console = make_console(quiet=args.quiet)
    try:
        model, backend = load_model_and_backend(args.models, args.backend, cfg.threads)
        rig = load_rig(default_rig_path())
    except (ConfigError, BackendUnavailable, ValueError, FileNotFoundError) as e:
        return fail("bench", str(e), EXIT_ERROR)
    steps = 1 + len(B.configurations(cfg)) + (1 if cfg.realtime_s > 0 else 0)
    progress = Progress(TextColumn("[bold]bench[/] {task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, disable=args.quiet, transient=True)
    with progress:
        task = progress.add_task("", total=steps)
        started = [False]

        def step(label: str) -> None:
            if started[0]:
                progress.advance(task)
            started[0] = True
            progress.update(task, description=label)

        try:
            report = B.run_bench(cfg, model, backend, rig, progress=step)
        except (ConfigError, ValueError, RuntimeError) as e:
            return fail("bench", str(e), EXIT_ERROR)
        progress.update(task, completed=steps)
    for renderable in render_tables(report):
        console.print(renderable)
    if args.output is not None:
        try:
            path = B.write_report(report, args.output)
        except (OSError, ValueError) as e:
            return fail("bench", f"cannot write {args.output}: {e}", EXIT_ERROR)
        console.print(f"wrote {path}")
    return EXIT_OK


def _label(r: Any) -> str:
    pts = f"{r.points // 1000}k" if r.points % 1000 == 0 else str(r.points)
    return f"{r.cameras}c {pts} {r.strategy}"


def render_tables(report: Any) -> list[Any]:
    """Rich renderables (fit 80 columns): machine line, end-to-end table, stage table, real-time replay."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..eval.bench import STAGE_GROUPS

    m = report.machine
    ort = m.get("onnxruntime") or {}
    out: list[Any] = [Text(
        f"{m['cpu_model']} ({m['cpu_affinity']}/{m['cpu_count']} CPUs), {m['backend']}, threads {m['threads']}, "
        f"onnxruntime {ort.get('version', '-')}; LiDAR sweeps of ~{report.source_points_mean:.0f} points resampled",
        style="dim")]
    t = Table(title="end to end per bundle (ms)", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("configuration", justify="left")
    for col in ("p50", "p99", "max", "Hz", "CPU ms", "CPU%", "RSS", "RT"):
        t.add_column(col, justify="right")
    for r in report.results:
        e = r.end_to_end
        ok = Text("yes", style="green") if r.realtime else Text("no", style="red")
        t.add_row(_label(r), f"{e['p50']:.1f}", f"{e['p99']:.1f}", f"{e['max']:.1f}",
                  f"{r.throughput_hz:.1f}", f"{r.cpu_ms_per_bundle:.0f}", f"{r.cpu_percent:.0f}",
                  f"{r.rss_mib:.0f}", ok)
    out.append(t)
    groups = [g for g in [*STAGE_GROUPS, "other"] if any(g in r.groups for r in report.results)]
    short = {"compensate": "comp", "preprocess": "prep", "encode.camera": "cam", "encode.lidar": "lidar",
             "encode.radar": "radar", "fusion_head": "head", "decode": "decode", "other": "other"}
    t2 = Table(title="stage p50 (ms; late: summed over modalities)", box=box.SIMPLE_HEAD, pad_edge=False)
    t2.add_column("configuration", justify="left")
    for g in groups:
        t2.add_column(short.get(g, g), justify="right")
    for r in report.results:
        t2.add_row(_label(r), *[f"{r.groups[g]['p50']:.1f}" if g in r.groups else "-" for g in groups])
    out.append(t2)
    if report.results:
        r0 = report.results[0]
        out.append(Text(f"configuration = cameras, LiDAR points, strategy; {r0.bundles} bundles each after "
                        f"{r0.warmup} warm-up (p95 in the JSON). Hz = 1000 / mean; CPU ms = "
                        f"process CPU time per bundle; CPU% of one core; RSS MiB now (peak "
                        f"{max(r.rss_peak_mib for r in report.results):.0f}); RT = p99 < LiDAR period "
                        f"{r0.lidar_period_ms:.0f} ms.", style="dim"))
    rt = report.realtime
    if rt is not None:
        t3 = Table(title=f"real sensor rates: {rt.seconds:g} s of drive, capture -> result (ms)",
                   box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("bundles", "fused", "dropped", "failed", "p50", "p95", "p99", "max", "sync wait"):
            t3.add_column(col, justify="right")
        lat = rt.latency or {}
        wait = rt.sync_wait or {}

        def f(d: dict[str, float], k: str) -> str:
            return f"{d[k]:.1f}" if k in d else "-"

        t3.add_row(str(rt.bundles_emitted), str(rt.bundles_processed), str(rt.bundles_dropped), str(rt.bundles_failed),
                   f(lat, "p50"), f(lat, "p95"), f(lat, "p99"), f(lat, "max"), f(wait, "p50"))
        out.append(t3)
        out.append(Text("modes: " + ", ".join(f"{k} {v}" for k, v in rt.modes.items()), style="dim"))
    return out
