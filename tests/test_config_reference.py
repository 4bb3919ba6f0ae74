"""The committed config reference is the one the pydantic models generate (it cannot drift)."""

from pathlib import Path

from mixlab.config_reference import KINDS, _load, render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"


def test_every_config_kind_is_documented_and_the_page_is_current():
    assert all(_load(ref) is not None for _, ref, _ in KINDS), "a config model moved: update KINDS"
    text = render()
    for title, _, _ in KINDS:
        assert f"\n## {title}\n" in text
    assert "| `lr` |" in text and "| `anchor` |" in text
    assert PAGE.read_text() == text, "docs/config-reference.md is stale: python -m mixlab.config_reference > docs/config-reference.md"
