"""`ros-fusion simulate`: render a synthetic drive into a bag, reproducibly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, fail

if TYPE_CHECKING:
    from ..core.events import SensorEvent
    from ..core.rig import Rig
    from ..ros.bag_io import WriteStats

EXAMPLE = """examples:
  ros-fusion simulate --list-scenarios
  ros-fusion simulate --scenario highway --seed 7 --duration 20 -o highway.mcap
  ros-fusion simulate --scenario urban --seed 1 --duration 30 -o drop.mcap \\
      --fault drop:camera_front@5-8 --fault drop:radar_front@12-15

Output: a path ending in .mcap is written as ONE self-contained MCAP file (rosbag2
metadata embedded; `ros2 bag play drive.mcap`, Foxglove, mcap CLI and rosbags read it);
any other path becomes a rosbag2 directory (<dir>/<dir>.mcap + metadata.yaml).
The same scenario, seed, duration, rig, faults and output file name give a
byte-identical file.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "simulate",
        help="simulate a drive and write it as a bag",
        description=(
            "Simulate camera, LiDAR, radar, IMU and odometry of a rig driving through a scenario and "
            "write every message, with ground truth on /ground_truth/obstacles and the rig on /rig, "
            "into an MCAP bag logged at each message's simulated arrival time."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--scenario", metavar="NAME", help="scenario to drive (see --list-scenarios); required")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed: same seed, same bag")
    p.add_argument("--duration", type=float, default=10.0, metavar="S", help="simulated seconds")
    p.add_argument("-o", "--output", metavar="OUT", help="output bag: file.mcap or a directory name; required")
    p.add_argument(
        "--rig", metavar="FILE", default=None, help="rig YAML (default: the package's config/rig_default.yaml)"
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a sensor fault, e.g. drop:camera_front@5-8 (drop that sensor from 5 s to 8 s); repeatable",
    )
    p.add_argument("--list-scenarios", action="store_true", help="list the available scenarios and exit")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")
    p.set_defaults(func=run)
    return p


def _list(scenarios: dict[str, str]) -> int:
    from rich.table import Table

    from ..console import make_console

    table = Table("scenario", "description", header_style="bold")
    for name, text in sorted(scenarios.items()):
        table.add_row(name, text)
    make_console().print(table)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from ..bag.errors import BagError
    from ..core.rig import ConfigError, load_rig
    from ..core.types import RejectedInput
    from ..paths import default_rig_path
    from ..sim.drive import list_scenarios, parse_fault

    scenarios = list_scenarios()
    if args.list_scenarios:
        return _list(scenarios)
    if not args.scenario:
        return fail("simulate", "--scenario NAME is required (see --list-scenarios)")
    if args.scenario not in scenarios:
        return fail("simulate", f"unknown scenario {args.scenario!r}; available: {', '.join(sorted(scenarios))}")
    if not args.output:
        return fail("simulate", "-o/--output OUT is required (e.g. -o drive.mcap)")
    if not (args.duration > 0 and args.duration < 1e6):
        return fail("simulate", f"--duration must be > 0 seconds, got {args.duration}")
    out = Path(args.output)
    if not out.parent.is_dir():
        return fail("simulate", f"output directory {out.parent} does not exist")
    if (out.exists() or out.is_symlink()) and not args.force:
        return fail("simulate", f"{out} already exists (use --force to overwrite)")
    try:
        rig = load_rig(args.rig or default_rig_path())
        faults = [parse_fault(text) for text in args.fault]
    except ConfigError as e:
        return fail("simulate", str(e))
    except ValueError as e:
        return fail("simulate", f"bad --fault: {e}")

    try:
        stats = simulate_to_bag(rig, args.scenario, args.seed, float(args.duration), args.output, faults=faults,
                                overwrite=args.force, show_progress=not args.quiet)
    except KeyboardInterrupt:
        return fail("simulate", f"interrupted; nothing written to {out}", EXIT_INTERRUPTED)
    except (BagError, ConfigError, RejectedInput) as e:
        return fail("simulate", str(e))
    if not args.quiet:
        topics = len(stats.per_topic)
        print(
            f"wrote {out}: {stats.messages} messages on {topics} topics, "
            f"{(stats.end_ns - stats.start_ns) / 1e9:.2f} s (scenario {args.scenario}, seed {args.seed})"
        )
    return EXIT_OK


def simulate_to_bag(
    rig: Rig,
    scenario: str,
    seed: int,
    duration_s: float,
    output: str | Path,
    *,
    faults: list[Any] | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> WriteStats:
    """Simulate a drive straight into a bag (used by `simulate` and `demo`).

    The bag's metadata records scenario, seed, duration and *every* injected
    fault (asked-for plus the scenario's schedule), so evaluation knows what
    happened when.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..ros.bag_io import write_drive
    from ..sim.drive import effective_faults, simulate_drive

    duration = float(duration_s)
    metadata = {
        "scenario": scenario,
        "seed": str(seed),
        "duration_s": repr(duration),
        "faults": " ".join(str(f) for f in effective_faults(rig, scenario, duration, faults)),
        "rig_name": rig.name,
    }
    events = simulate_drive(rig, scenario, seed, duration, faults=faults or None)
    progress = Progress(
        TextColumn("[bold]simulate[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.1f} s sim"),
        TextColumn("{task.fields[messages]} msgs"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress or not sys.stdout.isatty(),
    )
    first: list[int] = []

    with progress:
        task = progress.add_task(scenario, total=duration, messages=0)

        def on_event(n: int, ev: SensorEvent) -> None:
            if not first:
                first.append(ev.publish_ns)
            if n % 50 == 0:
                done = min(duration, (ev.publish_ns - first[0]) / 1e9)
                progress.update(task, completed=done, messages=n)

        stats = write_drive(events, output, rig, metadata=metadata, progress=on_event, overwrite=overwrite)
        progress.update(task, completed=duration, messages=stats.messages)
    return stats
