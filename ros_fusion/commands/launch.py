"""`ros-fusion launch`: start the node graph in pip mode (no ros2 launch needed)."""

from __future__ import annotations

import argparse
import sys

from ..core.rig import ConfigError

HELP = """\
Start the nodes of the node plan as supervised processes: the same plan
`ros2 launch ros_fusion fusion.launch.py` uses on a full ROS 2 install.
Nodes start in order, their log lines are prefixed by node name, Ctrl-C
(SIGINT) or SIGTERM is forwarded to all of them, and when one node dies with
an error the others are stopped. FASTDDS_DEFAULT_PROFILES_FILE is set to the
shipped config/fastdds.xml (shared memory sized for clouds and images) unless
you set one yourself.

Arguments may also be given in ros2-launch style, e.g. `use_sim_time:=true`.

examples:
  ros-fusion launch
  ros-fusion launch --rig-file my_car.yaml --discovery-range SUBNET
  ros-fusion launch --rig-file config/rig_astyx_hires2019.yaml --models-dir models/astyx_hires2019
  ros-fusion launch use_sim_time:=true log_level:=debug
  ros-fusion launch --dry-run          # print the plan, start nothing
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ..ros.node_plan import BACKENDS, DISCOVERY_RANGES, LOG_LEVELS

    p = sub.add_parser(
        "launch",
        help="start the node graph (pip-mode equivalent of fusion.launch.py)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="NAME:=VALUE", help="launch arguments in ros2 launch syntax")
    p.add_argument("--config-file", default="", help="node configuration YAML (default: config/fusion.yaml)")
    p.add_argument("--rig-file", default="", help="sensor rig YAML (default: config/rig_default.yaml)")
    p.add_argument("--models-dir", default="", help="model bundle folder for that rig (default: the package's models/)")
    p.add_argument("--use-sim-time", action="store_true", help="nodes follow /clock (replay with --clock)")
    p.add_argument(
        "--backend", default="onnxruntime", choices=BACKENDS, help="inference backend (default: %(default)s)"
    )
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="ROS log level (default: %(default)s)")
    p.add_argument(
        "--discovery-range",
        default="LOCALHOST",
        choices=DISCOVERY_RANGES,
        help="ROS_AUTOMATIC_DISCOVERY_RANGE for the nodes; SUBNET on a vehicle network (default: %(default)s)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the node plan and exit")
    p.set_defaults(func=run)


def launch_args_from_cli(args: argparse.Namespace):
    from ..ros.node_plan import LaunchArgs

    values = {
        "config_file": args.config_file,
        "rig_file": args.rig_file,
        "models_dir": args.models_dir,
        "use_sim_time": "true" if args.use_sim_time else "false",
        "backend": args.backend,
        "log_level": args.log_level,
        "discovery_range": args.discovery_range,
    }
    for item in args.overrides:
        if ":=" not in item:
            raise ConfigError(item, "expected NAME:=VALUE")
        k, v = item.split(":=", 1)
        values[k] = v
    return LaunchArgs.from_strings(values)


def run(args: argparse.Namespace) -> int:
    from ..ros.node_plan import plan_nodes
    from ..ros.supervisor import Supervisor, node_command

    try:
        specs = plan_nodes(launch_args_from_cli(args))
    except ConfigError as e:
        print(f"ros-fusion launch: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for s in specs:
            print(f"{s.name}: {' '.join(node_command(s))}")
            for k, v in sorted(s.environment.items()):
                print(f"  env {k}={v}")
        return 0
    return Supervisor(specs).run()
