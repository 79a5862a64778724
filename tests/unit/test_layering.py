"""Pipeline code never imports the native dev stack: the arrows run from stack/ to the pipeline,
never back (the stack may import anything; the producer, consumer, shared library, report
package, DAGs and the Airflow plugin must run in containers that do not ship stack/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINE = ("producer", "consumer", "utils", "reports", "dags", "plugins")


def imported_modules(source: str) -> set[str]:
    """Absolute module names a file imports, wherever in the file (functions included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def imports_stack(source: str) -> list[str]:
    return sorted(m for m in imported_modules(source) if m == "stack" or m.startswith("stack."))


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import stack", ["stack"]),
        (
            "from stack.orchestrator import LocalStack",
            ["stack.orchestrator", "stack.orchestrator.LocalStack"],
        ),
        ("from stack import postgres", ["stack", "stack.postgres"]),
        ("def f():\n    import stack.common\n", ["stack.common"]),
        ("import stacktrace\nfrom utils.stack import x\nfrom . import stack", []),
    ],
)
def test_the_checker_finds_stack_imports(source: str, found: list[str]) -> None:
    assert imports_stack(source) == found


def test_pipeline_code_does_not_import_the_stack() -> None:
    files = [p for package in PIPELINE for p in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 20, files  # the walk found the code
    offenders = {str(p.relative_to(REPO)): found for p in files if (found := imports_stack(p.read_text()))}
    assert not offenders, f"pipeline code imports the dev stack: {offenders}"


def test_pipeline_code_does_not_import_the_docs_tooling() -> None:
    files = [p for package in PIPELINE for p in sorted((REPO / package).rglob("*.py"))]
    offenders = {
        str(p.relative_to(REPO)): sorted(
            m for m in imported_modules(p.read_text()) if m.split(".")[0] == "devdocs"
        )
        for p in files
    }
    assert not {k: v for k, v in offenders.items() if v}, "pipeline code imports devdocs/ (dev tooling)"
