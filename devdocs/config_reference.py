"""Writes docs/configuration.md, the configuration reference, from the code and .env.example.

    python -m devdocs.config_reference           # regenerate docs/configuration.md
    python -m devdocs.config_reference --check   # exit 1 if the committed page is stale

Names, types and defaults come from utils/config.py (the one settings object); each variable's
description is its comment in .env.example, and the sections are .env.example's, so the page
reads in the order of the file a deployer edits. tests/unit/test_config_reference.py fails when
the committed page differs from what this writes; tests/unit/test_env_example.py keeps
.env.example and the code in step.
"""

from __future__ import annotations

import argparse
import re
import sys
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

from utils.config import REPO_ROOT, Settings, env_fields

PAGE = REPO_ROOT / "docs" / "configuration.md"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
COMMAND = "python -m devdocs.config_reference"

_ASSIGNMENT = re.compile(r"^(?P<hash>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
_SECTION = re.compile(r"^# --- (?P<title>.+?) -+$")
_PART = re.compile(r"^# (?P<title>[A-Z][^=]+)$")


@dataclass
class Variable:
    name: str
    value: str  # as written in .env.example
    comment: list[str]  # the comment lines right above it, without "# "


@dataclass
class Section:
    title: str
    variables: list[Variable] = field(default_factory=list)


@dataclass
class Part:
    title: str
    sections: list[Section] = field(default_factory=list)


def read_env_example(text: str) -> list[Part]:
    """.env.example's parts (between `# ===` rules), sections (`# --- Title ---`) and variables."""
    parts: list[Part] = []
    comment: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# ====="):
            comment = []
            continue
        if (part := _PART.match(line)) and i > 0 and lines[i - 1].startswith("# ====="):
            parts.append(Part(part["title"]))
            continue
        if section := _SECTION.match(line):
            if not parts:
                parts.append(Part(""))
            parts[-1].sections.append(Section(section["title"]))
            comment = []
            continue
        if assignment := _ASSIGNMENT.match(line):
            if parts and parts[-1].sections:
                parts[-1].sections[-1].variables.append(
                    Variable(assignment["name"], assignment["value"], comment)
                )
            comment = []
        elif line.startswith("#"):
            comment.append(line[1:])
        else:
            comment = []
    return parts


def _describe(comment: list[str]) -> str:
    """One table cell: the comment's prose, with its indented command lines as code."""
    words = []
    for line in comment:
        if line.startswith("   "):  # `#   python -c "..."`: a command to copy
            words.append(f"`{line.strip()}`")
        else:  # prose: `<this port>` would be an HTML tag
            words.append(re.sub(r"<(?![^`]*`)", "&lt;", line.strip()))
    return " ".join(w for w in words if w).replace("|", "\\|")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or empty"
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(hint, str(hint))


def _code_settings() -> dict[str, tuple[str, str, bool]]:
    """Each variable the code reads: (type, default as text, secret)."""
    out: dict[str, tuple[str, str, bool]] = {}
    for group, f in env_fields():
        owner = Settings if not group else typing.get_type_hints(Settings)[group]
        hint = typing.get_type_hints(owner)[f.name]
        default = f.default if f.default is not MISSING else None
        text = "" if default is None else str(default)
        if isinstance(default, float) and default.is_integer():
            text = str(int(default))
        text = text.replace(str(REPO_ROOT), "<checkout>")
        out[f.metadata["env"]] = (_type_name(hint), text, bool(f.metadata["secret"]))
    return out


def _cell(value: str) -> str:
    return f"`{value}`" if value else "*(empty)*"


def render(env_example: str | None = None) -> str:
    parts = read_env_example(ENV_EXAMPLE.read_text() if env_example is None else env_example)
    code = _code_settings()
    documented = {v.name for p in parts for s in p.sections for v in s.variables}
    undocumented = sorted(set(code) - documented)
    if undocumented:
        raise SystemExit(
            f"{', '.join(undocumented)}: in utils/config.py but not in .env.example; add each there "
            f"with a comment, then run {COMMAND}"
        )
    out = [
        "# Configuration reference",
        "",
        "*Who this page is for:* whoever deploys or runs txmon and sets its variables: every setting,",
        "its type, default and meaning.",
        "",
        "Every process reads its settings once at start-up from the environment and from `.env` in the",
        "checkout (the environment wins, as with Compose); `.env.example` lists every variable with",
        "the same comment as here (`cp .env.example .env`, then replace every `change-me-...`). An",
        "empty value means the default. A value that does not parse, or a pair that contradicts",
        "itself (`RETENTION_DAYS` below `VALIDATION_MAX_AGE_DAYS`), stops the process at start-up",
        "with a message naming the variable. Command-line flags of the producer and consumer",
        "override single settings, and their `--help` names the variable each falls back to.",
        "",
        f"This page is generated by `{COMMAND}` from `utils/config.py` (names, types, defaults)",
        "and `.env.example` (the descriptions and sections): edit those, then run it.",
    ]
    for part in parts:
        pipeline = any(v.name in code for s in part.sections for v in s.variables)
        if part.title:
            out += ["", f"## {part.title}"]
        for section in part.sections:
            out += ["", f"### {section.title}", ""]
            if pipeline:
                out += ["| variable | type | default | what it does |", "|---|---|---|---|"]
            else:
                out += ["| variable | in .env.example | what it does |", "|---|---|---|"]
            for v in section.variables:
                description = _describe(v.comment)
                if v.name in code:
                    kind, default, secret = code[v.name]
                    shown = "*(secret)*" if secret else _cell(default)
                    out.append(f"| `{v.name}` | {kind} | {shown} | {description} |")
                elif pipeline:
                    out.append(f"| `{v.name}` | | | {description} (read by docker-compose.yml only) |")
                else:
                    out.append(f"| `{v.name}` | {_cell(v.value)} | {description} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if PAGE.read_text() != page:
            print(f"{PAGE.relative_to(REPO_ROOT)} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
