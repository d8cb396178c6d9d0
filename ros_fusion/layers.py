"""The layer contract (docs/DESIGN.md §3): which part of the package may import which, checked.

Each subpackage has a rank; a module may import only from lower ranks (never its own rank's
other subpackages, never upwards), so the subpackage import graph has no cycle by construction.
The leaf modules (`paths`, `console`, the package `__init__`) import nothing from the package
and serve every layer above `core`. Imports inside functions count like the others: a lazy
import is still a dependency.

`python -m ros_fusion.layers` prints the graph and every break (file:line), exit 1 on a break;
`make lint` and the test suite run it. Read from the source with `ast`, nothing is imported.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "ros_fusion"
#: Rank of each layer: an import must go to a strictly lower rank.
RANKS: dict[str, int] = {
    "core": 0,
    "sim": 1, "models": 1,
    "runtime": 2, "bag": 2,
    "eval": 3, "ros": 3,
    "commands": 4,
    "cli": 5,
}
#: Top-level modules that import nothing from the package; any layer but `core` may use them.
LEAVES = frozenset({"__init__", "paths", "console"})


@dataclass(frozen=True)
class Edge:
    """One import of `dst` by a module of `src` (layer names), where it is written."""

    src: str
    dst: str
    file: str
    line: int


def _layer_of(root: Path, file: Path) -> str:
    rel = file.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _targets(node: ast.AST, package: list[str]) -> Iterator[list[str]]:
    """Absolute dotted names (as part lists) one import statement refers to; `package` is the
    importing module's package, against which relative imports resolve."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name.split(".")
    elif isinstance(node, ast.ImportFrom):
        base = package[: len(package) - node.level + 1] if node.level else []
        if node.module:
            yield base + node.module.split(".")
        else:  # `from .. import x`: each name may be a module
            for alias in node.names:
                yield base + [alias.name]


def _layer_named(root: Path, target: list[str]) -> str:
    """The layer an absolute import target belongs to: a subpackage, a top-level module, or
    the package `__init__` for a name defined there."""
    if len(target) == 1:
        return "__init__"
    head = target[1]
    if (root / head).is_dir() or (root / f"{head}.py").is_file():
        return head
    return "__init__"


def import_edges(root: Path) -> list[Edge]:
    """Every import between two different layers of the package whose source is in `root`."""
    edges = []
    for file in sorted(root.rglob("*.py")):
        src = _layer_of(root, file)
        package = [PACKAGE, *file.relative_to(root).parent.parts]
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in ast.walk(tree):
            for target in _targets(node, package):
                if target[:1] != [PACKAGE]:
                    continue
                dst = _layer_named(root, target)
                if dst != src:
                    edges.append(Edge(src, dst, str(file.relative_to(root.parent)), node.lineno))
    return edges


def breaks(edges: list[Edge]) -> list[str]:
    """Each edge the contract forbids, as one line naming the file, the line and the rule."""
    out = []
    for e in edges:
        if e.src in LEAVES:
            out.append(f"{e.file}:{e.line}: {e.src} imports {e.dst}, but the leaf modules import nothing "
                       "from the package")
        elif e.dst in LEAVES:
            if e.src == "core":
                out.append(f"{e.file}:{e.line}: core imports {e.dst}; core imports nothing from the package")
        elif e.src not in RANKS or e.dst not in RANKS:
            unknown = e.src if e.src not in RANKS else e.dst
            out.append(f"{e.file}:{e.line}: {unknown!r} is not a layer of the contract (add it to RANKS)")
        elif RANKS[e.dst] >= RANKS[e.src]:
            how = "its own rank" if RANKS[e.dst] == RANKS[e.src] else "a higher layer"
            out.append(f"{e.file}:{e.line}: {e.src} imports {e.dst}, {how} (ranks: {e.src} {RANKS[e.src]}, "
                       f"{e.dst} {RANKS[e.dst]})")
    return out


def graph_text(edges: list[Edge]) -> str:
    """The layer graph, one line per layer in rank order: what it imports and how many times."""
    counts: dict[str, dict[str, int]] = {}
    for e in edges:
        counts.setdefault(e.src, {}).setdefault(e.dst, 0)
        counts[e.src][e.dst] += 1
    order = sorted(set(counts) | set(RANKS), key=lambda s: (RANKS.get(s, -1), s))
    lines = []
    for src in order:
        dsts = ", ".join(f"{d} ({n})" for d, n in sorted(counts.get(src, {}).items())) or "nothing"
        lines.append(f"{src:>9} → {dsts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ros_fusion.layers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent,
                    help="the package folder to check (default: this installed package)")
    args = ap.parse_args(argv)
    edges = import_edges(args.root)
    print("import graph between layers (imports counted):")
    print(graph_text(edges))
    problems = breaks(edges)
    for p in problems:
        print(f"layer break: {p}", file=sys.stderr)
    print(f"{len(problems)} layer break(s)" if problems else "layers hold: no cycle, no upward or sideways import")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
