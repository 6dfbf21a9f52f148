"""The README is a guide for the first hour; the reference is a MkDocs site that builds
without a warning."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_the_readme_is_short_with_exactly_two_set_up_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    commands = re.findall(r"^(scripts/\S+\.sh)\b", text, flags=re.M)
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), link


def test_the_docs_build_strictly(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f" {page.name}" in nav, page.name
