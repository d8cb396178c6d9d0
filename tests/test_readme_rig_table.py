"""The README's "Rig file format" tables against the rig files and the code that reads them.

(a) every key the shipped rig files use has a row; (b) every row names a key its reader
really reads (a string literal in `core/rig.py`, `core/sync.py` or, for `model.*`, the
simulator module of that modality), and the `model.*` defaults are the ones the
simulator falls back to; (c) every key the loader accepts has a row; (d) the YAML
example of that section loads.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ros_fusion.core import rig as rig_module
from ros_fusion.core.rig import rig_from_yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Rig file format"
RIG_FILES = (ROOT / "config" / "rig_default.yaml", ROOT / "config" / "rig_surround.yaml")
PKG = ROOT / "ros_fusion"
#: Where each kind of key is read.
RIG_READERS = (PKG / "core" / "rig.py",)
SYNC_READERS = (PKG / "core" / "rig.py", PKG / "core" / "sync.py")
MODEL_READERS = {
    "lidar": PKG / "sim" / "lidar.py",
    "camera": PKG / "sim" / "camera.py",
    "radar": PKG / "sim" / "radar.py",
    "imu": PKG / "sim" / "inertial.py",
    "odometry": PKG / "sim" / "inertial.py",
}


def section_text(markdown: str, heading: str = SECTION) -> str:
    """The body of the `## ` section named `heading` (up to the next `## ` heading)."""
    lines = markdown.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise AssertionError(f"README.md has no {heading!r} section") from None
    body = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        body.append(line)
    return "\n".join(body)


def _cells(line: str) -> list[str]:
    inner = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    # `\|` inside a cell is an escaped pipe, not a separator.
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def tables(text: str) -> list[list[dict[str, str]]]:
    """Markdown tables of `text`, each a list of rows keyed by the (lower-case) header cells."""
    out: list[list[dict[str, str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$",
                                                                                  lines[i + 1]):
            header = [c.lower() for c in _cells(lines[i])]
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(dict(zip(header, _cells(lines[i]), strict=False)))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def key_rows(text: str) -> list[dict[str, str]]:
    """Rows of every table whose first column is `key`, with the key's backticks removed."""
    rows = []
    for table in tables(text):
        if table and next(iter(table[0])) == "key":
            for row in table:
                row = dict(row)
                row["key"] = row["key"].strip().strip("`")
                rows.append(row)
    return rows


def flatten_rig(d: dict[str, Any]) -> set[tuple[str, str]]:
    """(key, modality) of every key a rig file uses, in the README's notation.

    Top level: `rig.<k>` and `sensors`; per sensor: the dotted path below the sensor
    (`sync.offset_ms`, `extrinsics.xyz`, `model.beams`), with the sensor's modality for
    `model.*` keys (whose meaning depends on it) and "" otherwise. Lists are leaves.
    """
    out: set[tuple[str, str]] = {(f"rig.{k}", "") for k in (d.get("rig") or {})}
    out.add(("sensors", ""))

    def walk(prefix: str, value: Any, modality: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, modality)
        else:
            out.add((prefix, modality if prefix.startswith("model.") else ""))

    for sensor in d["sensors"].values():
        walk("", sensor, str(sensor["modality"]))
    return out


def readers_of(key: str, modality: str) -> tuple[Path, ...]:
    if key.startswith("model."):
        if modality not in MODEL_READERS:
            raise AssertionError(f"model key {key} names an unknown modality {modality!r}")
        return (MODEL_READERS[modality],)
    if key.startswith("sync."):
        return SYNC_READERS
    return RIG_READERS


def _literal(name: str) -> re.Pattern[str]:
    return re.compile(r"""(["'])""" + re.escape(name) + r"\1")


def unread_keys(rows: list[dict[str, str]]) -> list[str]:
    """Rows whose key (its last dotted part) is no string literal in any of its readers."""
    missing = []
    for row in rows:
        key, modality = row["key"], row.get("modality", "")
        name = key.split(".")[-1]
        if not any(_literal(name).search(p.read_text()) for p in readers_of(key, modality)):
            missing.append(f"{key} ({modality or 'any'})")
    return missing


def code_default(key: str, modality: str) -> Any:
    """The fallback of `<mapping>.get("<name>", DEFAULT)` in the simulator module of `modality`."""
    name = key.split(".")[-1]
    src = MODEL_READERS[modality].read_text()
    m = re.search(r"\.get\(\s*(['\"])" + re.escape(name) + r"\1\s*,\s*(\[[^\]]*\]|[^),]+)\)", src)
    if m is None:
        raise AssertionError(f"{MODEL_READERS[modality].name} has no .get({name!r}, default)")
    return ast.literal_eval(m.group(2).strip())


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def section() -> str:
    return section_text(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rows(section: str) -> list[dict[str, str]]:
    rows = key_rows(section)
    assert len(rows) > 20, "the Rig file format section should hold the key tables"
    return rows


@pytest.mark.parametrize("rig_file", RIG_FILES, ids=lambda p: p.name)
def test_every_rig_file_key_has_a_row(rows: list[dict[str, str]], rig_file: Path) -> None:
    documented = {(r["key"], r.get("modality", "") if r["key"].startswith("model.") else "") for r in rows}
    used = flatten_rig(yaml.safe_load(rig_file.read_text()))
    missing = sorted(f"{k} ({m})" if m else k for k, m in used - documented)
    assert not missing, f"keys used in {rig_file.name} but not in the README table: {missing}"


def test_every_row_is_read_by_the_loader(rows: list[dict[str, str]]) -> None:
    missing = unread_keys(rows)
    assert not missing, f"README rig-table keys that no reader reads: {missing}"


def test_model_defaults_match_the_simulator(rows: list[dict[str, str]]) -> None:
    wrong = []
    for row in rows:
        if not row["key"].startswith("model."):
            continue
        documented = yaml.safe_load(row["default"].strip("`"))
        actual = code_default(row["key"], row["modality"])
        if not same_value(documented, actual):
            wrong.append(f"{row['key']} ({row['modality']}): README {documented!r}, code {actual!r}")
    assert not wrong, wrong


def test_every_accepted_key_has_a_row(rows: list[dict[str, str]]) -> None:
    documented = {r["key"] for r in rows}
    accepted = set(rig_module._SENSOR_KEYS) | {f"sync.{k}" for k in rig_module._SYNC_KEYS}
    accepted |= {f"intrinsics.{k}" for k in ("width", "height", "fx", "fy", "cx", "cy", "distortion_model", "D")}
    accepted |= {f"extrinsics.{k}" for k in ("xyz", "rpy", "matrix")} | {"rig.name", "rig.base_frame", "sensors"}
    missing = sorted(accepted - documented)
    assert not missing, f"keys the rig loader accepts but the README does not list: {missing}"


def test_yaml_example_loads(section: str) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert blocks, "the Rig file format section should show a YAML example"
    rig = rig_from_yaml(blocks[0], "README example")
    assert rig.sensors


# --- the checks themselves must be able to fail --------------------------------------------------
def test_checker_catches_an_unread_key() -> None:
    rows = [{"key": "sync.offset_ms"}, {"key": "sync.offset_sec"}, {"key": "model.beams", "modality": "lidar"},
            {"key": "model.beams", "modality": "radar"}]
    assert unread_keys(rows) == ["sync.offset_sec (any)", "model.beams (radar)"]


def test_checker_catches_an_undocumented_key() -> None:
    rig = {"rig": {"name": "x"}, "sensors": {"l": {"modality": "lidar", "topic": "/p", "rate_hz": 10.0,
                                                   "sync": {"offset_ms": 1.0}, "model": {"beams": 16}}}}
    used = flatten_rig(rig)
    assert ("sync.offset_ms", "") in used and ("model.beams", "lidar") in used and ("rig.name", "") in used
    assert ("topic", "") in used and ("sync", "") not in used


def test_table_parser_keeps_escaped_pipes() -> None:
    text = "| key | meaning |\n|---|---|\n| `a.b` | largest \\|x\\| |\n"
    assert key_rows(text) == [{"key": "a.b", "meaning": "largest |x|"}]
