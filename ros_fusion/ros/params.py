"""fusion_node parameters: one table, declared with descriptors, read into a frozen dataclass.

Why a table: the descriptors (what `ros2 param describe` shows), the ranges
rclpy enforces on `ros2 param set`, and our own validation of the values read
at start come from the same row, so they cannot disagree. `validate_params`
works on a plain dict, so tests and the node plan can check a config without
ROS; `declare_params` / `read_params` do the rclpy part. Every problem is a
`ConfigError` whose key is the parameter name and whose message says what to
write instead — the node turns it into one FATAL line and a non-zero exit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from ..core.rig import ConfigError, Rig, load_rig
from ..paths import default_rig_path

BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt", "torch")
STRATEGIES: tuple[str, ...] = ("auto", "intermediate", "late")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: type from the default, inclusive numeric range, and whether it can change at runtime."""

    name: str
    default: Any
    description: str
    min: float | int | None = None
    max: float | int | None = None
    read_only: bool = True
    choices: tuple[str, ...] = ()

    @property
    def ros_type(self) -> int:
        if isinstance(self.default, bool):
            return ParameterType.PARAMETER_BOOL
        if isinstance(self.default, int):
            return ParameterType.PARAMETER_INTEGER
        if isinstance(self.default, float):
            return ParameterType.PARAMETER_DOUBLE
        return ParameterType.PARAMETER_STRING

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(
            name=self.name, type=self.ros_type, description=self.description, read_only=self.read_only
        )
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            if self.ros_type == ParameterType.PARAMETER_DOUBLE:
                d.floating_point_range = [FloatingPointRange(from_value=float(self.min), to_value=float(self.max))]
            elif self.ros_type == ParameterType.PARAMETER_INTEGER:
                d.integer_range = [IntegerRange(from_value=int(self.min), to_value=int(self.max), step=0)]
        return d


#: Every parameter of `config/fusion.yaml` → `nodes.fusion_node.parameters`, same defaults.
PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("rig_file", "", "sensor rig YAML (topics, rates, extrinsics); empty = config/rig_default.yaml"),
    ParamSpec("backend", "onnxruntime", "inference backend", choices=BACKENDS),
    ParamSpec("models_dir", "", "folder with manifest.yaml + ONNX files; empty = the package's models/"),
    ParamSpec("strategy", "auto", "fusion strategy when 2+ modalities are usable (auto = the model's policy table)",
              choices=STRATEGIES),
    ParamSpec("score_threshold", 0.1, "lowest detection score published", 0.0, 0.99),
    ParamSpec("inference_threads", 2, "onnxruntime intra-op threads", 1, 64),
    ParamSpec("pipelining", True, "rasterise + encode each LiDAR sweep on arrival, while its bundle still waits"),
    ParamSpec("output_frame", "base_link", "frame_id of published obstacles and markers"),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics messages [s]", 0.05, 60.0, read_only=False),
    ParamSpec("stale_timeout_factor", 3.0, "a sensor is STALE after this many nominal periods without data",
              1.0, 1000.0),
    ParamSpec("missing_timeout_s", 5.0, "a sensor is MISSING after this long without data [s]", 0.01, 86400.0),
    ParamSpec("rate_window_s", 5.0, "window of the rate / jitter / age estimates [s]", 0.1, 600.0),
    ParamSpec("max_future_s", 0.5, "stamps further ahead of the node clock are rejected [s]", 0.0, 3600.0,
              read_only=False),
    ParamSpec("max_age_s", 10.0, "stamps older than this relative to the node clock are rejected [s]", 0.001,
              1.0e9, read_only=False),
    ParamSpec("max_points", 2_000_000, "point clouds with more points are rejected (memory bound)", 1,
              1_000_000_000, read_only=False),
    ParamSpec("autostart", True, "configure + activate at start (no lifecycle manager needed)"),
    ParamSpec("sync_reference", "", "sensor whose messages trigger fusion bundles; empty = the rig's first LiDAR"),
    ParamSpec("sync_watchdog", True, "trigger bundles at the reference's nominal rate while it is silent"),
    ParamSpec("recover_count", 3, "healthy messages in a row before a STALE/MISSING/frozen sensor is OK again",
              1, 1000),
    ParamSpec("frozen_repeats", 3, "a sensor repeating an identical payload this many times in a row is frozen",
              1, 1000),
)
SPECS_BY_NAME: dict[str, ParamSpec] = {s.name: s for s in PARAM_SPECS}
_TYPE_WORDS = {
    ParameterType.PARAMETER_BOOL: "true or false",
    ParameterType.PARAMETER_INTEGER: "an integer",
    ParameterType.PARAMETER_DOUBLE: "a floating-point number (write 1.0, not 1)",
    ParameterType.PARAMETER_STRING: "a string",
}


@dataclass(frozen=True)
class FusionNodeParams:
    """Validated parameters of fusion_node (SI units, see PARAM_SPECS for meaning)."""

    rig_file: str = ""
    backend: str = "onnxruntime"
    models_dir: str = ""
    strategy: str = "auto"
    score_threshold: float = 0.1
    inference_threads: int = 2
    pipelining: bool = True
    output_frame: str = "base_link"
    diagnostics_period_s: float = 1.0
    stale_timeout_factor: float = 3.0
    missing_timeout_s: float = 5.0
    rate_window_s: float = 5.0
    max_future_s: float = 0.5
    max_age_s: float = 10.0
    max_points: int = 2_000_000
    autostart: bool = True
    sync_reference: str = ""
    sync_watchdog: bool = True
    recover_count: int = 3
    frozen_repeats: int = 3

    @property
    def rig_path(self) -> Path:
        """The rig file to load: `rig_file`, or the packaged default when empty."""
        return Path(self.rig_file).expanduser() if self.rig_file else default_rig_path()

    @property
    def max_future_ns(self) -> int:
        return int(self.max_future_s * 1e9)

    @property
    def max_age_ns(self) -> int:
        return int(self.max_age_s * 1e9)

    def load_rig(self) -> Rig:
        """Load and validate the rig; a `ConfigError` names the rig key (or `rig_file`) at fault."""
        path = self.rig_path
        if not path.is_file():
            raise ConfigError("rig_file", f"no such file: {path} (set rig_file to an existing rig YAML, or leave it "
                                          "empty for the default rig)")
        return load_rig(path)


def _check_one(spec: ParamSpec, value: Any) -> Any:
    t = spec.ros_type
    ok = {
        ParameterType.PARAMETER_BOOL: isinstance(value, bool),
        ParameterType.PARAMETER_INTEGER: isinstance(value, int) and not isinstance(value, bool),
        ParameterType.PARAMETER_DOUBLE: isinstance(value, (int, float)) and not isinstance(value, bool),
        ParameterType.PARAMETER_STRING: isinstance(value, str),
    }[t]
    if not ok:
        raise ConfigError(spec.name, f"expected {_TYPE_WORDS[t]}, got {value!r}")
    if t == ParameterType.PARAMETER_DOUBLE:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(spec.name, f"must be finite, got {value!r}")
    if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
        raise ConfigError(spec.name, f"{value!r} is out of range [{spec.min}, {spec.max}]")
    if spec.choices and value not in spec.choices:
        raise ConfigError(spec.name, f"unknown value {value!r} (one of: {', '.join(spec.choices)})")
    return value


def validate_params(values: dict[str, Any]) -> FusionNodeParams:
    """Validate a name → value mapping (missing names take their defaults)."""
    unknown = sorted(set(values) - set(SPECS_BY_NAME))
    if unknown:
        raise ConfigError(unknown[0], f"unknown parameter (known: {', '.join(SPECS_BY_NAME)})")
    checked = {s.name: _check_one(s, values.get(s.name, s.default)) for s in PARAM_SPECS}
    if checked["output_frame"].strip() == "" or checked["output_frame"].startswith("/"):
        raise ConfigError("output_frame", f"must be a non-empty frame name without a leading '/', "
                                          f"got {checked['output_frame']!r}")
    return FusionNodeParams(**checked)


def declare_params(node: Node) -> None:
    """Declare every parameter with its descriptor; overrides that violate type or range raise `ConfigError`."""
    for spec in PARAM_SPECS:
        if node.has_parameter(spec.name):
            continue
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except InvalidParameterTypeException as e:
            raise ConfigError(spec.name, f"expected {_TYPE_WORDS[spec.ros_type]}: {_first_line(e)}") from None
        except InvalidParameterValueException as e:
            m = re.search(r"value \((.*?)\)", str(e))
            got = f", got {m.group(1)}" if m else ""
            raise ConfigError(spec.name, f"out of range [{spec.min}, {spec.max}]{got}") from None


def read_params(node: Node) -> FusionNodeParams:
    """Read the declared parameters and validate them."""
    return validate_params({s.name: node.get_parameter(s.name).value for s in PARAM_SPECS})


def yaml_defaults(fusion_yaml: dict[str, Any]) -> dict[str, Any]:
    """`nodes.fusion_node.parameters` of a parsed fusion.yaml (used to keep PARAM_SPECS in step with it)."""
    try:
        return dict(fusion_yaml["nodes"]["fusion_node"]["parameters"])
    except (KeyError, TypeError):
        raise ConfigError("nodes.fusion_node.parameters", "missing in the fusion config") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__

