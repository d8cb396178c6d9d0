"""`ros-fusion replay BAG`: publish a bag into the live graph in real time."""

from __future__ import annotations

import argparse
import sys

from . import EXIT_OK, HelpFormatter, fail, use_package_dds_profile

EXAMPLE = """examples:
  ros-fusion replay drive.mcap
  ros-fusion replay drive.mcap --rate 0.5 --start 3 --clock
  ros-fusion replay drive.mcap --loop --topics /sensors/lidar_top/points /sensors/imu
  ros-fusion replay drive.mcap --remap /sensors/imu:=/imu/data --stamp-now

Messages are published as the raw bytes stored in the bag (no conversion), RELIABLE
depth 10 (best-effort subscribers match too), /rig latched. Set ROS_DOMAIN_ID as for
any ROS node. Unless FASTDDS_DEFAULT_PROFILES_FILE is set, the package's shared-memory
profile is used so large clouds and images are not lost.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "replay",
        help="play a bag into the live ROS graph",
        description=(
            "Publish a bag's messages on their topics with real-time pacing (each message at its "
            "log time, scaled by --rate). Prints how late publishes were (p50/p99) at the end; "
            "Ctrl-C stops cleanly."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("bag", metavar="BAG", help="a .mcap file or a rosbag2 directory")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="skip the first S seconds of the bag")
    p.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    p.add_argument("--topics", nargs="+", metavar="TOPIC", default=None, help="only these topics (default: all)")
    p.add_argument(
        "--remap", action="append", default=[], metavar="OLD:=NEW", help="publish topic OLD as NEW; repeatable"
    )
    p.add_argument("--clock", action="store_true", help="publish /clock from the bag's log time (for use_sim_time)")
    p.add_argument(
        "--stamp-now",
        action="store_true",
        help="shift every header.stamp onto the wall clock, keeping each message's recorded latency "
        "(for nodes that reject old stamps without use_sim_time)",
    )
    p.add_argument(
        "--wait-subscribers",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for every topic to have a subscriber before starting",
    )
    p.add_argument("--delay", type=float, default=0.0, metavar="S", help="pause S seconds before the first message")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..bag.errors import BagError
    from ..ros.replay import parse_remaps, replay_bag

    if not (args.rate > 0 and args.rate < 1e6):
        return fail("replay", f"--rate must be > 0, got {args.rate}")
    if not args.start >= 0:
        return fail("replay", f"--start must be >= 0 seconds, got {args.start}")
    if args.wait_subscribers < 0 or args.delay < 0:
        return fail("replay", "--wait-subscribers and --delay must be >= 0")
    try:
        remaps = parse_remaps(args.remap)
    except ValueError as e:
        return fail("replay", str(e))
    use_package_dds_profile()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]replay[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[bag_t]}"),
        TimeElapsedColumn(),
        disable=args.quiet or not sys.stdout.isatty(),
    )
    task = progress.add_task("replay", total=None, bag_t="")

    def on_progress(done: int, total: int, t_ns: int) -> None:
        if done % 20 == 0 or done == total:
            progress.update(task, completed=done, total=total, bag_t=f"t={t_ns / 1e9:.3f}")

    try:
        with progress:
            stats = replay_bag(
                args.bag, rate=args.rate, start_s=args.start, loop=args.loop, topics=args.topics, remaps=remaps,
                clock=args.clock, stamp_now=args.stamp_now, on_progress=on_progress,
                wait_subscribers_s=args.wait_subscribers, delay_s=args.delay,
            )
    except (BagError, ValueError) as e:
        return fail("replay", str(e))
    for topic, why in stats.skipped_topics.items():
        print(f"ros-fusion replay: warning: skipped {topic}: {why}", file=sys.stderr)
    if not args.quiet:
        state = "interrupted" if stats.interrupted else "done"
        print(
            f"replay {state}: {stats.published} messages in {stats.wall_s:.2f} s ({stats.loops} loop(s)); "
            f"lateness p50 {stats.lateness_p50_ms:.2f} ms, p99 {stats.lateness_p99_ms:.2f} ms, "
            f"max {stats.lateness_max_ms:.2f} ms"
        )
    return EXIT_OK
