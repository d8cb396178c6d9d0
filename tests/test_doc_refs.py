"""Every documentation reference resolves inside the repository; code and config cite no issue numbers.

- `docs/DESIGN.md §n` (and a bare `DESIGN §n`) in code, config, launch files, tests and
  benchmarks: docs/DESIGN.md has a heading `## n.`; likewise `docs/<file>.md §n` for the
  other numbered docs (results.md, model_history.md), also where README.md and docs/ cite them.
- No .py/.yaml/.xml file under ros_fusion/, config/ or launch/ cites an issue ("issue #4",
  "#4 note", "Lands with the … issue"): the fact belongs in the code or in a docs section.
- Relative links in README.md, models/README.md and docs/*.md point at files that exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE_DIRS = ("ros_fusion", "config", "launch", "tests", "benchmarks")
NO_ISSUE_DIRS = ("ros_fusion", "config", "launch")
SUFFIXES = (".py", ".yaml", ".yml", ".xml")
MARKDOWN = (ROOT / "README.md", ROOT / "models" / "README.md", *sorted(DOCS.glob("*.md")))
THIS_FILE = Path(__file__).resolve()

#: `docs/DESIGN.md §4/§6`, `DESIGN §5, §8`, `docs/results.md §3`: the file and its section list.
_SECTIONS = r"((?:§\d+(?:\s*(?:,|/|and|&)\s*(?=§))?)+)"
DOC_REF = re.compile(r"(?:(?<![\w/])docs/([\w.-]+\.md)|(?<![\w/.])DESIGN(?:\.md)?)\s+" + _SECTIONS)
ISSUE_REF = re.compile(
    r"\bissues?\s*#\s*\d+"  # issue #4, issues #3
    r"|(?<![\w&])#\d+\s+(?:note|notes|acceptance|report)\b"  # #4 note
    r"|\(#\d+\)"  # (#4)
    r"|\blands with the\b[^\n]*\bissues?\b",  # Lands with the network issue
    re.IGNORECASE,
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def doc_refs(text: str) -> list[tuple[str, int]]:
    """(doc file name, section number) of every section reference in `text`."""
    out = []
    for m in DOC_REF.finditer(text):
        name = m.group(1) or "DESIGN.md"
        out += [(name, int(n)) for n in re.findall(r"§(\d+)", m.group(2))]
    return out


def issue_refs(text: str) -> list[str]:
    return [m.group(0) for m in ISSUE_REF.finditer(text)]


def numbered_sections(doc: Path) -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\.", doc.read_text(encoding="utf-8"), flags=re.M)}


def source_files(dirs: tuple[str, ...]) -> list[Path]:
    files = []
    for d in dirs:
        files += [p for p in (ROOT / d).rglob("*") if p.suffix in SUFFIXES and p.is_file()
                  and "__pycache__" not in p.parts and p.resolve() != THIS_FILE]
    return sorted(files)


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_design_doc_is_in_the_repository() -> None:
    design = DOCS / "DESIGN.md"
    assert design.is_file()
    assert numbered_sections(design) == set(range(1, 12)), "docs/DESIGN.md keeps sections §1–§11"
    assert "the one to keep true" in " ".join(design.read_text(encoding="utf-8").replace(">", " ").split())


def test_every_section_reference_resolves() -> None:
    broken = []
    for path in [*source_files(CODE_DIRS), *MARKDOWN]:
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for name, n in doc_refs(line):
                doc = DOCS / name
                if not doc.is_file():
                    broken.append(f"{_rel(path)}:{lineno}: docs/{name} does not exist")
                elif n not in numbered_sections(doc):
                    broken.append(f"{_rel(path)}:{lineno}: docs/{name} has no section '## {n}.'")
    assert not broken, "\n".join(broken)


def test_code_and_config_cite_no_issue_numbers() -> None:
    found = []
    for path in source_files(NO_ISSUE_DIRS):
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            found += [f"{_rel(path)}:{lineno}: {ref!r}" for ref in issue_refs(line)]
    assert not found, "cite the docs section that holds the fact, or state it:\n" + "\n".join(found)


@pytest.mark.parametrize("doc", MARKDOWN, ids=_rel)
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{_rel(doc)}: links to missing files {broken}"


# --- the patterns themselves --------------------------------------------------------------------
@pytest.mark.parametrize(("text", "refs"), [
    ("(docs/DESIGN.md §7)", [("DESIGN.md", 7)]),
    ("(DESIGN §4/§6)", [("DESIGN.md", 4), ("DESIGN.md", 6)]),
    ("(DESIGN §5, §11)", [("DESIGN.md", 5), ("DESIGN.md", 11)]),
    ("see docs/results.md §3 and docs/model_history.md §5", [("results.md", 3), ("model_history.md", 5)]),
    ("`shared/DESIGN.md` and DESIGNS §2", []),
])
def test_doc_ref_pattern(text: str, refs: list[tuple[str, int]]) -> None:
    assert doc_refs(text) == refs


@pytest.mark.parametrize(("text", "hit"), [
    ("measured, issue " + "#4 notes", True),
    ("(Issue" + "#12)", True),
    ("(#" + "5 note)", True),
    ("Lands with the network " + "issue.", True),
    ("colour #e377c2, 3 issues found", False),
    ("self.issues = []", False),
])
def test_issue_ref_pattern(text: str, hit: bool) -> None:
    assert bool(issue_refs(text)) is hit
