"""The user-facing documents stay true to the code: every flag they name is a
flag of ktlswsgi, every relative link leads to a file and every #anchor to a
heading in it, nothing points outside the repository, and the README stays a
page (the manual is docs/)."""
from __future__ import annotations

import glob
import os
import re

import pytest

from ktlswsgi import cli

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINKED = DOCS + ["bench/README.md"]
# Flags of other programs the docs quote (apt-get, modprobe).
FOREIGN_FLAGS = {"--no-install-recommends", "--blacklist-tls"}


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(rel: str) -> set:
    return {_slug(m.group(1)) for m in re.finditer(r"(?m)^#+ (.+)$", _read(rel))}


def test_every_flag_the_docs_name_exists():
    known = {opt for action in cli.build_parser()._actions for opt in action.option_strings}
    unknown = set()
    for rel in DOCS:
        for m in re.finditer(r"(?<![\w-])(--[a-z0-9][a-z0-9_-]*)", _read(rel)):
            if m.group(1) not in known and m.group(1) not in FOREIGN_FLAGS:
                unknown.add((rel, m.group(1)))
    assert sorted(unknown) == []


@pytest.mark.parametrize("rel", LINKED)
def test_relative_links_and_anchors_resolve(rel):
    broken = []
    for m in re.finditer(r"\]\(([^)\s]+)\)", _read(rel)):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(rel), path)) if path else rel
        if not os.path.exists(os.path.join(ROOT, dest)):
            broken.append(target)
        elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("rel", LINKED)
def test_nothing_points_outside_the_repository(rel):
    assert "../shared" not in _read(rel)


def test_the_readme_fits_on_a_screen():
    assert len(_read("README.md").encode()) <= 8 * 1024
