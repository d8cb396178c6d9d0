"""The node plan: one pure function from configuration to the processes to start.

Both `launch/fusion.launch.py` (ROS mode, launch_ros) and `ros-fusion launch`
(pip mode, our own supervisor) call `plan_nodes`, so the two ways to start the
system cannot drift apart (DESIGN §2). No rclpy import here: the plan is data.

A node's parameters come from its `params_file` (a standard ROS 2 parameter
file, relative to the config file's folder, read as rcl reads it) with the
config's `parameters:` mapping applied on top; fusion_node's are validated
against PARAM_SPECS here, so a bad value fails before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.rig import ConfigError, load_rig, load_yaml_file
from ..paths import default_config_path, default_rig_path, fastdds_profile_path
from .params import read_param_file, validate_param_file_values

PACKAGE = "ros_fusion"
#: Nodes whose parameters are PARAM_SPECS (validated in the plan).
FUSION_NODE_MODULE = "ros_fusion.ros.fusion_node"
BACKENDS = ("onnxruntime", "tensorrt", "torch")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
DISCOVERY_RANGES = ("LOCALHOST", "SUBNET", "SYSTEM_DEFAULT", "OFF")


@dataclass(frozen=True)
class LaunchArgs:
    """The launch arguments, shared by the launch file and `ros-fusion launch`."""

    config_file: str = ""
    rig_file: str = ""
    models_dir: str = ""
    use_sim_time: bool = False
    backend: str = "onnxruntime"
    log_level: str = "info"
    discovery_range: str = "LOCALHOST"

    @staticmethod
    def declared() -> dict[str, tuple[str, str]]:
        """name → (default as launch-argument string, description)."""
        return {
            "config_file": ("", "node configuration YAML (default: share/ros_fusion/config/fusion.yaml)"),
            "rig_file": ("", "sensor rig YAML: topics, rates, extrinsics (default: config/rig_default.yaml)"),
            "models_dir": ("", "model bundle folder for that rig, e.g. share/ros_fusion/models/astyx_hires2019 "
                               "(default: the package's models/, or the node config's models_dir)"),
            "use_sim_time": ("false", "use /clock (true when replaying a bag with --clock)"),
            "backend": ("onnxruntime", f"inference backend: {', '.join(BACKENDS)}"),
            "log_level": ("info", f"ROS log level: {', '.join(LOG_LEVELS)}"),
            "discovery_range": (
                "LOCALHOST",
                "ROS_AUTOMATIC_DISCOVERY_RANGE: LOCALHOST keeps DDS on this machine; SUBNET on a vehicle network",
            ),
        }

    @staticmethod
    def from_strings(values: Mapping[str, str]) -> LaunchArgs:
        """Build from launch-argument strings (what launch substitutions yield)."""
        unknown = set(values) - set(LaunchArgs.declared())
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown launch argument (known: {sorted(LaunchArgs.declared())})")
        sim = str(values.get("use_sim_time", "false")).strip().lower()
        if sim not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError("use_sim_time", f"expected true/false, got {sim!r}")
        return LaunchArgs(
            config_file=str(values.get("config_file", "")),
            rig_file=str(values.get("rig_file", "")),
            models_dir=str(values.get("models_dir", "")),
            use_sim_time=sim in ("true", "1", "yes"),
            backend=str(values.get("backend", "onnxruntime")),
            log_level=str(values.get("log_level", "info")).lower(),
            discovery_range=str(values.get("discovery_range", "LOCALHOST")).upper(),
        )


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: what launch_ros.actions.Node or our supervisor needs."""

    package: str
    executable: str
    module: str  # `python -m <module>` runs the same entry point in pip mode
    name: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"

    def ros_arguments(self) -> list[str]:
        """`--ros-args` list equivalent to the spec (parameters passed as -p)."""
        out = ["--ros-args", "-r", f"__node:={self.name}", "--log-level", self.log_level]
        if self.namespace:
            out += ["-r", f"__ns:={self.namespace}"]
        for src, dst in self.remappings:
            out += ["-r", f"{src}:={dst}"]
        for k, v in self.parameters.items():
            out += ["-p", f"{k}:={_param_literal(v)}"]
        return out


def _param_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # YAML-quote strings so '' and values like 'true' or '1.0' stay strings.
        return yaml.safe_dump(v, default_style="'").strip().removesuffix("...").strip()
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def dds_environment(args: LaunchArgs, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment every node gets: our Fast DDS profile unless the user set one; discovery range."""
    env = dict(os.environ if base_env is None else base_env)
    out: dict[str, str] = {}
    if not env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        out["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile_path())
    out["ROS_AUTOMATIC_DISCOVERY_RANGE"] = args.discovery_range
    return out


def load_node_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    d = load_yaml_file(p, "config_file")
    if not isinstance(d, dict) or not isinstance(d.get("nodes"), dict) or not d["nodes"]:
        raise ConfigError("nodes", "missing or empty: the config must list nodes to start", str(p))
    return d


def node_parameters(node: Mapping[str, Any], name: str, config_path: Path) -> dict[str, Any]:
    """The parameters of config entry `nodes.<name>`: its params_file (if any), then `parameters:` on top.

    For fusion_node both are validated (types as rcl types them); a problem is a
    `ConfigError` naming the file and the key.
    """
    key = f"nodes.{name}"
    src = str(config_path)
    is_fusion = node.get("module") == FUSION_NODE_MODULE or node.get("executable") == "fusion_node"
    values: dict[str, Any] = {}
    params_file = node.get("params_file")
    if params_file is not None:
        if not isinstance(params_file, str) or not params_file.strip():
            raise ConfigError(f"{key}.params_file", "expected the name of a ROS 2 parameter file "
                                                    "(relative to this config's folder)", src)
        path = Path(params_file).expanduser()
        if not path.is_absolute():
            path = config_path.parent / path
        if not path.is_file():
            raise ConfigError(f"{key}.params_file", f"no such file: {path}", src)
        values = read_param_file(path, name, str(node.get("namespace", "")))
        if is_fusion:
            validate_param_file_values(values, source=str(path))
    overrides = node.get("parameters")
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{key}.parameters", "expected a mapping of parameter overrides (name: value)", src)
    if is_fusion:
        validate_param_file_values(overrides, source=src, prefix=f"{key}.parameters.")
    values.update({str(k): v for k, v in overrides.items()})
    return values


def plan_nodes(args: LaunchArgs, base_env: Mapping[str, str] | None = None) -> list[NodeSpec]:
    """Configuration → ordered list of nodes. Pure: same inputs, same plan.

    Validates the launch arguments and the rig up front so that a bad file
    fails here, naming the key, before any process starts.
    """
    if args.backend not in BACKENDS:
        raise ConfigError("backend", f"unknown inference backend {args.backend!r} (one of {', '.join(BACKENDS)})")
    if args.log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"unknown log level {args.log_level!r} (one of {', '.join(LOG_LEVELS)})")
    if args.discovery_range not in DISCOVERY_RANGES:
        raise ConfigError(
            "discovery_range", f"unknown range {args.discovery_range!r} (one of {', '.join(DISCOVERY_RANGES)})"
        )
    config_path = Path(args.config_file) if args.config_file else default_config_path()
    rig_path = Path(args.rig_file) if args.rig_file else default_rig_path()
    cfg = load_node_config(config_path)
    load_rig(rig_path)  # fail now, naming the key, rather than in a node later
    env = dds_environment(args, base_env)
    specs: list[NodeSpec] = []
    for name, node in cfg["nodes"].items():
        key = f"nodes.{name}"
        if not isinstance(node, dict):
            raise ConfigError(key, "expected a mapping", str(config_path))
        for k in ("executable", "module"):
            if not isinstance(node.get(k), str) or not node[k]:
                raise ConfigError(f"{key}.{k}", "missing", str(config_path))
        params = node_parameters(node, str(name), config_path)
        if "rig_file" in params and not params["rig_file"]:
            params["rig_file"] = str(rig_path.resolve())
        if "models_dir" in params and args.models_dir:
            if not (Path(args.models_dir) / "manifest.yaml").is_file():
                raise ConfigError("models_dir", f"{args.models_dir} has no manifest.yaml (a model bundle folder "
                                                "holds manifest.yaml and the ONNX files)")
            params["models_dir"] = str(Path(args.models_dir).resolve())
        if "backend" in params:
            params["backend"] = args.backend
        params["use_sim_time"] = args.use_sim_time
        remaps = node.get("remappings") or {}
        if not isinstance(remaps, dict):
            raise ConfigError(f"{key}.remappings", "expected a mapping from topic to topic", str(config_path))
        specs.append(
            NodeSpec(
                package=PACKAGE,
                executable=node["executable"],
                module=node["module"],
                name=str(name),
                namespace=str(node.get("namespace", "")),
                parameters=params,
                remappings=tuple((str(a), str(b)) for a, b in remaps.items()),
                environment=env,
                log_level=args.log_level,
            )
        )
    return specs
