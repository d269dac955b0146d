"""The user docs: the README is short and every link in it and in docs/ stays inside the repo
and lands on a file (and a heading, for #anchors) that exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    heads = [ln.lstrip("#").strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    return {_slug(h) for h in heads}


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n < 250, f"README.md has {n} lines; move detail into docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_in_the_repo_and_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in LINK.findall(text):
        assert not re.match(r"[a-z][a-z0-9+.-]*:|//", target), f"{doc.name} links outside the repo: {target}"
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        assert dest.is_file(), f"{doc.name}: {target} does not resolve to a file"
        assert ROOT in dest.parents, f"{doc.name}: {target} leaves the repository"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{doc.name}: no heading #{anchor} in {dest.name}"


def test_the_slug_rule():
    assert _slug("Targets and measuring latency") == "targets-and-measuring-latency"
    assert _slug("Remote targets (a device over SSH)") == "remote-targets-a-device-over-ssh"
