"""The documentation: README.md and the MkDocs site under docs/ (make docs).

The site builds with --strict (a broken link or anchor, a page missing from the nav, a link to a
repository file that is gone: each is a warning, and a warning fails); every page says who it is
for; README links only to what exists; every shell and SQL block is run or says why not
(tests/integration/test_docs_examples.py runs them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devdocs import examples, hooks

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _nav_pages(nav: list[object]) -> list[str]:
    out: list[str] = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                out.extend(_nav_pages(value) if isinstance(value, list) else [str(value)])
    return out


def _mkdocs_config() -> dict[str, object]:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml names a Python function for the mermaid fence; nothing here needs to import it.
    Loader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)
    return yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)


def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert result.returncode == 0 and not warnings, f"make docs fails:\n{result.stderr[-4000:]}"
    assert (tmp_path / "site" / "operations" / "index.html").exists()


def test_every_page_is_in_the_nav_and_says_who_it_is_for() -> None:
    nav = _nav_pages(_mkdocs_config()["nav"])  # type: ignore[arg-type]
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, "add the page to mkdocs.yml's nav (or remove it from the nav)"
    for page in pages:
        head = (DOCS / page).read_text().split("\n\n", 2)
        assert head[0].startswith("# "), f"docs/{page}: start with its title"
        assert head[1].startswith("*Who this page is for:*"), (
            f"docs/{page}: the paragraph after the title says `*Who this page is for:* ...`"
        )


def test_readme_is_a_front_page_linking_into_the_docs() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 130, "README.md is the front page: move detail into docs/"
    first = examples.parse(readme, Path("README.md"))[0]
    assert first.code.splitlines()[:2] == [
        "make demo    # run the pipeline end to end on an embedded local stack (no Docker) and print a summary",
        "make test    # run every test: unit, integration (real Kafka + PostgreSQL) and Airflow DAGs",
    ], "the two commands stay the first thing in README.md"
    targets = re.findall(r"\]\((?!https?:)([^)#\s]+)(#[^)\s]*)?\)", readme)
    linked = {t for t, _ in targets}
    for target, anchor in targets:
        assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"
        if anchor and target.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", (REPO / target).read_text(), re.M)
            slugs = {re.sub(r"[^\w\s-]", "", h.lower()).strip().replace(" ", "-") for h in headings}
            assert anchor[1:] in slugs, f"README.md links to {target}{anchor}: no such heading"
    missing = {f"docs/{p.name}" for p in DOCS.glob("*.md") if p.name != "index.md"} - linked
    assert not missing, f"README.md's Documentation table should link every page: {sorted(missing)}"


def test_the_diagrams_name_files_that_exist() -> None:
    diagrams = [e for e in examples.examples(REPO) if e.lang == "mermaid"]
    named = {m for e in diagrams for m in re.findall(r"\b[a-z_]+/[a-z_/]*[a-z_]+\.py\b", e.code)}
    assert len(named) >= 5, named
    assert all((REPO / path).exists() for path in named), sorted(p for p in named if not (REPO / p).exists())


def test_the_demo_output_shown_is_what_the_demo_prints() -> None:
    """README.md and the getting-started page show a real `make demo` summary: each of its lines
    starts with a label stack/demo.py prints (a renamed or dropped line fails here)."""
    demo = (REPO / "stack" / "demo.py").read_text()
    for page in (REPO / "README.md", DOCS / "getting-started.md"):
        shown = next(e for e in examples.parse(page.read_text(), page) if "== txmon demo ==" in e.code)
        labels = [line.split()[0] for line in shown.code.splitlines()[1:] if line[:1].strip()]
        assert len(labels) >= 6, labels
        for label in labels:
            assert re.search(rf"[\"']{label} +", demo), (
                f"{page.name} shows a `{label}` line that stack/demo.py no longer prints: paste a fresh `make demo` summary"
            )


def test_every_shell_and_sql_block_is_run_or_excused() -> None:
    found = examples.examples(REPO)
    assert sum(e.marker == "run" for e in found) >= 5, "the walk found the runnable examples"
    assert not examples.problems(found), "\n".join(examples.problems(found))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```bash\nls\n```\n", "needs `<!-- run -->`"),
        ("<!-- not-run: -->\n```sql\nSELECT 1;\n```\n", "say why"),
        ("```\nls\n```\n", "without a language"),
        ("<!-- run -->\n```text\nout\n```\n", "drop its marker"),
        ("<!-- not-run: slow -->\n```console\nmake x\n```\n", None),
        ("<!-- run -->\n\n```bash\nls\n```\n", "needs `<!-- run -->`"),  # the marker is right above
    ],
)
def test_the_convention_checker(text: str, problem: str | None) -> None:
    found = examples.problems(examples.parse(text, Path("x.md")))
    assert (problem is None and not found) or (problem is not None and problem in found[0])


def test_the_parser_reads_indented_fences_and_markers() -> None:
    text = "1. step\n\n   <!-- run -->\n   ```bash\n   echo hi\n   ```\n\n~~~sql\nSELECT 1; -- x\nSELECT 2\n~~~\n"
    first, second = examples.parse(text, Path("x.md"))
    assert (first.lang, first.marker, first.code, first.line) == ("bash", "run", "echo hi\n", 4)
    assert (second.lang, second.marker) == ("sql", None)
    assert examples.statements("-- a comment\nSELECT 1;\nSELECT 2\n") == ["SELECT 1", "SELECT 2"]


def test_the_hook_renders_repository_links_as_text_and_reports_stale_ones(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    page = tmp_path / "docs" / "page.md"
    markdown = (
        "See [`pkg/mod.py`](../pkg/mod.py), [the module](../pkg/mod.py#L3), [a page](other.md#x),\n"
        "[out](https://example.org) and [gone](../pkg/gone.py).\n"
        "```bash\n[not a link](../nowhere)\n```\n"
    )
    text, missing = hooks.rewrite(markdown, page, tmp_path / "docs", tmp_path)
    assert text.splitlines()[0] == "See `pkg/mod.py`, the module (`pkg/mod.py`), [a page](other.md#x),"
    assert "[gone](../pkg/gone.py)" in text and "[not a link](../nowhere)" in text
    assert missing == ["../pkg/gone.py"]
