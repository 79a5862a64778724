"""The code examples of the docs: every fenced block of README.md and docs/*.md, with its marker.

The convention (docs/development.md, "Documentation"): a shell or SQL block is preceded, on the
line right above its fence, by

    <!-- run -->                      tests/integration/test_docs_examples.py runs it
    <!-- not-run: the reason -->      it is not run; the reason says why (and what tests it instead)

Other blocks (`text` for output, `promql`, `yaml`, ...) need no marker, but every block names
its language, so that a shell block cannot hide as an unlabelled one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The languages a reader copies into a shell or psql: each block of these is run or excused.
CHECKED = {"bash", "sh", "shell", "console", "sql"}
SHELL = CHECKED - {"sql"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>run|not-run)\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$")


@dataclass(frozen=True, slots=True)
class Example:
    path: Path  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str  # "" when the fence names none
    code: str
    marker: str | None  # "run", "not-run" or None
    reason: str  # not-run's reason

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(repo: Path = REPO) -> list[Path]:
    """README.md and every page of the docs site."""
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


def parse(text: str, path: Path) -> list[Example]:
    """Every fenced block of one Markdown file, with the marker on the line above its fence."""
    lines = text.splitlines()
    out: list[Example] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        above = lines[i - 1] if i > 0 else ""
        marker = _MARKER.match(above)
        out.append(
            Example(
                path=path,
                line=i + 1,
                lang=opening["info"].strip().split(" ")[0].lower(),
                code="\n".join(body) + "\n",
                marker=marker["kind"] if marker else None,
                reason=(marker["reason"] or "").strip() if marker else "",
            )
        )
        i = j + 1
    return out


def examples(repo: Path = REPO) -> list[Example]:
    return [e for f in doc_files(repo) for e in parse(f.read_text(), f.relative_to(repo))]


def problems(found: list[Example]) -> list[str]:
    """What breaks the convention, one line each, naming the fix."""
    out = []
    for e in found:
        if not e.lang:
            out.append(
                f"{e.where}: a fence without a language: write ```text for output, ```bash for commands"
            )
        elif e.lang in CHECKED and e.marker is None:
            out.append(
                f"{e.where}: a {e.lang} block needs `<!-- run -->` or `<!-- not-run: reason -->` on the line above its fence"
            )
        elif e.marker == "not-run" and not e.reason:
            out.append(f"{e.where}: say why it is not run: `<!-- not-run: the reason -->`")
        elif e.marker is not None and e.lang not in CHECKED:
            out.append(f"{e.where}: a {e.lang} block is never run: drop its marker")
    return out


def statements(sql: str) -> list[str]:
    """The statements of a SQL block (ours hold no `;` inside strings), comments dropped."""
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]
