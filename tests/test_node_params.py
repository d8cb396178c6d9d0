"""fusion_node parameters: descriptors, validation, rig errors, and the node exiting cleanly on bad config."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from ros_fusion.core.rig import ConfigError  # noqa: E402
from ros_fusion.paths import default_config_path, default_rig_path  # noqa: E402
from ros_fusion.ros.params import (  # noqa: E402
    PARAM_SPECS,
    SPECS_BY_NAME,
    FusionNodeParams,
    declare_params,
    read_params,
    validate_params,
    yaml_defaults,
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


# --- the table matches config/fusion.yaml and the dataclass -------------------------
def test_specs_cover_fusion_yaml_with_same_defaults() -> None:
    params = yaml_defaults(yaml.safe_load(default_config_path().read_text()))
    assert set(params) == set(SPECS_BY_NAME)
    for name, value in params.items():
        assert SPECS_BY_NAME[name].default == value, name
        assert type(SPECS_BY_NAME[name].default) is type(value), name
    assert {f.name for f in dataclasses.fields(FusionNodeParams)} == set(SPECS_BY_NAME)
    assert validate_params(params) == FusionNodeParams()


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


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        validate_params({"rig_fle": "x.yaml"})
    assert info.value.key == "rig_fle"


def test_int_accepted_for_float_in_python_configs() -> None:
    assert validate_params({"diagnostics_period_s": 2}).diagnostics_period_s == 2.0


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


def test_runtime_change_is_validated(ros_context) -> None:
    from ros_fusion.ros.fusion_node import FusionNode

    rclpy.init(args=["--ros-args"], context=ros_context)
    node = FusionNode(context=ros_context)
    try:
        res = node.set_parameters([Parameter("max_age_s", value=-1.0)])[0]
        assert not res.successful
        res = node.set_parameters([Parameter("rig_file", value="/tmp/other.yaml")])[0]
        assert not res.successful and "read-only" in res.reason
        res = node.set_parameters([Parameter("max_age_s", value=3.0)])[0]
        assert res.successful and node.get_parameter("max_age_s").value == 3.0
    finally:
        node.destroy_node()


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
