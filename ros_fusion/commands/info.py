"""`ros-fusion info BAG [--sync] [--json]`: topics, types, counts and rates of a bag; with --sync its timing."""

from __future__ import annotations

import argparse
import json
import sys

from . import EXIT_OK, HelpFormatter, fail

EXAMPLE = """example:
  ros-fusion info drive.mcap
  ros-fusion info drive.mcap --json | jq '.topics[] | {topic, rate_hz}'
  ros-fusion info drive.mcap --sync              # timing diagnosis: run this first on a new rig
  ros-fusion info drive.mcap --sync --json | jq '.sync.sensors[] | {sensor, jitter_ms, matched_pct}'
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info",
        help="show what is in a bag (topics, counts, rates)",
        description=(
            "Summarise a bag: per topic the message type, count, rate from log times and from "
            "header stamps, the largest gap and size; the bag's duration, size and custom metadata "
            "(rig, scenario, seed). Works without ROS message packages."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("bag", metavar="BAG", help="a .mcap file or a rosbag2 directory")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.add_argument(
        "--no-stamps",
        action="store_true",
        help="only read the bag's index (fast on huge bags): no rates from header stamps, no gaps or sizes",
    )
    p.add_argument(
        "--sync",
        action="store_true",
        help="timing diagnosis: per sensor rate, jitter, gaps, log-vs-stamp offset, frozen data, and what the "
        "synchroniser makes of it (bundles, matched %%, ages, added wait); with --json under the key 'sync'",
    )
    p.add_argument("--rig", metavar="RIG_YAML", help="with --sync: rig file to use instead of the one in the bag")
    p.add_argument("--reference", metavar="SENSOR", help="with --sync: trigger sensor (default: the first LiDAR)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..bag.errors import BagError
    from ..bag.info import bag_summary, render_summary
    from ..core.rig import ConfigError

    timing = None
    try:
        summary = bag_summary(args.bag, stamps=not args.no_stamps)
        if getattr(args, "sync", False):
            from ..core.rig import load_rig
            from ..eval.timing import diagnose

            rig = load_rig(args.rig) if getattr(args, "rig", None) else None
            timing = diagnose(args.bag, rig, reference=getattr(args, "reference", None))
    except BagError as e:
        return fail("info", str(e))
    except ConfigError as e:
        return fail("info", f"--sync: {e}")
    if args.json:
        out = summary.to_dict()
        if timing is not None:
            out["sync"] = timing.to_dict()
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from ..console import make_console

        console = make_console()
        console.print(render_summary(summary))
        if timing is not None:
            from ..eval.timing import render_timing

            console.print(render_timing(timing))
    return EXIT_OK
