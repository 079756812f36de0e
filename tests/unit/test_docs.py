"""The docs: the README stays a short front page whose links and pictures exist, and every page it names is in the
site's nav (the strict build of the site itself, a process, is in tests/cli/test_project_tools.py)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 300
MAX_PICTURE_BYTES = 100_000
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def readme_links() -> list[str]:
    """Targets of the README's Markdown links and images, outside code blocks."""
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    return LINK.findall(text)


def local_target(link: str) -> Path | None:
    """The file a relative link names (anchors dropped); None for a web or in-page link."""
    if re.match(r"[a-z]+:", link) or link.startswith("#"):
        return None
    return ROOT / link.split("#")[0]


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    commands = [line.split("#")[0].strip() for line in lines if line.startswith("make ")]
    assert commands[:2] == ["make train", "make test"]


def test_readme_links_and_pictures_exist():
    links = readme_links()
    assert any(link.startswith("docs/images/") for link in links)  # the links are really read
    missing = [link for link in links if (path := local_target(link)) is not None and not path.exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    pictures = [local_target(link) for link in links if link.endswith(".png")]
    assert len(pictures) >= 5
    big = {p.name: p.stat().st_size for p in pictures if p.stat().st_size > MAX_PICTURE_BYTES}
    assert not big, f"pictures over {MAX_PICTURE_BYTES} bytes: {big}"


def test_every_docs_page_the_readme_names_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {link.split("#")[0][len("docs/"):] for link in readme_links()
             if link.startswith("docs/") and link.split("#")[0].endswith(".md")}
    assert pages, "the README links no docs page"
    assert not {p for p in pages if p not in nav}


@pytest.mark.parametrize("link, found", [("docs/index.md", True), ("docs/nope.md", False),
                                         ("docs/images/nope.png", False), ("https://x.org/a.md", None)])
def test_the_link_check_can_fail(link, found):
    path = local_target(link)
    assert (None if path is None else path.exists()) is found


def test_every_test_file_the_docs_and_code_name_exists():
    """A reader sent to `tests/<tier>/test_x.py` by the docs, the README or a comment in vae_lab finds it."""
    named = re.compile(r"tests/[\w/]*test_\w+\.py|tests/\w+\.py")
    places = [README, ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / ".ci" / "run", *(ROOT / "docs").rglob("*.md"),
              *(ROOT / "vae_lab").rglob("*.py"), *(ROOT / "scripts").glob("*")]
    missing = {f"{place.relative_to(ROOT)}: {path}" for place in places if place.is_file()
               for path in named.findall(place.read_text()) if not (ROOT / path).is_file()}
    assert len(places) > 50 and not missing, sorted(missing)
