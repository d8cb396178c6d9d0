"""Generated parameter docs: the committed param file, schema and README table match PARAM_SPECS."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ros_fusion.ros import param_docs
from ros_fusion.ros.param_docs import (
    BEGIN_MARKER,
    END_MARKER,
    json_schema,
    json_schema_text,
    markdown_table,
    param_file_text,
    replace_readme_region,
    yaml_literal,
)
from ros_fusion.ros.params import PARAM_SPECS, SPECS_BY_NAME, STANDARD_SPECS

REPO = Path(__file__).resolve().parent.parent
PARAM_FILE = REPO / "config" / "fusion.param.yaml"
SCHEMA_FILE = REPO / "config" / "fusion.param.schema.json"
DEFAULTS = {s.name: s.default for s in PARAM_SPECS}


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(doc) -> list[str]:
    return [e.message for e in _validator().iter_errors(doc)]


# --- the committed files are the generated ones --------------------------------------------------
def test_committed_param_file_is_generated() -> None:
    assert PARAM_FILE.read_text() == param_file_text(), "run python -m ros_fusion.ros.param_docs --write"


def test_committed_schema_is_generated() -> None:
    text = SCHEMA_FILE.read_text()
    assert text == json_schema_text(), "run python -m ros_fusion.ros.param_docs --write"
    assert json.loads(text) == json_schema()
    assert text.endswith("}\n") and text.startswith('{\n  "$defs"')  # sorted keys, indent 2


def test_param_file_holds_every_default_with_its_type() -> None:
    doc = yaml.safe_load(PARAM_FILE.read_text())
    assert list(doc) == ["/**"] and list(doc["/**"]) == ["ros__parameters"]
    params = doc["/**"]["ros__parameters"]
    assert list(params) == [s.name for s in PARAM_SPECS]
    for name, value in params.items():
        assert value == DEFAULTS[name] and type(value) is type(DEFAULTS[name]), name
    for spec in PARAM_SPECS:  # each line carries the description as a comment
        (line,) = [ln for ln in PARAM_FILE.read_text().splitlines() if ln.strip().startswith(f"{spec.name}:")]
        assert f"# {spec.description}" in line
        assert ("runtime-settable" in line) is (not spec.read_only)
    assert "param_docs --write" in PARAM_FILE.read_text().splitlines()[0]


# --- schema ↔ table parity, and the schema actually constrains ---------------------------------
def test_schema_properties_mirror_the_table() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"/**", "fusion_node"} <= set(schema["properties"])
    props = schema["$defs"]["ros__parameters"]["properties"]
    assert set(props) == set(SPECS_BY_NAME) | {s.name for s in STANDARD_SPECS}
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for spec in PARAM_SPECS:
        p = props[spec.name]
        assert p["type"] == json_type[type(spec.default)], spec.name
        assert p["default"] == spec.default and p["description"] == spec.description
        assert p.get("minimum") == spec.min and p.get("maximum") == spec.max
        assert p.get("enum", []) == list(spec.choices)
        assert p.get("readOnly", False) is spec.read_only


def test_param_file_validates_against_schema() -> None:
    doc = yaml.safe_load(PARAM_FILE.read_text())
    assert _errors(doc) == []
    node_keyed = {"fusion_node": {"ros__parameters": {"strategy": "late", "score_threshold": 0.25,
                                                      "use_sim_time": True}}}
    assert _errors(node_keyed) == []


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda p: p.update(inference_threads=2.5), "2.5 is not of type 'integer'"),
        (lambda p: p.update(score_threshold="high"), "is not of type 'number'"),
        (lambda p: p.update(pipelining="yes please"), "is not of type 'boolean'"),
        (lambda p: p.update(score_threshold=1.5), "1.5 is greater than the maximum of 0.99"),
        (lambda p: p.update(max_points=0), "0 is less than the minimum of 1"),
        (lambda p: p.update(backend="tensorflow"), "'tensorflow' is not one of"),
        (lambda p: p.update(output_frame="/base_link"), "does not match"),
        (lambda p: p.update(scor_threshold=0.2), "'scor_threshold' was unexpected"),
    ],
)
def test_bad_param_file_fails_schema(edit, needle: str) -> None:
    doc = copy.deepcopy(yaml.safe_load(PARAM_FILE.read_text()))
    edit(doc["/**"]["ros__parameters"])
    errors = _errors(doc)
    assert any(needle in e for e in errors), errors


def test_bad_structure_fails_schema() -> None:
    assert _errors({"other_node": {"ros__parameters": {}}})
    assert _errors({"/**": {"parameters": {}}})
    assert _errors({"/**": {}})
    assert _errors({})


# --- the README table -----------------------------------------------------------------------------
def test_markdown_table_lists_every_spec_with_default() -> None:
    rows = [ln for ln in markdown_table().splitlines() if ln.startswith("| `")]
    assert len(rows) == len(PARAM_SPECS)
    for spec, row in zip(PARAM_SPECS, rows, strict=True):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0] == f"`{spec.name}`"
        assert cells[2] == f"`{yaml_literal(spec.default)}`"
        assert yaml.safe_load(cells[2].strip("`")) == spec.default
        assert cells[4] == ("no" if spec.read_only else "yes")
        assert cells[5] == spec.description
        for choice in spec.choices:
            assert choice in cells[3]
    assert markdown_table().splitlines()[0].split("|")[1:-1] == [
        " name ", " type ", " default ", " range / choices ", " runtime-settable ", " description "]


def test_readme_region_replacement() -> None:
    text = f"# Title\n\nintro\n\n{BEGIN_MARKER}\nold table\nmore\n{END_MARKER}\n\n## After\n"
    new = replace_readme_region(text, "NEW\n")
    assert new == f"# Title\n\nintro\n\n{BEGIN_MARKER}\nNEW\n{END_MARKER}\n\n## After\n"
    assert replace_readme_region(new, "NEW\n") == new
    assert replace_readme_region("# no markers\n", "NEW\n") is None
    assert replace_readme_region(f"{BEGIN_MARKER}\nonly begin\n", "NEW\n") is None
    assert replace_readme_region(f"{END_MARKER}\n{BEGIN_MARKER}\n", "NEW\n") is None


def test_yaml_literals_read_back_exactly() -> None:
    for v in ["", "true", "1.0", "a: b", "# x", " pad", "base_link", 1e-05, 1e20, 0.1, 3, True, False]:
        assert yaml.safe_load(yaml_literal(v)) == v and type(yaml.safe_load(yaml_literal(v))) is type(v), v


# --- --write / --check on a temporary copy ---------------------------------------------------------
def _tmp_repo(tmp_path: Path, readme: str | None) -> Path:
    root = tmp_path / "repo"
    (root / "config").mkdir(parents=True)
    for f in (PARAM_FILE, SCHEMA_FILE):
        shutil.copy(f, root / "config" / f.name)
    if readme is not None:
        (root / "README.md").write_text(readme)
    return root


def test_check_passes_on_fresh_and_fails_on_stale(tmp_path: Path, capsys) -> None:
    readme = f"# R\n{BEGIN_MARKER}\n{markdown_table()}{END_MARKER}\ntail\n"
    root = _tmp_repo(tmp_path, readme)
    assert param_docs.main(["--check", "--root", str(root)]) == 0
    stale = root / "config" / "fusion.param.yaml"
    stale.write_text(stale.read_text().replace("score_threshold: -1.0 ", "score_threshold: 0.2 "))
    (root / "README.md").write_text(readme.replace("| `-1.0` |", "| `0.2` |"))
    assert param_docs.main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr()
    assert "fusion.param.yaml" in out.err and "README.md" in out.err and "--write" in out.err
    assert "-    score_threshold: 0.2" in out.out and "+    score_threshold: -1.0" in out.out
    (root / "config" / "fusion.param.schema.json").unlink()
    assert param_docs.main(["--check", "--root", str(root)]) == 1
    assert "fusion.param.schema.json" in capsys.readouterr().err


def test_write_regenerates_and_replaces_readme_region(tmp_path: Path) -> None:
    root = _tmp_repo(tmp_path, f"# R\n\n{BEGIN_MARKER}\nstale\n{END_MARKER}\n\nrest\n")
    (root / "config" / "fusion.param.yaml").write_text("stale\n")
    (root / "config" / "fusion.param.schema.json").unlink()
    assert param_docs.main(["--write", "--root", str(root)]) == 0
    assert (root / "config" / "fusion.param.yaml").read_text() == param_file_text()
    assert (root / "config" / "fusion.param.schema.json").read_text() == json_schema_text()
    assert (root / "README.md").read_text() == f"# R\n\n{BEGIN_MARKER}\n{markdown_table()}{END_MARKER}\n\nrest\n"
    assert param_docs.main(["--check", "--root", str(root)]) == 0


def test_write_skips_readme_without_markers(tmp_path: Path, capsys) -> None:
    root = _tmp_repo(tmp_path, "# R without markers\n")
    (root / "config" / "fusion.param.yaml").write_text("stale\n")
    assert param_docs.main(["--write", "--root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "README.md: skipped" in err and BEGIN_MARKER in err and END_MARKER in err
    assert (root / "README.md").read_text() == "# R without markers\n"
    assert (root / "config" / "fusion.param.yaml").read_text() == param_file_text()


def test_importable_without_rclpy() -> None:
    code = ("import sys; import ros_fusion.ros.param_docs, ros_fusion.ros.node_plan; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rcl_interfaces')]; "
            "assert not bad, bad; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_module_runs_as_a_script() -> None:
    res = subprocess.run([sys.executable, "-m", "ros_fusion.ros.param_docs", "--print", "param-file"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout == param_file_text()


def test_setup_installs_the_generated_files() -> None:
    # setup.py's data_files install files("config/*") into share/ros_fusion/config (colcon and pip).
    from glob import glob

    assert 'files("config/*")' in (REPO / "setup.py").read_text()
    installed = sorted(p for p in glob("config/*", root_dir=REPO) if (REPO / p).is_file())
    assert {"config/fusion.yaml", "config/fusion.param.yaml", "config/fusion.param.schema.json"} <= set(installed)
