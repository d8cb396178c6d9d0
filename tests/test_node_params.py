"""fusion_node parameters: descriptors, validation, rig errors, and the node exiting cleanly on bad config."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before rclpy.init: keep DDS on this host
rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from ros_fusion.core.rig import ConfigError  # noqa: E402
from ros_fusion.paths import config_path, default_rig_path  # noqa: E402
from ros_fusion.ros import params as params_mod  # noqa: E402
from ros_fusion.ros.params import (  # noqa: E402
    PARAM_SPECS,
    SPECS_BY_NAME,
    FusionNodeParams,
    declare_params,
    read_param_file,
    read_params,
    validate_param_file_values,
    validate_params,
)

REPO = Path(__file__).resolve().parent.parent
DOMAIN_ID = "51"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AMENT_PREFIX_PATH=env.get("AMENT_PREFIX_PATH", sys.prefix),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=DOMAIN_ID,
        FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds.xml"),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


# --- the table matches config/fusion.param.yaml and the dataclass --------------------
PARAM_FILE = REPO / "config" / "fusion.param.yaml"


def test_specs_cover_param_file_with_same_defaults() -> None:
    params = read_param_file(config_path("fusion.param.yaml"), "fusion_node")
    assert list(params) == [s.name for s in PARAM_SPECS]
    for name, value in params.items():
        assert SPECS_BY_NAME[name].default == value, name
        assert type(SPECS_BY_NAME[name].default) is type(value), name
    assert {f.name for f in dataclasses.fields(FusionNodeParams)} == set(SPECS_BY_NAME)
    assert validate_params(params) == FusionNodeParams()
    assert validate_param_file_values(params) == FusionNodeParams()


def test_type_constants_are_rcl_interfaces_values() -> None:
    assert params_mod.PARAMETER_BOOL == ParameterType.PARAMETER_BOOL
    assert params_mod.PARAMETER_INTEGER == ParameterType.PARAMETER_INTEGER
    assert params_mod.PARAMETER_DOUBLE == ParameterType.PARAMETER_DOUBLE
    assert params_mod.PARAMETER_STRING == ParameterType.PARAMETER_STRING


def test_descriptors_have_types_ranges_and_read_only() -> None:
    for spec in PARAM_SPECS:
        d = spec.descriptor()
        assert d.description and d.name == spec.name
        if d.type == ParameterType.PARAMETER_DOUBLE:
            assert len(d.floating_point_range) == 1
            assert d.floating_point_range[0].from_value <= spec.default <= d.floating_point_range[0].to_value
        if d.type == ParameterType.PARAMETER_INTEGER:
            assert len(d.integer_range) == 1
    assert SPECS_BY_NAME["rig_file"].descriptor().read_only
    assert SPECS_BY_NAME["autostart"].descriptor().read_only
    assert not SPECS_BY_NAME["max_age_s"].descriptor().read_only
    assert SPECS_BY_NAME["max_points"].descriptor().type == ParameterType.PARAMETER_INTEGER
    assert "onnxruntime" in SPECS_BY_NAME["backend"].descriptor().additional_constraints


# --- validation without ROS ------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("diagnostics_period_s", 0.0, "out of range"),
        ("diagnostics_period_s", -1.0, "out of range"),
        ("diagnostics_period_s", float("nan"), "finite"),
        ("stale_timeout_factor", 0.5, "out of range"),
        ("missing_timeout_s", "5", "floating-point"),
        ("max_points", 0, "out of range"),
        ("max_points", 2.5, "integer"),
        ("max_points", True, "integer"),
        ("autostart", "yes", "true or false"),
        ("backend", "tensorflow", "one of"),
        ("detectors", "lidar", r"one of: network, geometric, network\+geometric"),
        ("detectors", "", "one of"),
        ("detectors", "geometric+network", "one of"),  # one spelling per choice, as the schema's enum
        ("detectors", True, "string"),
        ("geometric_fallback", "no", "true or false"),
        ("output_frame", "", "frame name"),
        ("output_frame", "/base_link", "leading"),
        ("rig_file", 3, "string"),
    ],
)
def test_bad_values_name_the_parameter(name: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        validate_params({name: value})
    assert info.value.key == name
    assert str(info.value).startswith(f"{name}:")


def test_detector_choices_are_the_pipelines_spellings() -> None:
    """params.py lists the choices (it must not import the pipeline); they are exactly the canonical
    forms parse_detectors gives for every non-empty set of the pipeline's detectors."""
    from itertools import combinations

    from ros_fusion.runtime.pipeline import DETECTORS, parse_detectors

    canonical = {"+".join(parse_detectors(list(c))) for n in range(1, len(DETECTORS) + 1)
                 for c in combinations(DETECTORS, n)}
    assert set(params_mod.DETECTORS) == canonical
    assert all("+".join(parse_detectors(c)) == c for c in params_mod.DETECTORS)
    assert SPECS_BY_NAME["detectors"].default == "network" and SPECS_BY_NAME["geometric_fallback"].default is True
    assert "network+geometric" in SPECS_BY_NAME["detectors"].descriptor().additional_constraints


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        validate_params({"rig_fle": "x.yaml"})
    assert info.value.key == "rig_fle"


def test_int_accepted_for_float_in_python_configs() -> None:
    assert validate_params({"diagnostics_period_s": 2}).diagnostics_period_s == 2.0


def test_param_file_values_are_typed_as_rcl_types_them() -> None:
    # rcl reads `1` as an integer and the node's double parameter then refuses it.
    with pytest.raises(ConfigError, match=r"write 1.0, not 1") as info:
        validate_param_file_values({"diagnostics_period_s": 2}, source="x.yaml", prefix="p.")
    assert info.value.key == "p.diagnostics_period_s" and str(info.value).startswith("x.yaml: ")
    assert validate_param_file_values({"use_sim_time": True, "max_age_s": 2.0}).max_age_s == 2.0
    with pytest.raises(ConfigError) as info:
        validate_param_file_values({"use_sim_time": "yes"})
    assert info.value.key == "use_sim_time"
    with pytest.raises(ConfigError) as info:
        validate_params({"use_sim_time": True})  # not one of fusion_node's own parameters
    assert info.value.key == "use_sim_time"


def test_rig_file_default_and_missing(tmp_path: Path) -> None:
    p = validate_params({})
    assert p.rig_path == default_rig_path()
    assert p.load_rig().sensors
    bad = validate_params({"rig_file": str(tmp_path / "nope.yaml")})
    with pytest.raises(ConfigError, match="no such file") as info:
        bad.load_rig()
    assert info.value.key == "rig_file"


def _rig_with_kind(tmp_path: Path, kind: str) -> Path:
    d = yaml.safe_load(default_rig_path().read_text())
    d["sensors"]["radar_front"]["modality"] = kind
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_unknown_sensor_kind_names_the_key(tmp_path: Path) -> None:
    p = validate_params({"rig_file": str(_rig_with_kind(tmp_path, "sonar"))})
    with pytest.raises(ConfigError, match="unknown sensor kind 'sonar'") as info:
        p.load_rig()
    assert info.value.key == "sensors.radar_front.modality"


# --- declaring on a real node ------------------------------------------------------------
@pytest.fixture
def ros_context():
    ctx = rclpy.Context()
    yield ctx
    ctx.try_shutdown()


def _node(ctx, overrides: list[str]):
    rclpy.init(args=["--ros-args", *overrides], context=ctx)
    return rclpy.create_node("params_probe", context=ctx)


def test_declare_and_read_defaults(ros_context) -> None:
    node = _node(ros_context, ["-p", "max_age_s:=2.5"])
    try:
        declare_params(node)
        p = read_params(node)
        assert p.max_age_s == 2.5 and p.max_age_ns == 2_500_000_000
        assert p.max_points == 2_000_000 and p.autostart is True
        d = node.describe_parameter("stale_timeout_factor")
        assert d.read_only and "STALE" in d.description
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    ("override", "key", "match"),
    [
        ("diagnostics_period_s:=1", "diagnostics_period_s", "floating-point"),
        ("max_future_s:=-3.0", "max_future_s", "out of range"),
        ("max_points:=0", "max_points", "out of range"),
    ],
)
def test_bad_override_names_parameter(ros_context, override: str, key: str, match: str) -> None:
    node = _node(ros_context, ["-p", override])
    try:
        with pytest.raises(ConfigError, match=match) as info:
            declare_params(node)
        assert info.value.key == key
    finally:
        node.destroy_node()


def test_bad_detectors_override_stops_the_node_before_configure(ros_context) -> None:
    """rclpy enforces no choices: the node's own validation names the parameter (main: FATAL, exit 2)."""
    from ros_fusion.ros.fusion_node import FusionNode

    rclpy.init(args=["--ros-args", "-p", "detectors:=camera"], context=ros_context)
    with pytest.raises(ConfigError, match="unknown value 'camera'") as info:
        FusionNode(context=ros_context)
    assert info.value.key == "detectors"


def test_runtime_change_is_validated(ros_context) -> None:
    from ros_fusion.ros.fusion_node import FusionNode

    rclpy.init(args=["--ros-args"], context=ros_context)
    node = FusionNode(context=ros_context)
    try:
        res = node.set_parameters([Parameter("max_age_s", value=-1.0)])[0]
        assert not res.successful
        res = node.set_parameters([Parameter("rig_file", value="/tmp/other.yaml")])[0]
        assert not res.successful and "read-only" in res.reason
        res = node.set_parameters([Parameter("detectors", value="geometric")])[0]
        assert not res.successful and "read-only" in res.reason  # the pipeline is built at configure
        res = node.set_parameters([Parameter("max_age_s", value=3.0)])[0]
        assert res.successful and node.get_parameter("max_age_s").value == 3.0
    finally:
        node.destroy_node()


# --- a parameter file, loaded the way rcl does ---------------------------------------------
def _load_like_rcl(path: Path) -> FusionNodeParams:
    """`fusion_node --ros-args --params-file path`: rcl parses the file, the node declares and reads."""
    ctx = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=ctx)
    node = None
    try:
        node = Node("fusion_node", context=ctx)
        declare_params(node)
        return read_params(node)
    finally:
        if node is not None:
            node.destroy_node()
        ctx.try_shutdown()


def _edited_param_file(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = PARAM_FILE.read_text()
    assert text.count(old) == count, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_shipped_param_file_loads_with_every_default() -> None:
    assert _load_like_rcl(PARAM_FILE) == FusionNodeParams()
    assert FusionNodeParams() == FusionNodeParams(**{s.name: s.default for s in PARAM_SPECS})


def test_changed_values_under_the_node_name_arrive(tmp_path: Path) -> None:
    path = _edited_param_file(tmp_path, "/**:\n", "fusion_node:\n")
    text = path.read_text().replace("score_threshold: -1.0 ", "score_threshold: 0.25").replace(
        "strategy: auto ", "strategy: late ")
    path.write_text(text)
    p = _load_like_rcl(path)
    assert p.score_threshold == 0.25 and p.strategy == "late"
    assert dataclasses.replace(p, score_threshold=-1.0, strategy="auto") == FusionNodeParams()


def test_wrong_type_in_param_file_names_the_parameter(tmp_path: Path) -> None:
    path = _edited_param_file(tmp_path, "inference_threads: 2 ", "inference_threads: 2.5")
    with pytest.raises(ConfigError) as info:
        _load_like_rcl(path)
    assert info.value.key == "inference_threads"
    assert "integer" in str(info.value)


def _rclpy_overrides(path: Path, name: str = "fusion_node", namespace: str = "") -> dict[str, object]:
    """What rclpy itself makes of the file for that node (its parameter overrides)."""
    ctx = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=ctx)
    node = None
    try:
        node = Node(name, namespace=namespace or None, context=ctx,
                               automatically_declare_parameters_from_overrides=True)
        got = {k: v.value for k, v in node.get_parameters_by_prefix("").items()}
    finally:
        if node is not None:
            node.destroy_node()
        ctx.try_shutdown()
    for builtin in ("use_sim_time", "start_type_description_service"):  # declared by rclpy itself
        got.pop(builtin, None)
    return got


@pytest.mark.parametrize(
    ("text", "namespace"),
    [
        ("fusion_node:\n  ros__parameters:\n    a: 1\n/**:\n  ros__parameters:\n    a: 2\n    b: 3\n", ""),
        ("/**:\n  ros__parameters:\n    a: 2\n    b: 3\nfusion_node:\n  ros__parameters:\n    a: 1\n", ""),
        ("/*:\n  ros__parameters:\n    a: 2\n/fusion_node:\n  ros__parameters:\n    b: 1e3\n", ""),
        ("/**:\n  fusion_node:\n    ros__parameters:\n      grp:\n        x: 1\n        s: 'true'\n", ""),
        ("/ns/fusion_node:\n  ros__parameters:\n    a: 1\n/other:\n  ros__parameters:\n    b: 2\n", "/ns"),
        ("/**:\n  ros__parameters:\n    a: 1\n/*/fusion_node:\n  ros__parameters:\n    b: 2\n", ""),
        ("/**/fusion_node:\n  ros__parameters:\n    a: [1, 2]\n    b: yes\n    c: ''\n", "/x/y"),
    ],
)
def test_read_param_file_matches_rclpy(tmp_path: Path, text: str, namespace: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert read_param_file(path, "fusion_node", namespace) == _rclpy_overrides(path, namespace=namespace)


def test_read_param_file_without_an_entry_for_the_node(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("other_node:\n  ros__parameters:\n    a: 1\n")
    assert _rclpy_overrides(path) == {}  # rcl silently gives the defaults; the plan refuses
    with pytest.raises(ConfigError, match="no entry for node /fusion_node") as info:
        read_param_file(path, "fusion_node")
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("fusion_node:\n  other: 1\n", "fusion_node/other"),
        ("fusion_node:\n  ros__parameters: 3\n", "fusion_node.ros__parameters"),
        ("ros__parameters:\n  a: 1\n", "ros__parameters"),
        ("- a\n", "<root>"),
        ("fusion_node: [\n", "<yaml>"),
    ],
)
def test_malformed_param_file_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_param_file(path, "fusion_node")
    assert info.value.key == key and str(path) in str(info.value)


# --- the node process exits non-zero with one FATAL line ---------------------------------
def _run_node(*ros_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ros_fusion.ros.fusion_node", "--ros-args", *ros_args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=REPO,
    )


@pytest.mark.live
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-p", "diagnostics_period_s:=-1.0"], "diagnostics_period_s"),
        (["-p", "backend:=tensorflow"], "backend: unknown value 'tensorflow'"),
        (["-p", "rig_file:=/nonexistent/rig.yaml"], "rig_file: no such file: /nonexistent/rig.yaml"),
        (["-p", "models_dir:=/nonexistent/models", "-p", "geometric_fallback:=false"],
         "no usable model: /nonexistent/models: manifest: /nonexistent/models not found"),
    ],
)
def test_node_exits_nonzero_on_bad_param(args: list[str], needle: str) -> None:
    res = _run_node(*args)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert needle in out
    assert "FATAL" in out
    assert "Traceback" not in out


@pytest.mark.live
def test_node_exits_nonzero_on_unknown_sensor_kind(tmp_path: Path) -> None:
    rig = _rig_with_kind(tmp_path, "sonar")
    res = _run_node("-p", f"rig_file:={rig}")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "sensors.radar_front.modality" in out and "sonar" in out
    assert "FATAL" in out and "Traceback" not in out


@pytest.mark.live
def test_node_process_reads_the_params_file(tmp_path: Path) -> None:
    # The shipped file is accepted: the node gets as far as the (deliberately missing) rig.
    res = _run_node("--params-file", str(PARAM_FILE), "-p", "rig_file:=/nonexistent/rig.yaml")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "rig_file: no such file: /nonexistent/rig.yaml" in out, out
    # A bad value in the file ends the process with one FATAL line naming it.
    bad = _edited_param_file(tmp_path, "inference_threads: 2 ", "inference_threads: 2.5")
    res = _run_node("--params-file", str(bad))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "inference_threads" in out and "FATAL" in out, out
    assert "Traceback" not in out
