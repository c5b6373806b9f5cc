"""The README's settings table is the settings object's own documentation."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting_with_its_default() -> None:
    text = README.read_text()
    for variable, default, _meaning in Settings.documentation():
        assert f"| `{variable}` | `{default}` |" in text, variable


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text
