"""MkDocs hook: links from a docs page to a file of the repository (`../consumer/rules.py`).

Such links are written relative to the page, so they work where the Markdown is read as it is
(an editor, a Git web view). The site holds only docs/, so the hook checks that the file exists
(a stale path is a warning, and `mkdocs build --strict` fails on it) and renders the link as its
text: `` [`consumer/rules.py`](../consumer/rules.py) `` becomes `` `consumer/rules.py` ``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

# A logger under "mkdocs." so that --strict counts its warnings.
log = logging.getLogger("mkdocs.hooks.txmon")

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")


def repo_link_text(text: str, target: str, page_dir: Path, docs_dir: Path, repo: Path) -> str | None:
    """What a link renders as: None leaves it to MkDocs (a page, an anchor, a URL)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):
        return None
    resolved = (page_dir / target.split("#", 1)[0]).resolve()
    if resolved.is_relative_to(docs_dir.resolve()):
        return None
    if not resolved.is_relative_to(repo.resolve()) or not resolved.exists():
        raise FileNotFoundError(target)
    if text.startswith("`"):
        return text
    return f"{text} (`{resolved.relative_to(repo.resolve()).as_posix()}`)"


def rewrite(markdown: str, page_path: Path, docs_dir: Path, repo: Path) -> tuple[str, list[str]]:
    """The page with its repository links rendered as text, and the links that point nowhere."""
    missing: list[str] = []
    out: list[str] = []
    in_fence = False

    def replace(match: re.Match[str]) -> str:
        try:
            text = repo_link_text(match["text"], match["target"], page_path.parent, docs_dir, repo)
        except FileNotFoundError:
            missing.append(match["target"])
            return match[0]
        return match[0] if text is None else text

    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line):
            in_fence = not in_fence
        out.append(line if in_fence else LINK.sub(replace, line))
    return "".join(out), missing


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    docs_dir = Path(config["docs_dir"])
    text, missing = rewrite(markdown, docs_dir / page.file.src_path, docs_dir, docs_dir.parent)
    for target in missing:
        log.warning(
            "Doc file '%s' links to '%s', which is not a file of the repository", page.file.src_path, target
        )
    return text
