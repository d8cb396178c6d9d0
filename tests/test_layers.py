"""The layer contract (docs/DESIGN.md §3): the package holds it, and the check catches a break."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ros_fusion.layers import RANKS, breaks, graph_text, import_edges, main

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "ros_fusion"


def test_the_package_holds_its_layers(capsys) -> None:
    edges = import_edges(PACKAGE_DIR)
    assert breaks(edges) == []
    # the graph is real: the layers that must depend on core do, and core depends on nothing
    assert {e.src for e in edges if e.dst == "core"} >= {"sim", "models", "runtime", "bag", "eval", "ros"}
    assert not [e for e in edges if e.src == "core"]
    assert main(["--root", str(PACKAGE_DIR)]) == 0
    assert "core → nothing" in capsys.readouterr().out


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "ros_fusion"
    for rel, text in {"__init__.py": "", "core/__init__.py": "", "runtime/__init__.py": "", "eval/__init__.py": "",
                      "ros/__init__.py": "", "paths.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


def test_an_upward_a_sideways_and_a_lazy_import_are_each_named(tmp_path: Path, capsys) -> None:
    root = _package(tmp_path, {
        "core/types.py": "from ..runtime import pipeline\n",  # upward
        "eval/report.py": "import ros_fusion.ros.monitor\n",  # sideways: eval and ros share a rank
        "runtime/pipeline.py": "def f():\n    from ..eval.report import x\n",  # lazy, still upward
        "ros/node.py": "from ..paths import share_dir\nfrom ..core import types\n",  # allowed
        "core/rig.py": "from .. import paths\n",  # core may not use the leaf modules either
    })
    found = breaks(import_edges(root))
    assert len(found) == 4, found
    assert any(b.startswith("ros_fusion/core/types.py:1: core imports runtime, a higher layer") for b in found)
    assert any(b.startswith("ros_fusion/eval/report.py:1: eval imports ros, its own rank") for b in found)
    assert any(b.startswith("ros_fusion/runtime/pipeline.py:2: runtime imports eval") for b in found)
    assert any(b.startswith("ros_fusion/core/rig.py:1: core imports paths") for b in found)
    assert main(["--root", str(root)]) == 1
    assert "4 layer break(s)" in capsys.readouterr().out


def test_a_new_subpackage_must_be_given_a_rank(tmp_path: Path) -> None:
    root = _package(tmp_path, {"tools/x.py": "from ..core import types\n"})
    found = breaks(import_edges(root))
    assert found == ["ros_fusion/tools/x.py:1: 'tools' is not a layer of the contract (add it to RANKS)"]
    assert "tools" not in RANKS
    assert "tools → core (1)" in graph_text(import_edges(root))
