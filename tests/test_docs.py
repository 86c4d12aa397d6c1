"""The documentation holds together: every page of ``docs/`` is in ``mkdocs.yml``'s nav (so the
site reaches it), and every relative link of ``README.md`` and ``docs/`` leads to a file that exists
and, when it names an anchor of a page, to a heading of that page. ``mkdocs build --strict`` checks
the site too; this runs in the everyday tests, without MkDocs."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LINKED_FROM = [ROOT / "README.md", *PAGES]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def nav_pages(entry: object) -> list[str]:
    """The page paths of a mkdocs nav (strings, lists, and {title: entry} mappings)."""
    if isinstance(entry, str):
        return [] if "://" in entry else [entry]
    if isinstance(entry, list):
        return [page for item in entry for page in nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in nav_pages(value)]
    return []


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans, where a link is a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them and as MkDocs (toc) makes them."""
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
        github = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        toc = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())
        found |= {github, toc}
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text(encoding="utf-8")))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto:
    ]


def test_the_docs_and_the_nav_exist():
    assert (ROOT / "mkdocs.yml").is_file()
    assert DOCS / "index.md" in PAGES


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    pages = [page.relative_to(DOCS).as_posix() for page in PAGES]
    assert sorted(set(pages) - set(listed)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(listed) - set(pages)) == [], "nav entries without a page"
    assert len(listed) == len(set(listed)), "a page listed twice"


@pytest.mark.parametrize("path", LINKED_FROM, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = unquote(target).partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == [], f"{path.relative_to(ROOT)}: broken links"


def test_the_link_checker_sees_links_and_anchors():
    # The checker itself: it finds links outside code, skips those inside, and knows both slugs.
    assert relative_links(ROOT / "README.md"), "README.md links to its docs"
    assert prose("see `[a](b)` and\n```\n[c](d)\n```\n[e](f)").count("](") == 1
    assert {"the-timeout-contract-every-limiter"} <= anchors(DOCS / "guide" / "timeout-contract.md")
