"""fusion_node parameters: one table, declared with descriptors, read into a frozen dataclass.

Why a table: the descriptors (what `ros2 param describe` shows), the ranges
rclpy enforces on `ros2 param set`, and our own validation of the values read
at start come from the same row, so they cannot disagree. `validate_params`
works on a plain dict, so tests and the node plan can check a config without
ROS; `declare_params` / `read_params` do the rclpy part. Every problem is a
`ConfigError` whose key is the parameter name and whose message says what to
write instead — the node turns it into one FATAL line and a non-zero exit.

The table is the one source of truth: `config/fusion.param.yaml` (the standard
`--params-file`), its JSON schema and the README table are generated from it by
`python -m ros_fusion.ros.param_docs --write` and parity-tested.
`read_param_file` reads such a file the way rcl does, for the node plan.
rclpy is imported only where a node is involved, so the table, the validation
and the file reader work (and the node plan imports) without ROS.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..core.rig import ConfigError, Rig, load_rig
from ..paths import default_rig_path

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node

BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt", "torch")
STRATEGIES: tuple[str, ...] = ("auto", "intermediate", "late")
#: Values of `detectors`: the canonical spellings `runtime.pipeline.parse_detectors` gives (a test keeps them
#: equal). Listed, not imported: the pipeline pulls in scipy and OpenCV, and the node plan imports this file.
DETECTORS: tuple[str, ...] = ("network", "geometric", "network+geometric")

# rcl_interfaces/msg/ParameterType values (tests check them against the message).
PARAMETER_BOOL = 1
PARAMETER_INTEGER = 2
PARAMETER_DOUBLE = 3
PARAMETER_STRING = 4
_KINDS = {PARAMETER_BOOL: "bool", PARAMETER_INTEGER: "integer", PARAMETER_DOUBLE: "double",
          PARAMETER_STRING: "string"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: type from the default, inclusive numeric range, and whether it can change at runtime.

    `pattern` (strings only) is searched like JSON Schema's `pattern` (Python `re.search`);
    `pattern_hint` is what the error says when it does not match.
    """

    name: str
    default: Any
    description: str
    min: float | int | None = None
    max: float | int | None = None
    read_only: bool = True
    choices: tuple[str, ...] = ()
    pattern: str = ""
    pattern_hint: str = ""

    @property
    def ros_type(self) -> int:
        if isinstance(self.default, bool):
            return PARAMETER_BOOL
        if isinstance(self.default, int):
            return PARAMETER_INTEGER
        if isinstance(self.default, float):
            return PARAMETER_DOUBLE
        return PARAMETER_STRING

    @property
    def kind(self) -> str:
        """bool, integer, double or string (the ROS parameter type, as `ros2 param describe` names it)."""
        return _KINDS[self.ros_type]

    def descriptor(self) -> ParameterDescriptor:
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        d = ParameterDescriptor(
            name=self.name, type=self.ros_type, description=self.description, read_only=self.read_only
        )
        constraints = []
        if self.choices:
            constraints.append("one of: " + ", ".join(self.choices))
        if self.pattern_hint:
            constraints.append(self.pattern_hint)
        d.additional_constraints = "; ".join(constraints)
        if self.min is not None and self.max is not None:
            if self.ros_type == PARAMETER_DOUBLE:
                d.floating_point_range = [FloatingPointRange(from_value=float(self.min), to_value=float(self.max))]
            elif self.ros_type == PARAMETER_INTEGER:
                d.integer_range = [IntegerRange(from_value=int(self.min), to_value=int(self.max), step=0)]
        return d


#: Every parameter of fusion_node. config/fusion.param.yaml, its schema and the README table are
#: generated from this table (`python -m ros_fusion.ros.param_docs --write`); edit here, then regenerate.
PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("rig_file", "", "sensor rig YAML (topics, rates, extrinsics); empty = config/rig_default.yaml"),
    ParamSpec("backend", "onnxruntime", "inference backend", choices=BACKENDS),
    ParamSpec("models_dir", "", "folder with manifest.yaml + ONNX files; empty = the package's models/"),
    ParamSpec("strategy", "auto", "fusion strategy when 2+ modalities are usable (auto = the model's policy table)",
              choices=STRATEGIES),
    ParamSpec("detectors", "network", "which detectors feed the fusion: the network, the training-free geometric "
              "detector (LiDAR clusters + moving radar detections; needs no model), or both in late fusion",
              choices=DETECTORS),
    ParamSpec("geometric_fallback", True, "when detectors include the network but no model in models_dir fits the "
              "rig (missing, refused, or failing on the rig's data): run the geometric detector alone, with one WARN "
              "line and a WARN in /diagnostics; false = fail configure instead"),
    ParamSpec("score_threshold", -1.0, "lowest detection score published; -1 = the model's operating threshold "
              "(manifest fusion.score_threshold, fitted on validation data), else 0.1", -1.0, 0.99),
    ParamSpec("inference_threads", 2, "onnxruntime intra-op threads", 1, 64),
    ParamSpec("pipelining", True, "rasterise + encode each LiDAR sweep on arrival, while its bundle still waits"),
    ParamSpec("output_frame", "base_link", "frame_id of published obstacles and markers",
              pattern=r"^(?!/).*\S", pattern_hint="a non-empty frame name without a leading '/'"),
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
    ParamSpec("warm_up_rounds", 3, "fusion runs on synthetic data while configuring, before `active` (every stage "
              "and output encoder once); 0 = none: the first real bundles then pay the first-run costs, and a model "
              "that cannot run on the rig's data is not found at configure (no geometric fallback)", 0, 20),
)
SPECS_BY_NAME: dict[str, ParamSpec] = {s.name: s for s in PARAM_SPECS}

#: Standard ROS parameters every node has (rclpy declares them); a parameter file may set them.
#: The node plan sets use_sim_time from the launch argument of the same name.
STANDARD_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("use_sim_time", False, "use /clock as the node's time (the plan sets it from the launch "
              "argument use_sim_time)", read_only=False),
)
_TYPE_WORDS = {
    PARAMETER_BOOL: "true or false",
    PARAMETER_INTEGER: "an integer",
    PARAMETER_DOUBLE: "a floating-point number (write 1.0, not 1)",
    PARAMETER_STRING: "a string",
}


@dataclass(frozen=True)
class FusionNodeParams:
    """Validated parameters of fusion_node (SI units, see PARAM_SPECS for meaning)."""

    rig_file: str = ""
    backend: str = "onnxruntime"
    models_dir: str = ""
    strategy: str = "auto"
    detectors: str = "network"
    geometric_fallback: bool = True
    score_threshold: float = -1.0
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
    warm_up_rounds: int = 3

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


class _Bad(ValueError):
    """What is wrong with one value (validate_params adds the key and source)."""


def _check_one(spec: ParamSpec, value: Any, strict_types: bool = False) -> Any:
    """The checked value (ints widened for doubles); raises `_Bad` with what is wrong."""
    t = spec.ros_type
    ok = {
        PARAMETER_BOOL: isinstance(value, bool),
        PARAMETER_INTEGER: isinstance(value, int) and not isinstance(value, bool),
        PARAMETER_DOUBLE: isinstance(value, float) or (
            not strict_types and isinstance(value, int) and not isinstance(value, bool)),
        PARAMETER_STRING: isinstance(value, str),
    }[t]
    if not ok:
        raise _Bad(f"expected {_TYPE_WORDS[t]}, got {value!r}")
    if t == PARAMETER_DOUBLE:
        value = float(value)
        if not math.isfinite(value):
            raise _Bad(f"must be finite, got {value!r}")
    if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
        raise _Bad(f"{value!r} is out of range [{spec.min}, {spec.max}]")
    if spec.choices and value not in spec.choices:
        raise _Bad(f"unknown value {value!r} (one of: {', '.join(spec.choices)})")
    if spec.pattern and not re.search(spec.pattern, value):
        raise _Bad(f"must be {spec.pattern_hint or 'matching ' + spec.pattern}, got {value!r}")
    return value


def validate_params(values: Mapping[str, Any], *, source: str = "", prefix: str = "",
                    strict_types: bool = False) -> FusionNodeParams:
    """Validate a name → value mapping (missing names take their defaults).

    `strict_types`: a double must be written as one (`1.0`), as rcl requires of
    parameter files and `-p` overrides; Python callers may pass ints. A problem
    is a `ConfigError` with key `prefix + name`, attributed to `source`.
    """
    unknown = sorted(set(values) - set(SPECS_BY_NAME))
    if unknown:
        raise ConfigError(prefix + unknown[0], f"unknown parameter (known: {', '.join(SPECS_BY_NAME)})", source)
    checked = {}
    for s in PARAM_SPECS:
        try:
            checked[s.name] = _check_one(s, values.get(s.name, s.default), strict_types)
        except _Bad as e:
            raise ConfigError(prefix + s.name, str(e), source) from None
    return FusionNodeParams(**checked)


def validate_param_file_values(values: Mapping[str, Any], *, source: str = "", prefix: str = "") -> FusionNodeParams:
    """Validate fusion_node's values from a parameter file or `-p` overrides: standard ROS parameters
    (use_sim_time) allowed, types as rcl types them (a double needs its decimal point)."""
    rest = dict(values)
    for spec in STANDARD_SPECS:
        if spec.name in rest:
            try:
                _check_one(spec, rest.pop(spec.name), strict_types=True)
            except _Bad as e:
                raise ConfigError(prefix + spec.name, str(e), source) from None
    return validate_params(rest, source=source, prefix=prefix, strict_types=True)


def declare_params(node: Node) -> None:
    """Declare every parameter with its descriptor; overrides that violate type or range raise `ConfigError`."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

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


# --- parameter files, read the way rcl reads them ----------------------------------------
class _RclLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus rcl's reading of `1e3` as a double (YAML 1.1 wants `1.0e+3`)."""


_RclLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _node_key_matches(pattern: str, fqn: str) -> bool:
    """rcl's node-name matching: `/**` is any number of name tokens, `*` exactly one."""
    tokens = [t for t in pattern.split("/") if t]
    rx = ""
    for t in tokens:
        if t == "**":
            rx += r"(?:/[^/]+)*"
        elif t == "*":
            rx += r"/[^/]+"
        else:
            rx += "/" + re.escape(t)
    return re.fullmatch(rx or "/", fqn) is not None


def _flatten(prefix: str, d: Mapping[Any, Any], out: dict[str, Any]) -> None:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            _flatten(name + ".", v, out)
        else:
            out[name] = v


def param_file_entries(doc: Any, source: str = "") -> list[tuple[str, dict[str, Any]]]:
    """A parsed parameter file → [(node-name pattern, {parameter: value})] in file order.

    Nested keys above `ros__parameters` are joined with '/' (namespaces), as rcl does;
    nested keys below it become dotted parameter names.
    """
    if doc is None:
        return []
    if not isinstance(doc, Mapping):
        raise ConfigError("<root>", "expected a mapping of node names (e.g. '/**' or 'fusion_node') to "
                                    "{ros__parameters: {...}}", source)
    entries: list[tuple[str, dict[str, Any]]] = []

    def walk(path: str, d: Mapping[Any, Any]) -> None:
        for k, v in d.items():
            if k == "ros__parameters":
                if not path:
                    raise ConfigError("ros__parameters", "must be under a node name, e.g. '/**:' or "
                                                         "'fusion_node:'", source)
                if not isinstance(v, Mapping):
                    raise ConfigError(f"{path}.ros__parameters", "expected a mapping of parameter names to values",
                                      source)
                params: dict[str, Any] = {}
                _flatten("", v, params)
                entries.append((path, params))
            elif isinstance(v, Mapping):
                walk(f"{path}/{k}" if path else str(k), v)
            else:
                where = f"{path}/{k}" if path else str(k)
                raise ConfigError(where, "expected a node name (or namespace) whose value holds ros__parameters; "
                                         f"got the value {v!r} (write it under '<node>: ros__parameters:')", source)

    walk("", doc)
    return entries


def read_param_file(path: str | Path, node_name: str, namespace: str = "") -> dict[str, Any]:
    """The parameters a `--params-file path` gives node `namespace/node_name`, as rcl computes them.

    Every entry whose node-name pattern matches the node's fully qualified name
    (`/**`, `/*`, `node_name`, `/ns/node_name`, ...) contributes; where two set
    the same parameter the one later in the file wins (that is what rcl does,
    checked against rclpy in the tests). A file without an entry for the node
    is a `ConfigError`: rcl would silently use the defaults.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("params_file", f"no such file: {p}")
    try:
        doc = yaml.load(p.read_text(), Loader=_RclLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError("<yaml>", f"not valid YAML: {e}", str(p)) from None
    ns = "/".join(t for t in namespace.split("/") if t)
    fqn = f"/{ns}/{node_name}" if ns else f"/{node_name}"
    values: dict[str, Any] = {}
    matched = False
    for pattern, params in param_file_entries(doc, str(p)):
        if _node_key_matches(pattern, fqn):
            matched = True
            values.update(params)
    if not matched:
        raise ConfigError("<root>", f"no entry for node {fqn} (expected '/**:' or '{node_name}:' holding "
                                    "'ros__parameters:')", str(p))
    return values


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__

