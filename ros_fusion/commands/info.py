"""`ros-fusion info BAG [--json]`: topics, types, counts and rates of a bag."""

from __future__ import annotations

import argparse
import json
import sys

from . import EXIT_OK, HelpFormatter, fail

EXAMPLE = """example:
  ros-fusion info drive.mcap
  ros-fusion info drive.mcap --json | jq '.topics[] | {topic, rate_hz}'
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
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..bag.errors import BagError
    from ..bag.info import bag_summary, render_summary

    try:
        summary = bag_summary(args.bag, stamps=not args.no_stamps)
    except BagError as e:
        return fail("info", str(e))
    if args.json:
        json.dump(summary.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        Console().print(render_summary(summary))
    return EXIT_OK
