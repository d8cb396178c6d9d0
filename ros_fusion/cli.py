"""`ros-fusion`: one entry point, one subcommand per job (DESIGN §3).

Each subcommand lives in `ros_fusion/commands/<name>.py` and exposes
`register(subparsers)`; heavy imports (rclpy, open3d) happen inside `run`, so
`ros-fusion --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import (
    bench,
    build_engines,
    convert,
    dataset,
    demo,
    eval,
    eval_model,
    export,
    info,
    launch,
    record,
    replay,
    simulate,
    train,
)

COMMANDS = (demo, simulate, launch, replay, record, info, convert, dataset, train, export, eval, eval_model,
            build_engines, bench)

EPILOG = """\
typical session:
  ros-fusion simulate --scenario urban --seed 1 --duration 20 -o drive.mcap
  ros-fusion info drive.mcap
  ros-fusion launch &              # the node graph (same plan as fusion.launch.py)
  ros-fusion replay drive.mcap     # feed it in real time
  ros-fusion demo                  # all of the above in one command
  ros-fusion eval drive.mcap -o eval/   # accuracy, robustness matrix, mode switches, latency

Run `ros-fusion <command> --help` for each command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ros-fusion",
        description="Camera/LiDAR/radar/IMU fusion for ROS 2: simulate drives, launch the node graph, "
        "replay, record and inspect bags.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ros-fusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
