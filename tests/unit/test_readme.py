"""README.md's links work where the README is read without the repository (the package index) and lead somewhere.

PyPI renders README.md on its own: a relative link (``docs/x.md``, ``#section``) is dead there. So every link
in README.md is absolute, and a link into this repository names a file that exists and a heading that exists.
The one exception is the generated configuration reference, whose text comes from the option tables: an in-page
anchor there must at least name a heading of README.md. The pages under docs/ are read on GitHub, beside the
files they link to: their relative links must resolve too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PROJECT = "https://github.com/otel-matomo/otel-matomo"
"""The project URL of pyproject.toml: links into the repository start with it."""

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")
_GENERATED = re.compile(r"<!-- (\S+):start -->.*?<!-- \1:end -->", re.S)


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks (a ``# comment`` in a code block is no heading)."""
    return _FENCE.sub("", markdown)


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchor for each heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _prose(markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def _links(markdown: str) -> list[str]:
    return _LINK.findall(_prose(markdown))


def _repository_target(url: str) -> tuple[Path, str] | None:
    """The file (or folder) and anchor a link into this repository names; None for any other URL."""
    if url == PROJECT or url.startswith(PROJECT + "#"):
        return README, url.partition("#")[2]
    match = re.fullmatch(re.escape(PROJECT) + r"/(?:blob|tree)/main/([^#?]+)(?:#(.*))?", url)
    if match is None:
        return None
    return ROOT / match[1], match[2] or ""


def test_every_readme_link_is_absolute() -> None:
    readme = README.read_text(encoding="utf-8")
    handwritten = _GENERATED.sub("", readme)
    relative = [link for link in _links(handwritten) if not re.match(r"https?://|mailto:", link)]
    assert not relative, f"README.md is also the package index's page, where these links are dead: {relative}"


def test_in_page_anchors_of_the_generated_reference_name_a_heading() -> None:
    readme = README.read_text(encoding="utf-8")
    generated = "".join(block[0] for block in _GENERATED.finditer(readme))
    missing = [link for link in _links(generated) if link.startswith("#") and link[1:] not in _anchors(readme)]
    assert not missing, f"README.md has no heading for {missing}"


def test_every_link_into_the_repository_names_a_file_and_heading_that_exist() -> None:
    readme = README.read_text(encoding="utf-8")
    checked = 0
    for url in _links(readme):
        target = _repository_target(url)
        if target is None:
            assert not url.startswith(PROJECT), f"{url}: link to files as {PROJECT}/blob/main/<path>"
            continue
        path, anchor = target
        assert path.exists(), f"README.md links to {url}, but {path.relative_to(ROOT)} does not exist"
        if anchor:
            assert path.suffix == ".md", f"{url}: an anchor into a file that is not Markdown"
            assert anchor in _anchors(path.read_text(encoding="utf-8")), f"{url}: no such heading"
        checked += 1
    assert checked >= 5, "README.md links to the docs pages"


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda page: page.name)
def test_the_docs_pages_links_resolve(page: Path) -> None:
    for url in _links(page.read_text(encoding="utf-8")):
        if re.match(r"https?://|mailto:", url):
            target = _repository_target(url)
            if target is None:
                continue
            path, anchor = target
        else:
            relative, _, anchor = url.partition("#")
            path = (page.parent / relative).resolve() if relative else page
        assert path.exists(), f"{page.name} links to {url}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path.read_text(encoding="utf-8")), f"{page.name}: {url} names no heading"
