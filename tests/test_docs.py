"""The README is a guide for the first hour; the reference is a MkDocs site that builds
without a warning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from coral_mfg.config.settings import load_settings
from tests.conftest import ROOT

#: Tables of other software's configs the docs show (Telegraf's, beside the history page).
FOREIGN = re.compile(r"^\[\[(inputs|outputs)\.", flags=re.M)


def _config_examples() -> list[tuple[str, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"^```toml\n(.*?)^```", doc.read_text(), flags=re.M | re.S)
        found += [(f"{doc.name}#{i + 1}", b) for i, b in enumerate(blocks)
                  if not FOREIGN.search(b)]
    return found


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


@pytest.mark.parametrize(("where", "text"), _config_examples(),
                         ids=[w for w, _ in _config_examples()])
def test_every_config_example_in_the_docs_loads(where: str, text: str, tmp_path: Path) -> None:
    """A plant engineer copies these: each must be a config the station takes as it is."""
    config = tmp_path / "station.toml"
    config.write_text(text)
    settings = load_settings({"headless": True}, config)
    assert settings.config == config, where
