"""`ros-fusion record -o OUT [topics...]`: record live topics into an MCAP bag."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, HelpFormatter, fail, use_package_dds_profile

EXAMPLE = """examples:
  ros-fusion record -o run.mcap                                # every published topic
  ros-fusion record -o run.mcap --duration 30 /fusion_node/obstacles /diagnostics

Topics that appear after the start are picked up (discovery repeats every
--discovery-period). Each subscription matches its publishers' QoS. Log times
are the wall-clock reception times. Ctrl-C ends the recording with a complete bag.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "record",
        help="record live topics into a bag",
        description="Subscribe to topics (raw, no conversion) and write every message into an MCAP bag.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to record (default: all except /rosout, "
                   "/parameter_events)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output bag: file.mcap or a directory name")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    p.add_argument(
        "--discovery-period", type=float, default=0.5, metavar="S", help="how often to look for new topics"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary at the end")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..bag.errors import BagError
    from ..ros.record import record

    out = Path(args.output)
    if not out.parent.is_dir():
        return fail("record", f"output directory {out.parent} does not exist")
    if (out.exists() or out.is_symlink()) and not args.force:
        return fail("record", f"{out} already exists (use --force to overwrite)")
    if args.duration is not None and not args.duration > 0:
        return fail("record", f"--duration must be > 0 seconds, got {args.duration}")
    if not args.discovery_period > 0:
        return fail("record", f"--discovery-period must be > 0, got {args.discovery_period}")
    bad = [t for t in args.topics if not t.startswith("/")]
    if bad:
        return fail("record", f"topic names must be absolute (start with '/'): {', '.join(bad)}")
    use_package_dds_profile()
    try:
        stats = record(
            out, args.topics or None, args.duration, overwrite=args.force, discovery_period_s=args.discovery_period
        )
    except (BagError, ValueError) as e:
        return fail("record", str(e))
    for topic, why in stats.skipped.items():
        print(f"ros-fusion record: warning: skipped {topic}: {why}", file=sys.stderr)
    for topic in stats.missing:
        print(f"ros-fusion record: warning: no messages on {topic}", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {out}: {stats.messages} messages on {len(stats.per_topic)} topics in {stats.wall_s:.1f} s")
    return EXIT_OK
