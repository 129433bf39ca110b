"""The README and docs/ link to pages, anchors and files that exist, and name modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def anchors(text: str) -> set[str]:
    return {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_link_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file) if file else page
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path.read_text())):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_every_module_path_named_exists():
    missing = [f"{page.relative_to(ROOT)}: {name}" for page in PAGES
               for name in re.findall(r"\b(activation_assets(?:_tests)?/[\w/]+\.py)\b", page.read_text())
               if not (ROOT / name).exists()]
    assert missing == []


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    assert not re.search(r"\b(?:at|commit) `?[0-9a-f]{7}\b", text), "commit hashes belong in the generated reports"
