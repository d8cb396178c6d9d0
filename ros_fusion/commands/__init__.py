"""`ros-fusion` subcommands, one module each, every one exposing `register(subparsers)`.

Each `register` adds one argparse subcommand and sets ``func=run`` where
``run(args) -> int`` is the exit code; ``cli.py`` calls ``args.func(args)``.
Shared here: the help formatter (defaults shown, examples kept verbatim) and
the one-line error convention (``ros-fusion <cmd>: error: ...``, exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the example epilog's line breaks.

    Flags and empty defaults (False, None, []) are not printed: "(default: None)"
    tells a user nothing the help text does not already say.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        d = action.default
        empty = d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d)
        if empty or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def fail(command: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print one clear error line to stderr and return the exit code (no traceback)."""
    print(f"ros-fusion {command}: error: {message}", file=sys.stderr)
    return code


def use_package_dds_profile() -> None:
    """Point Fast DDS at the package's SHM profile unless the user chose one (large clouds/images)."""
    if "FASTDDS_DEFAULT_PROFILES_FILE" in os.environ:
        return
    try:
        from ..paths import fastdds_profile_path

        path = fastdds_profile_path()
    except FileNotFoundError:
        return
    if path.is_file():
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(path)


def register_all(subparsers: argparse._SubParsersAction) -> None:
    """Register simulate, replay, record and info (the bag tool commands)."""
    from . import info, record, replay, simulate

    for module in (simulate, replay, record, info):
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """A parser with just these subcommands (tests, and `python -m ros_fusion.commands`)."""
    parser = argparse.ArgumentParser(prog="ros-fusion", formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
