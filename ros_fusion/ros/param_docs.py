"""Files generated from PARAM_SPECS: the standard parameter file, its JSON schema, the README table.

    python -m ros_fusion.ros.param_docs --write   # regenerate after editing ros_fusion/ros/params.py
    python -m ros_fusion.ros.param_docs --check   # exit 1, with a diff, when a generated file is stale
    python -m ros_fusion.ros.param_docs --print param-file|schema|table

`config/fusion.param.yaml` is what `ros2 run ros_fusion fusion_node --ros-args
--params-file ...` reads and what config/fusion.yaml (the node plan) points at;
`config/fusion.param.schema.json` (JSON Schema 2020-12) describes that file for
editors and CI; README.md holds the table between the GENERATED markers.
All three come from the one table in `params.py`, so they cannot disagree with
the descriptors the node declares. No rclpy import: this runs without ROS.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .params import PARAM_SPECS, STANDARD_SPECS, ParamSpec

COMMAND = "python -m ros_fusion.ros.param_docs --write"
PARAM_FILE = Path("config") / "fusion.param.yaml"
SCHEMA_FILE = Path("config") / "fusion.param.schema.json"
README = Path("README.md")
BEGIN_MARKER = f"<!-- BEGIN GENERATED: parameters ({COMMAND}) -->"
END_MARKER = "<!-- END GENERATED: parameters -->"
NODE_NAME = "fusion_node"
#: Top-level keys of the parameter file the schema accepts (rcl matches each against /fusion_node).
NODE_KEYS = ("/**", NODE_NAME, f"/{NODE_NAME}")
_JSON_TYPES = {"bool": "boolean", "integer": "integer", "double": "number", "string": "string"}


# --- literals -----------------------------------------------------------------------------
def yaml_literal(value: Any) -> str:
    """A YAML scalar that PyYAML and rcl both read back as exactly `value`, with its type."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
        if "e" in text:  # YAML 1.1 (PyYAML) needs a '.' and a signed exponent: 1.0e-05
            mant, exp = text.split("e")
            mant = mant if "." in mant else mant + ".0"
            exp = exp if exp[0] in "+-" else "+" + exp
            text = f"{mant}e{exp}"
    elif isinstance(value, str):
        plain = value != "" and value.strip() == value and yaml.safe_load(value) == value and not any(
            c in value for c in "#:{}[],&*!|>'\"%@`")
        text = value if plain else json.dumps(value)
    else:
        raise TypeError(f"no YAML literal for {value!r}")
    back = yaml.safe_load(text)
    if back != value or type(back) is not type(value):
        raise ValueError(f"YAML literal {text!r} does not read back as {value!r}")
    return text


def _number(spec: ParamSpec, v: float | int) -> float | int:
    return float(v) if spec.kind == "double" else int(v)


def _constraints(spec: ParamSpec) -> str:
    """'0.05 to 60.0', 'one of: a, b', a pattern hint, or ''."""
    parts = []
    if spec.min is not None or spec.max is not None:
        lo = "-inf" if spec.min is None else yaml_literal(_number(spec, spec.min))
        hi = "inf" if spec.max is None else yaml_literal(_number(spec, spec.max))
        parts.append(f"{lo} to {hi}")
    if spec.choices:
        parts.append("one of: " + ", ".join(spec.choices))
    if spec.pattern_hint:
        parts.append(spec.pattern_hint)
    return "; ".join(parts)


# --- the parameter file -----------------------------------------------------------------------
def param_file_text() -> str:
    """config/fusion.param.yaml: every parameter at its default, in the standard `/**: ros__parameters:` form."""
    head = [
        f"# GENERATED from PARAM_SPECS in ros_fusion/ros/params.py by `{COMMAND}`.",
        "# Do not edit: change the table and regenerate (`--check` tells when this file is stale).",
        "#",
        f"# {NODE_NAME}'s ROS 2 parameters at their defaults, as a standard parameter file:",
        f"#   ros2 run ros_fusion {NODE_NAME} --ros-args --params-file config/fusion.param.yaml",
        "# config/fusion.yaml (the node plan) points at it. For your own settings copy it, change",
        f"# values (doubles keep their decimal point: 1.0, not 1) and pass the copy; '{NODE_NAME}:'",
        "# in place of '/**:' targets only that node. Schema: config/fusion.param.schema.json.",
        "# Each comment: meaning (type; range or choices; whether `ros2 param set` may change it).",
        "/**:",
        "  ros__parameters:",
    ]
    rows = [(f"    {s.name}: {yaml_literal(s.default)}", s) for s in PARAM_SPECS]
    width = max(len(r) for r, _ in rows) + 2
    lines = list(head)
    for text, spec in rows:
        info = "; ".join(p for p in (spec.kind, _constraints(spec), "" if spec.read_only else "runtime-settable") if p)
        lines.append(f"{text.ljust(width)}# {spec.description} ({info})")
    return "\n".join(lines) + "\n"


# --- the JSON schema ---------------------------------------------------------------------------
def _property(spec: ParamSpec) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "type": _JSON_TYPES[spec.kind],
        "default": spec.default,
        "description": spec.description,
    }
    if spec.min is not None:
        prop["minimum"] = _number(spec, spec.min)
    if spec.max is not None:
        prop["maximum"] = _number(spec, spec.max)
    if spec.choices:
        prop["enum"] = list(spec.choices)
    if spec.pattern:
        prop["pattern"] = spec.pattern
    if spec.read_only:
        prop["readOnly"] = True
    return prop


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of config/fusion.param.yaml (and of any parameter file for fusion_node).

    JSON Schema cannot tell 1 from 1.0; rcl can, and rejects an integer for a
    double parameter. `validate_param_file_values` (the node plan) checks that.
    """
    params = {s.name: _property(s) for s in (*PARAM_SPECS, *STANDARD_SPECS)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"ros_fusion {NODE_NAME} parameter file",
        "description": f"Generated from PARAM_SPECS in ros_fusion/ros/params.py by `{COMMAND}`. A ROS 2 parameter "
                       f"file for {NODE_NAME}: top-level '/**' or '{NODE_NAME}', then 'ros__parameters'. Write "
                       "doubles with a decimal point (1.0): rcl reads 1 as an integer.",
        "type": "object",
        "properties": {key: {"$ref": "#/$defs/node"} for key in NODE_KEYS},
        "additionalProperties": False,
        "minProperties": 1,
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"ros__parameters": {"$ref": "#/$defs/ros__parameters"}},
                "required": ["ros__parameters"],
                "additionalProperties": False,
            },
            "ros__parameters": {
                "type": "object",
                "properties": params,
                "additionalProperties": False,
            },
        },
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# --- the README table ----------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table() -> str:
    """The README table of fusion_node's parameters (one row per PARAM_SPECS entry)."""
    lines = [
        "| name | type | default | range / choices | runtime-settable | description |",
        "|---|---|---|---|---|---|",
    ]
    for s in PARAM_SPECS:
        lines.append(
            f"| `{s.name}` | {s.kind} | `{yaml_literal(s.default)}` | {_cell(_constraints(s)) or '—'} | "
            f"{'no' if s.read_only else 'yes'} | {_cell(s.description)} |"
        )
    standard = ", ".join(f"`{s.name}`" for s in STANDARD_SPECS)
    lines += [
        "",
        f"Defaults are in `config/fusion.param.yaml` (schema: `config/fusion.param.schema.json`); the standard "
        f"{standard} is set from the launch argument of the same name. Runtime-settable parameters can be "
        f"changed with `ros2 param set /{NODE_NAME} NAME VALUE`; the others are read at configure.",
    ]
    return "\n".join(lines) + "\n"


def replace_readme_region(text: str, table: str) -> str | None:
    """`text` with the lines between the GENERATED markers replaced by `table`; None without both markers."""
    lines = text.splitlines(keepends=True)
    stripped = [ln.strip() for ln in lines]
    if BEGIN_MARKER not in stripped or END_MARKER not in stripped:
        return None
    b = stripped.index(BEGIN_MARKER)
    e = stripped.index(END_MARKER, b + 1) if END_MARKER in stripped[b + 1:] else -1
    if e < 0:
        return None
    return "".join(lines[: b + 1]) + table + "".join(lines[e:])


# --- --write / --check -----------------------------------------------------------------------------
def _default_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "config").is_dir() and (root / "setup.py").is_file() else None


def generated(root: Path) -> tuple[dict[Path, str], list[str]]:
    """path → the text it should have; and notes on what was skipped."""
    out = {root / PARAM_FILE: param_file_text(), root / SCHEMA_FILE: json_schema_text()}
    notes = []
    readme = root / README
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        new = replace_readme_region(text, markdown_table())
        if new is None:
            notes.append(f"{readme}: skipped, it has no parameter-table markers; put the lines\n"
                         f"    {BEGIN_MARKER}\n    {END_MARKER}\n  where the table belongs and rerun `{COMMAND}`")
        else:
            out[readme] = new
    else:
        notes.append(f"{readme}: skipped, no such file")
    return out, notes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ros_fusion.ros.param_docs", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated files")
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale")
    mode.add_argument("--print", choices=("param-file", "schema", "table"), dest="show",
                      help="print one generated text to stdout")
    ap.add_argument("--root", type=Path, default=None, help="repository root (default: this source checkout)")
    a = ap.parse_args(argv)
    if a.show:
        sys.stdout.write({"param-file": param_file_text, "schema": json_schema_text, "table": markdown_table}[a.show]())
        return 0
    root = a.root or _default_root()
    if root is None:
        print("error: not a source checkout; pass --root REPO", file=sys.stderr)
        return 2
    files, notes = generated(root)
    stale = []
    for path, text in files.items():
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        if old == text:
            continue
        if a.write:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
        else:
            stale.append(path)
            diff = difflib.unified_diff((old or "").splitlines(keepends=True), text.splitlines(keepends=True),
                                        fromfile=f"{path} (committed)", tofile=f"{path} (generated)")
            sys.stdout.writelines(diff)
            if old is None:
                print(f"{path}: missing")
    for note in notes:
        print(note, file=sys.stderr)
    if stale:
        print("stale generated files: " + ", ".join(str(p) for p in stale) + f"\nrun `{COMMAND}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
