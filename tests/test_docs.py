"""The README and docs/ link to files and headings that exist (the image results moved from
the README to docs/results.md; a link left pointing at the old place would fail here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces
    to '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    lines = doc.read_text().splitlines()
    return {anchor(line.lstrip("#")) for line in lines if re.match(r"#{1,6} ", line)}


def test_anchor_follows_github():
    assert anchor("Results (measured; reproduce with `make demo` and `make bench`)") == (
        "results-measured-reproduce-with-make-demo-and-make-bench"
    )
    assert anchor("Image data: read, audit, split") == "image-data-read-audit-split"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    assert doc.exists()
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue  # the web: not checked offline
        file, _, fragment = target.partition("#")
        linked = (doc.parent / file).resolve() if file else doc
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_the_readme_points_to_the_full_results():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/results.md)" in readme
    assert (ROOT / "docs" / "results.md").read_text().startswith("# Image results")
