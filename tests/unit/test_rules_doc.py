"""docs/rules.md is generated from RULES and must not go stale."""

from __future__ import annotations

from pathlib import Path

from pgha.core.doc import render
from pgha.core.rules import RULES

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def test_rules_doc_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/rules.md is stale; regenerate it with: python -m pgha.core.doc > docs/rules.md"
    )


def test_every_rule_appears_once_in_order() -> None:
    text = render()
    positions = [text.index(f"`{r.id}`") for r in RULES]
    assert positions == sorted(positions)
    assert all(text.count(f"`{r.id}`") == 1 for r in RULES)
    assert all(f"## {r.section}" in text for r in RULES)
