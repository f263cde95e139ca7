"""The README and docs/ stay true to the tree: every relative link and anchor resolves, and
every project file, script and `python -m` module they name exists."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A project path as the pages write it: a top-level folder of this repo, then a path.
PATH = re.compile(r"(?<![\w./-])((?:geora|baselines|analysis|scripts|conf|tests|notebooks|"
                  r"benchmarks|results|docs)/[\w./-]*[\w/])(?![\w./*<{-])")
MODULE = re.compile(r"python3? -m ((?:geora|analysis|baselines)(?:\.\w+)+)")
# Paths the pages name as hypothetical examples (the "adding a method" walk-through).
EXAMPLES = {"conf/method/middle_r.yaml"}


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading.

    >>> slug("The GPU check (prepared; not yet run on a GPU)")
    'the-gpu-check-prepared-not-yet-run-on-a-gpu'
    """
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"\s", "-", text)


def anchors(page: Path) -> set[str]:
    found, fence = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def test_pages_exist():
    assert len(PAGES) > 5, "docs/ pages missing"


def test_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_anchors_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):        # http:, https:, mailto: are not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_files_and_modules_exist(page):
    text = page.read_text()
    missing = [p for p in set(PATH.findall(text))
               if p not in EXAMPLES and not (ROOT / p.rstrip(".")).exists()]
    missing += [f"python -m {m}" for m in set(MODULE.findall(text))
                if importlib.util.find_spec(m) is None]
    assert not missing, f"{page.name} names what does not exist: {sorted(missing)}"


def test_the_checker_notices_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n[ok](#title) [bad](#nope)\n")
    targets = LINK.findall(page.read_text())
    assert [t for t in targets if t.lstrip("#") not in anchors(page)] == ["#nope"]
