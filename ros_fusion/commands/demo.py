"""`ros-fusion demo`: the README's main command.

Generates (or reuses) a simulated drive, starts the node graph exactly as
`ros-fusion launch` does, replays the bag into it in real time as a separate
process, shows a live status line, and ends with what the node saw per sensor
(rates, ages, drops, rejects, state). It grows with the pipeline issues.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HELP = """\
Run the whole system on the embedded default: a simulated drive (scenario,
seed and duration below) on the default rig, replayed live through the node
graph started from the node plan. The bag is cached under --cache-dir and
reused unless --fresh. Needs nothing but this package: no dataset, no network.

examples:
  ros-fusion demo
  ros-fusion demo --scenario night_rain --duration 30
  ros-fusion demo --fresh --seed 3
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a drive and run it live through the node graph (the README's main command)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", default="sensor_faults", help="simulated scenario (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default: %(default)s)")
    p.add_argument("--duration", type=float, default=20.0, help="drive length in seconds (default: %(default)s)")
    p.add_argument("--rig-file", default="", help="sensor rig YAML (default: config/rig_default.yaml)")
    p.add_argument("--cache-dir", default="cache", help="where generated bags are kept (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="regenerate the bag even if a cached one exists")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default: %(default)s)")
    p.add_argument(
        "--domain-id", type=int, default=None,
        help="ROS_DOMAIN_ID for the demo's nodes (default: the environment's, else 0)",
    )
    p.add_argument("--startup-timeout", type=float, default=30.0, help="seconds to wait for fusion_node (default: 30)")
    p.set_defaults(func=run)


def _bag_path(args: argparse.Namespace) -> Path:
    dur = f"{args.duration:g}".replace(".", "p")
    return Path(args.cache_dir) / f"demo_{args.scenario}_s{args.seed}_{dur}s.mcap"


def _simulate(args: argparse.Namespace, out: Path, rig_path: Path, console) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..core.rig import load_rig
    from ..ros.bag_io import write_drive
    from ..sim.drive import simulate_drive

    rig = load_rig(rig_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Progress(
        TextColumn("simulating [bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task(f"{args.scenario} seed {args.seed} {args.duration:g} s", total=1.0)
        events = simulate_drive(rig, args.scenario, args.seed, args.duration,
                                progress=lambda f: progress.update(task, completed=f))
        write_drive(events, out, rig, overwrite=True, metadata={"scenario": args.scenario, "seed": str(args.seed),
                                                "duration_s": f"{args.duration:g}"})
        progress.update(task, completed=1.0)


def _status_line(latest: dict[str, dict[str, Any]], elapsed: float, total: float) -> str:
    parts = [f"t={elapsed:5.1f}/{total:.0f}s"]
    for name, st in sorted(latest.items()):
        if name.endswith("/fusion"):
            continue
        v = st["values"]
        short = name.split("/", 1)[1]
        parts.append(f"{short}: {v.get('state', '?')} {float(v.get('rate_hz', 0)):.1f}Hz "
                     f"{float(v.get('age_ms_mean', 0)):.0f}ms")
    return " | ".join(parts)


def _report(latest: dict[str, dict[str, Any]], peak_rate: dict[str, float], rig, console) -> int:
    from rich.table import Table

    table = Table(title="What fusion_node saw (from /diagnostics)")
    for col in ("sensor", "nominal Hz", "rate Hz (last)", "rate Hz (peak)", "age ms mean", "age ms max",
                "received", "rejected", "dropped", "state"):
        table.add_column(col, justify="left" if col in ("sensor", "state") else "right")
    missing = []
    for spec in rig.sensors.values():
        st = latest.get(f"ros_fusion/{spec.name}")
        if st is None:
            missing.append(spec.name)
            table.add_row(spec.name, f"{spec.rate_hz:g}", "-", "-", "-", "-", "-", "-", "-", "never reported")
            continue
        v = st["values"]
        table.add_row(
            spec.name, f"{spec.rate_hz:g}", f"{float(v.get('rate_hz', 0)):.1f}",
            f"{peak_rate.get(spec.name, 0.0):.1f}", f"{float(v.get('age_ms_mean', 0)):.1f}",
            f"{float(v.get('age_ms_max', 0)):.1f}", str(v.get("received", 0)), str(v.get("rejected", 0)),
            str(v.get("dropped", 0)), str(v.get("state", "?")),
        )
    console.print(table)
    fusion = latest.get("ros_fusion/fusion")
    if fusion:
        console.print(f"fusion: {fusion['message']}")
    if missing:
        console.print(f"[red]no diagnostics for: {', '.join(missing)}[/red]")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..core.rig import ConfigError, load_rig
    from ..paths import default_rig_path
    from ..ros.node_plan import LaunchArgs, plan_nodes
    from ..ros.supervisor import Supervisor

    console = Console()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    rig_path = Path(args.rig_file) if args.rig_file else default_rig_path()
    try:
        rig = load_rig(rig_path)
        specs = plan_nodes(LaunchArgs(rig_file=str(rig_path)))
    except ConfigError as e:
        console.print(f"[red]ros-fusion demo: error: {e}[/red]")
        return 2
    for key, value in specs[0].environment.items():
        os.environ.setdefault(key, value)

    bag = _bag_path(args)
    if args.fresh or not bag.exists():
        t0 = time.monotonic()
        _simulate(args, bag, rig_path, console)
        console.print(f"wrote {bag} in {time.monotonic() - t0:.1f} s")
    else:
        console.print(f"reusing {bag} (--fresh to regenerate)")

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ..ros.diagnostics import DiagnosticsListener

    log_dir = Path(args.cache_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    node_log = open(log_dir / "demo_nodes.log", "w")

    def node_line(line: str) -> None:
        node_log.write(line + "\n")
        node_log.flush()
        if any(w in line for w in ("WARN", "ERROR", "FATAL", "[launch]")):
            console.print(line, markup=False, highlight=False)

    sup = Supervisor(specs, write=node_line)
    rclpy.init()
    node = rclpy.create_node("ros_fusion_demo")
    listener = DiagnosticsListener(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    replay = None
    rc = 0
    peak: dict[str, float] = {}
    try:
        console.print(f"starting node graph: {', '.join(s.name for s in specs)} (logs: {node_log.name})")
        sup.start()
        deadline = time.monotonic() + args.startup_timeout
        while not listener.latest and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            if any(rc is not None for rc in sup.returncodes.values()):
                console.print("[red]a node exited during start-up; see the log above[/red]")
                return 1
        if not listener.latest:
            console.print(f"[red]no /diagnostics from fusion_node within {args.startup_timeout:g} s[/red]")
            return 1
        console.print("fusion_node is up; replaying the drive in real time")
        cmd = [sys.executable, "-m", "ros_fusion.cli", "replay", str(bag), "--rate", str(args.rate), "--quiet"]
        replay = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        total = args.duration / max(args.rate, 1e-6)
        t0 = time.monotonic()
        with console.status("") as status:
            while replay.poll() is None:
                executor.spin_once(timeout_sec=0.1)
                latest = listener.latest
                for name, st in latest.items():
                    short = name.split("/", 1)[1]
                    peak[short] = max(peak.get(short, 0.0), float(st["values"].get("rate_hz", 0) or 0))
                status.update(_status_line(latest, time.monotonic() - t0, total))
        out = replay.stdout.read() if replay.stdout else ""
        if replay.returncode != 0:
            console.print(f"[red]replay failed (exit {replay.returncode}):[/red]\n{out}")
            rc = 1
        # One more diagnostics period so the last messages are counted.
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
        rc = max(rc, _report(listener.latest, peak, rig, console))
        if any(r not in (None, 0) for r in sup.returncodes.values()):
            console.print(f"[red]a node died: {sup.returncodes}[/red]")
            rc = 1
    finally:
        if replay is not None and replay.poll() is None:
            replay.terminate()
        sup.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        node_log.close()
    return rc
